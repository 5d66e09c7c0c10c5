"""The task scheduler, split by stage (see :mod:`shoal.reconcilers.tasks.scheduler`)."""

from shoal.reconcilers.tasks.scheduler import TaskScheduler

__all__ = ["TaskScheduler"]
