"""What the portal shows, read in one transaction per view, as the signed-in principal may see it.

Every view checks the caller's role assignments with the same action names the API checks for the same data
(``Microsoft.Batch/batchAccounts/pools/read`` on the account for its pools, and so on), and says which actions
the caller may take there, so that the page offers only those. The views are plain data: the portal's routes
render them as HTML, or send their changes as server-sent events.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from shoal.core import errors, ids, timefmt
from shoal.domain import authorization, resource_groups, resources
from shoal.domain import lineage as lineage_rules
from shoal.domain.authorization import Caller
from shoal.domain.batch import accounts, autoscaling, counts, pools, retired
from shoal.domain.batch import files as batch_files
from shoal.domain.batch import jobs as job_rules
from shoal.domain.batch import nodes as node_rules
from shoal.domain.batch import tasks as task_rules
from shoal.domain.compute import sources
from shoal.store import models
from shoal.store.db import Database

GROUP_READ = "Microsoft.Resources/subscriptions/resourceGroups/read"
GROUP_RESOURCES_READ = "Microsoft.Resources/subscriptions/resourceGroups/resources/read"
ACCOUNT_READ = "Microsoft.Batch/batchAccounts/read"
POOL_READ, POOL_WRITE, POOL_DELETE = ("Microsoft.Batch/batchAccounts/pools/read",
                                      "Microsoft.Batch/batchAccounts/pools/write",
                                      "Microsoft.Batch/batchAccounts/pools/delete")
JOB_READ, JOB_WRITE = "Microsoft.Batch/batchAccounts/jobs/read", "Microsoft.Batch/batchAccounts/jobs/write"
ACCOUNT_TYPE = "microsoft.batch/batchaccounts"
LINEAGE_TYPES = {t.lower() for t in (sources.VMS, sources.DISKS, sources.SNAPSHOTS, sources.IMAGES,
                                     sources.GALLERY_VERSIONS)}
TASK_STATES = ("active", "preparing", "running", "completed")
TASK_LIST_LIMIT = 1000


@dataclass(frozen=True)
class Named:
    name: str
    detail: str = ""
    link: str = ""


@dataclass(frozen=True)
class Home:
    subscription_id: str
    groups: list[Named]
    accounts: list[Named]


@dataclass(frozen=True)
class GroupView:
    name: str
    location: str
    resources: list[dict[str, Any]]
    # The source document's portal steps: snapshot a disk, make an image from snapshots (when the caller may).
    disks: list[dict[str, str]] = field(default_factory=list)
    snapshots: list[dict[str, str]] = field(default_factory=list)
    can_snapshot: bool = False
    can_image: bool = False


@dataclass(frozen=True)
class PoolSummary:
    id: str
    vm_size: str
    state: str
    allocation_state: str
    current_dedicated: int
    target_dedicated: int
    current_low_priority: int
    target_low_priority: int


@dataclass(frozen=True)
class JobSummary:
    id: str
    pool_id: str
    state: str
    counts: dict[str, int]


@dataclass(frozen=True)
class AccountView:
    name: str
    id: str
    location: str
    pools: list[PoolSummary] | None  # None: the caller may not read pools
    jobs: list[JobSummary] | None


@dataclass(frozen=True)
class PoolView:
    account: str
    summary: PoolSummary
    nodes: list[tuple[str, str]]  # (node id, heatmap state)
    resize_errors: list[dict[str, Any]]
    autoscale: dict[str, Any]
    resize_timeout_s: int
    can_write: bool
    can_delete: bool


@dataclass(frozen=True)
class NodeView:
    account: str
    pool_id: str
    id: str
    state: str
    scheduling_state: str
    ip_address: str
    machine_id: str
    total_tasks_run: int
    total_tasks_succeeded: int
    running_tasks: int
    errors: list[dict[str, Any]]
    start_task_info: dict[str, Any] | None


@dataclass(frozen=True)
class TaskRow:
    id: str
    state: str
    exit_code: int | None
    node_id: str


@dataclass(frozen=True)
class JobView:
    account: str
    id: str
    pool_id: str
    state: str
    counts: dict[str, int]
    tasks: list[TaskRow]
    more_tasks: bool
    state_filter: str
    can_write: bool


@dataclass(frozen=True)
class TaskView:
    account: str
    job_id: str
    id: str
    state: str
    command_line: str
    exit_code: int | None
    result: str | None
    failure: dict[str, Any] | None
    node_id: str
    pool_id: str
    start_time: str
    end_time: str


@dataclass
class PoolLive:
    """What a pool page's stream sends: its nodes' states and the pool's summary."""

    nodes: list[tuple[str, str]]
    summary: PoolSummary
    resize_errors: list[dict[str, Any]] = field(default_factory=list)
    autoscale: dict[str, Any] = field(default_factory=dict)


# --- helpers ---------------------------------------------------------------------------------------------------
def authorized_account(s: Session, caller: Caller, name: str, action: str) -> models.Resource:
    account = accounts.find_by_name(s, name)
    if account is None or account.provisioning_state == "Deleting":
        raise errors.AccountNotFound(f"The Batch account '{name}' does not exist on this Shoal.")
    authorization.check_access(s, caller, action, account.id)
    return account


def _summary(s: Session, pool: models.Pool) -> PoolSummary:
    dedicated, low = pools.node_counts(s, [pool.key])[pool.key]
    return PoolSummary(pool.pool_id, str(pool.spec.get("vmSize") or ""), pool.state, pool.allocation_state,
                       dedicated, pool.target_dedicated, low, pool.target_low_priority)


def _heat_state(node_state: str, pending: str) -> str:
    return "leavingpool" if pending == "remove" else node_state


def _node_states(s: Session, pool_key: str) -> list[tuple[str, str]]:
    rows = s.execute(select(models.Node.node_id, models.Node.state, models.Node.pending).where(
        models.Node.pool_key == pool_key).order_by(models.Node.allocation_time, models.Node.node_id)).all()
    return [(node_id, _heat_state(state, pending)) for node_id, state, pending in rows]


def _counts(s: Session, job: models.Job) -> dict[str, int]:
    return dict(counts.task_counts(s, job)["taskCounts"])


# --- views -----------------------------------------------------------------------------------------------------
def home(db: Database, caller: Caller, subscription_id: str) -> Home:
    """The resource groups and Batch accounts the caller may read."""
    with db.read() as s:
        groups = [Named(g.name, g.location) for g in resource_groups.list_groups(s, subscription_id)
                  if authorization.allowed(s, caller, GROUP_READ, ids.resource_group_id(subscription_id, g.name))]
        found = [Named(r.name, f"{r.location or ''} · {ids.parse(r.id).resource_group}")
                 for r in resources.list_in_subscription(s, subscription_id)
                 if r.type_key == ACCOUNT_TYPE and r.provisioning_state != "Deleting"
                 and authorization.allowed(s, caller, ACCOUNT_READ, r.id)]
        return Home(subscription_id, groups, found)


def group(db: Database, caller: Caller, subscription_id: str, name: str) -> GroupView:
    with db.read() as s:
        gid = ids.resource_group_id(subscription_id, name)
        authorization.check_access(s, caller, GROUP_RESOURCES_READ, gid)
        row = resource_groups.get(s, subscription_id, name)
        readable = [r for r in resources.list_in_group(s, ids.key(gid))
                    if authorization.allowed(s, caller, f"{r.type}/read", r.id)]
        items = [{"name": r.name, "type": r.type, "location": r.location or "", "state": r.provisioning_state,
                  "id": r.id, "account": r.name if r.type_key == ACCOUNT_TYPE else "",
                  "lineage": r.type_key in LINEAGE_TYPES} for r in readable]
        disks = [{"id": r.id, "name": r.name} for r in readable
                 if r.type_key == sources.DISKS.lower() and r.provisioning_state == "Succeeded"]
        snapshots = [{"id": r.id, "name": r.name} for r in readable
                     if r.type_key == sources.SNAPSHOTS.lower() and r.provisioning_state == "Succeeded"]
        return GroupView(row.name, row.location, items, disks, snapshots,
                         can_snapshot=authorization.allowed(s, caller, f"{sources.SNAPSHOTS}/write", gid),
                         can_image=authorization.allowed(s, caller, f"{sources.IMAGES}/write", gid))


def lineage(db: Database, caller: Caller, resource_id: str) -> dict[str, Any]:
    """An image's lineage graph (``domain/lineage.py``) as the caller may see it: resources it cannot read are
    shown without their names."""
    with db.read() as s:
        rid = ids.parse(resource_id)
        authorization.check_access(s, caller, f"{rid.type}/read" if rid.type else GROUP_RESOURCES_READ, str(rid))
        graph = lineage_rules.image_lineage(s, str(rid))
        for node in graph["nodes"]:
            target = node.get("resourceId")
            if target and node.get("state") != "Deleted" and not _may_read(s, caller, str(target)):
                node.update(label="(no access)", resourceId=None, location=None)
        return {"resourceId": str(rid), "name": rid.name or "", **graph}


def _may_read(s: Any, caller: Caller, resource_id: str) -> bool:
    try:
        rid = ids.parse(resource_id)
    except errors.AzureError:
        return False
    return authorization.allowed(s, caller, f"{rid.type}/read", str(rid))


def account(db: Database, caller: Caller, name: str) -> AccountView:
    with db.read() as s:
        row = authorized_account(s, caller, name, ACCOUNT_READ)
        pool_list = job_list = None
        if authorization.allowed(s, caller, POOL_READ, row.id):
            pool_list = [_summary(s, p) for p in pools.list_pools(s, row.key)]
        if authorization.allowed(s, caller, JOB_READ, row.id):
            job_list = [JobSummary(j.job_id, str((j.spec.get("poolInfo") or {}).get("poolId") or j.pool_id), j.state,
                                   _counts(s, j)) for j in job_rules.list_jobs(s, row.key)]
        return AccountView(row.name, row.id, row.location or "", pool_list, job_list)


def pool(db: Database, caller: Caller, account_name: str, pool_id: str) -> PoolView:
    with db.read() as s:
        row = authorized_account(s, caller, account_name, POOL_READ)
        p = pools.get(s, row.key, pool_id)
        return PoolView(row.name, _summary(s, p), _node_states(s, p.key), list(p.resize_errors or []),
                        dict(p.autoscale or {}), p.resize_timeout_s,
                        authorization.allowed(s, caller, POOL_WRITE, row.id),
                        authorization.allowed(s, caller, POOL_DELETE, row.id))


def pool_live(db: Database, caller: Caller, account_name: str, pool_id: str) -> PoolLive:
    """The changing part of a pool page (read again by its stream on every pass, rights included)."""
    with db.read() as s:
        row = authorized_account(s, caller, account_name, POOL_READ)
        p = pools.get(s, row.key, pool_id)
        return PoolLive(_node_states(s, p.key), _summary(s, p), list(p.resize_errors or []), dict(p.autoscale or {}))


def node(db: Database, caller: Caller, account_name: str, pool_id: str, node_id: str) -> NodeView:
    with db.read() as s:
        row = authorized_account(s, caller, account_name, POOL_READ)
        try:
            p = pools.get(s, row.key, pool_id)
            n = node_rules.get(s, p, node_id)
        except (errors.PoolNotFound, errors.NodeNotFound):
            # A node that is gone: its page stays, with the logs it left (see ``batch/retired.py``).
            machine = retired.machine_of_node(s, pools.pool_key(row.key, pool_id), node_id.lower())
            if machine is None:
                raise
            return NodeView(row.name, pool_id, node_id, "gone", "", "", machine, 0, 0, 0, [], None)
        return NodeView(row.name, p.pool_id, n.node_id, _heat_state(n.state, n.pending), n.scheduling_state,
                        n.ip_address, n.machine_id, n.total_tasks_run, n.total_tasks_succeeded, n.running_tasks,
                        list(n.errors or []), n.start_task_info)


def job(db: Database, caller: Caller, account_name: str, job_id: str, state_filter: str = "") -> JobView:
    """A job with its task counts and (up to :data:`TASK_LIST_LIMIT`) tasks, optionally of one state."""
    state_filter = state_filter.lower() if state_filter.lower() in TASK_STATES else ""
    with db.read() as s:
        row = authorized_account(s, caller, account_name, JOB_READ)
        j = job_rules.get(s, row.key, job_id)
        query = select(models.Task).where(models.Task.job_key == j.key)
        if state_filter:
            query = query.where(models.Task.state == state_filter)
        found = list(s.scalars(query.order_by(models.Task.seq).limit(TASK_LIST_LIMIT + 1)))
        tasks = [_task_row(t) for t in found[:TASK_LIST_LIMIT]]
        return JobView(row.name, j.job_id, str((j.spec.get("poolInfo") or {}).get("poolId") or j.pool_id), j.state,
                       _counts(s, j), tasks, len(found) > TASK_LIST_LIMIT, state_filter,
                       authorization.allowed(s, caller, JOB_WRITE, row.id))


def _task_row(t: models.Task) -> TaskRow:
    code = t.execution_info.get("exitCode")
    return TaskRow(t.task_id, t.state, code if isinstance(code, int) else None,
                   str((t.node_info or {}).get("nodeId") or ""))


def job_live(db: Database, caller: Caller, account_name: str, job_id: str) -> tuple[str, dict[str, int],
                                                                                       dict[str, str]]:
    """A job's state, task counts and the states of its first tasks (what its page's stream sends)."""
    with db.read() as s:
        row = authorized_account(s, caller, account_name, JOB_READ)
        j = job_rules.get(s, row.key, job_id)
        states = dict(s.execute(select(models.Task.task_id, models.Task.state).where(
            models.Task.job_key == j.key).order_by(models.Task.seq).limit(TASK_LIST_LIMIT)).tuples().all())
        return j.state, _counts(s, j), states


@dataclass(frozen=True)
class Timeline:
    """A job's task counts over time, from its creation to now (or to its last task's end once it completed):
    ``points`` are (seconds since the job was created, active, running, succeeded, failed)."""

    seconds: float
    points: list[tuple[float, int, int, int, int]]


def _when(value: Any) -> datetime | None:
    try:
        return timefmt.parse_timestamp(str(value)) if value else None
    except timefmt.TimeFormatError:
        return None


def job_timeline(db: Database, caller: Caller, account_name: str, job_id: str, now: datetime,
                 samples: int = 120) -> Timeline:
    """Task counts over time, rebuilt from the tasks' own times (created, started, ended): a task counts as active
    from its creation, running from its (last) start, and succeeded or failed from its end."""
    with db.read() as s:
        row = authorized_account(s, caller, account_name, JOB_READ)
        j = job_rules.get(s, row.key, job_id)
        rows = s.execute(select(models.Task.created_at, models.Task.execution_info, models.Task.result).where(
            models.Task.job_key == j.key)).all()
        begin = j.created_at
    created: list[datetime] = []
    started: list[datetime] = []
    succeeded: list[datetime] = []
    failed: list[datetime] = []
    for made, info, result in rows:
        created.append(made)
        start, end = _when((info or {}).get("startTime")), _when((info or {}).get("endTime"))
        if end is not None:
            started.append(min(start or end, end))
            (succeeded if result == "success" else failed).append(end)
        elif start is not None:
            started.append(start)
    for times in (created, started, succeeded, failed):
        times.sort()
    finished = [*succeeded, *failed]
    stop = max(finished) if finished and len(finished) == len(created) else now
    span = max((stop - begin).total_seconds(), 1.0)
    points = []
    for i in range(samples + 1):
        at = begin + timedelta(seconds=span * i / samples)
        made, run, ok, bad = (bisect.bisect_right(times, at) for times in (created, started, succeeded, failed))
        points.append((round(span * i / samples, 3), made - run, run - ok - bad, ok, bad))
    return Timeline(span, points)


def task(db: Database, caller: Caller, account_name: str, job_id: str, task_id: str) -> TaskView:
    with db.read() as s:
        row = authorized_account(s, caller, account_name, JOB_READ)
        j = job_rules.get(s, row.key, job_id)
        t = task_rules.get(s, j, task_id)
        info = t.execution_info or {}
        code = info.get("exitCode")
        node_info = t.node_info or {}
        return TaskView(row.name, j.job_id, t.task_id, t.state, str(t.spec.get("commandLine") or ""),
                        code if isinstance(code, int) else None, t.result, info.get("failureInfo"),
                        str(node_info.get("nodeId") or ""), str(node_info.get("poolId") or ""),
                        str(info.get("startTime") or ""), str(info.get("endTime") or ""))


def task_files(db: Database, caller: Caller, account_name: str, job_id: str, task_id: str) -> batch_files.Tree | None:
    """Where the task's files are, found as the Batch file API finds them (its node, or the logs a node that is
    gone left); None while it has not run, or once its files are cleaned up."""
    with db.read() as s:
        row = authorized_account(s, caller, account_name, JOB_READ)
        try:
            return batch_files.task_tree(s, row.key, job_id, task_id)
        except (errors.TaskFileNotFound, errors.FileNotFound, errors.TaskFilesCleanedup):
            return None


def node_files(db: Database, caller: Caller, account_name: str, pool_id: str, node_id: str) -> batch_files.Tree:
    """A node's files (those a node that is gone left, too), found as the Batch file API finds them."""
    with db.read() as s:
        row = authorized_account(s, caller, account_name, POOL_READ)
        return batch_files.node_tree(s, row.key, pool_id, node_id)


def autoscale_explain(db: Database, caller: Caller, account_name: str, pool_id: str, formula: str,
                      now: datetime) -> dict[str, Any]:
    """The autoscale editor's Evaluate: the formula against the pool's live metrics, with every variable's value
    and every sample it read; nothing applied (the API's evaluateautoscale needs the same right: pools/read)."""
    with db.read() as s:
        row = authorized_account(s, caller, account_name, POOL_READ)
        return autoscaling.explain(s, pools.get(s, row.key, pool_id), formula, now)
