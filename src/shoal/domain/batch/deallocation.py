"""What happens to the running tasks of a node that leaves its pool or restarts: the deallocation option.

``requeue``/``retaineddata`` put them back in the queue, ``terminate`` ends them as failed, and
``taskcompletion`` leaves them running (the node waits until they end).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from shoal.core.clock import Clock
from shoal.core.timefmt import format_timestamp
from shoal.domain.batch import tasks as tasks_rules
from shoal.store import models

TASK_ENDED = {"category": "usererror", "code": "TaskEnded",
              "message": "The task was terminated because its node left the pool or restarted."}


def release_tasks(s: Session, clock: Clock, node_keys: list[str], option: str) -> list[str]:
    """Take running tasks off nodes that are leaving or restarting, per the deallocation option ``option``.
    Clearing the attempt makes the scheduler ignore the killed process's exit. Returns the nodes that may go
    now (with ``taskcompletion``, only those that run nothing)."""
    ready = []
    now = clock.now()
    for key in node_keys:
        running = list(s.scalars(select(models.Task).where(models.Task.node_key == key,
                                                           models.Task.attempt.is_not(None))))
        if running and option == "taskcompletion":
            continue
        for task in running:
            info = dict(task.execution_info)
            task.attempt, task.pid = None, None
            if option == "terminate":
                info.update({"result": "failure", "endTime": format_timestamp(now), "failureInfo": dict(TASK_ENDED)})
                task.execution_info = info
                tasks_rules.set_state(task, clock, "completed")
            else:
                tasks_rules.requeue(task, clock)
        node = s.get(models.Node, key)
        if node is not None:
            node.running_tasks = node.running_slots = 0
        ready.append(key)
    return ready
