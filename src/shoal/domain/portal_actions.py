"""The portal's actions, each through the same domain rules as the Batch API's route for it, in one unit of work
that first checks the caller's rights with the API's action name. Errors are the API's errors.

Pool changes (resize, delete) are :mod:`shoal.domain.batch.pool_changes` use cases; a task is added with
:func:`shoal.domain.batch.tasks.add` and checked against the same wire model as the API's body; a job is
terminated with :func:`shoal.domain.batch.jobs.terminate`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from shoal.core.clock import Clock
from shoal.domain import authorization
from shoal.domain.authorization import Caller
from shoal.domain.batch import jobs as job_rules
from shoal.domain.batch import pool_changes
from shoal.domain.batch import tasks as task_rules
from shoal.domain.compute.kinds import ComputeContext
from shoal.domain.portal_views import JOB_WRITE, POOL_DELETE, POOL_WRITE, authorized_account
from shoal.store.db import Database


def _no_condition(etag: str, modified: datetime) -> None:
    """The portal's forms carry no If-Match: the change applies to the pool as it is."""


def _pool_change(db: Database, ctx: ComputeContext, caller: Caller, account_name: str, pool_id: str,
                 change: pool_changes.Change, body: dict[str, Any], action: str) -> None:
    with db.read() as s:
        account = authorized_account(s, caller, account_name, action)
    pool_changes.apply(db, ctx, account.key, pool_id, change, body,
                       authorize=lambda s: authorization.check_access(s, caller, action, account.id),
                       precondition=_no_condition)


def resize_pool(db: Database, ctx: ComputeContext, caller: Caller, account_name: str, pool_id: str,
                body: dict[str, Any]) -> None:
    """``body`` as the API's resize body (``targetDedicatedNodes``, ``targetLowPriorityNodes``, ...)."""
    _pool_change(db, ctx, caller, account_name, pool_id, pool_changes.resize, body, POOL_WRITE)


def delete_pool(db: Database, ctx: ComputeContext, caller: Caller, account_name: str, pool_id: str) -> None:
    _pool_change(db, ctx, caller, account_name, pool_id, pool_changes.delete, {}, POOL_DELETE)


def add_task(db: Database, clock: Clock, caller: Caller, account_name: str, job_id: str,
             body: dict[str, Any]) -> str:
    """Add a task (``body``: the API's task body, already checked against its wire model); its id."""
    with db.write() as s:
        row = authorized_account(s, caller, account_name, JOB_WRITE)
        task = task_rules.add(s, clock, job_rules.get(s, row.key, job_id), body)
        return task.task_id


def terminate_job(db: Database, clock: Clock, caller: Caller, account_name: str, job_id: str,
                  reason: str | None = None) -> None:
    with db.write() as s:
        row = authorized_account(s, caller, account_name, JOB_WRITE)
        job = job_rules.get(s, row.key, job_id)
        job_rules.terminate(job, clock, reason)
        job_rules.touch(job, clock)


def enable_autoscale(db: Database, ctx: ComputeContext, caller: Caller, account_name: str, pool_id: str,
                     body: dict[str, Any]) -> None:
    """``body`` as the API's enableautoscale body (``autoScaleFormula``, ``autoScaleEvaluationInterval``)."""
    _pool_change(db, ctx, caller, account_name, pool_id, pool_changes.enable_autoscale, body, POOL_WRITE)


def disable_autoscale(db: Database, ctx: ComputeContext, caller: Caller, account_name: str, pool_id: str) -> None:
    _pool_change(db, ctx, caller, account_name, pool_id, pool_changes.disable_autoscale, {}, POOL_WRITE)
