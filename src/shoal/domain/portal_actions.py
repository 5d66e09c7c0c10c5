"""The portal's actions, each through the same domain rules as the API's route for it, in one unit of work
that first checks the caller's rights with the API's action name. Errors are the API's errors.

Pool changes (resize, delete) are :mod:`shoal.domain.batch.pool_changes` use cases; a task is added with
:func:`shoal.domain.batch.tasks.add` and checked against the same wire model as the API's body; a job is
terminated with :func:`shoal.domain.batch.jobs.terminate`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from shoal.core import ids
from shoal.core.clock import Clock
from shoal.domain import authorization, identity, resources
from shoal.domain.authorization import Caller
from shoal.domain.batch import jobs as job_rules
from shoal.domain.batch import pool_changes
from shoal.domain.batch import tasks as task_rules
from shoal.domain.compute import service, sources
from shoal.domain.compute.kinds import ArmBody, ComputeContext
from shoal.domain.compute.registry import KINDS
from shoal.domain.portal_views import JOB_WRITE, POOL_DELETE, POOL_WRITE, authorized_account
from shoal.schemas import arm_bodies, arm_compute
from shoal.store import models
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


# --- the source document's portal steps: a snapshot of a VM's disk, an image from snapshots -------------------
def snapshot_disk(db: Database, ctx: ComputeContext, caller: Caller, subscription_id: str, group: str, name: str,
                  disk_id: str) -> str:
    """A snapshot (``name``, in ``group``) of a managed disk, as ``az snapshot create --source <disk>`` makes it;
    the snapshot's id. Checked against the API's wire model and put through the API's use case."""
    with db.read() as s:
        disk = _readable(s, caller, disk_id, sources.DISKS)
        location = disk.location
    body = {"location": location, "sku": {"name": "Standard_LRS"},
            "properties": {"creationData": {"createOption": "Copy", "sourceResourceId": disk.id}}}
    return _put(db, ctx, caller, ids.parse(
        f"{ids.resource_group_id(subscription_id, group)}/providers/{sources.SNAPSHOTS}/{name}"),
        "snapshots", arm_compute.Snapshot, body)


def image_from_snapshots(db: Database, ctx: ComputeContext, caller: Caller, subscription_id: str, group: str,
                         name: str, os_snapshot_id: str, data_snapshot_ids: list[str]) -> str:
    """A generalized Linux managed image from an OS-disk snapshot and data-disk snapshots (LUN 0, 1, ... in the
    order given), as ``az image create --source <os snapshot> --data-disk-sources ...`` makes it; its id."""
    with db.read() as s:
        os_snapshot = _readable(s, caller, os_snapshot_id, sources.SNAPSHOTS)
        data = [_readable(s, caller, d, sources.SNAPSHOTS).id for d in data_snapshot_ids]
        location = os_snapshot.location
    body = {"location": location, "properties": {"hyperVGeneration": "V1", "storageProfile": {
        "osDisk": {"osType": "Linux", "osState": "Generalized", "snapshot": {"id": os_snapshot.id}},
        "dataDisks": [{"lun": lun, "snapshot": {"id": snap}} for lun, snap in enumerate(data)]}}}
    return _put(db, ctx, caller, ids.parse(
        f"{ids.resource_group_id(subscription_id, group)}/providers/{sources.IMAGES}/{name}"),
        "images", arm_compute.Image, body)


def _readable(s: Any, caller: Caller, resource_id: str, type_name: str) -> models.Resource:
    rid = ids.parse(resource_id, what="source")
    authorization.check_access(s, caller, f"{type_name}/read", str(rid))
    return resources.get(s, rid, expected_type=type_name)


def _put(db: Database, ctx: ComputeContext, caller: Caller, rid: ids.ResourceId, collection: str,
         model: type[arm_bodies.Wire], body: dict[str, Any]) -> str:
    kind = KINDS[collection]
    checked = ArmBody.model_validate(arm_bodies.normalised(body, model))
    with db.write() as s:
        identity.require_subscription(s, rid.subscription)
        authorization.check_access(s, caller, f"{kind.type}/write", str(rid))
        return service.put(ctx, s, kind, rid, checked).row.id
