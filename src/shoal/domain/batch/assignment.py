"""Task assignment rules: which free node an active task goes to, and what running it there needs.

The scheduler loads a pass's rows (active pools, their schedulable nodes with room, active jobs with waiting
tasks, a window of those tasks), asks :meth:`FreeNodes.pick` for each task in priority order, records the
choice with :func:`assign`, and
turns it into a :class:`Launch`: plain data the launch stage hands to the host agent outside any transaction.
Everything read from a task's or job's spec is read by :func:`plan` first, so a record that cannot be read
fails alone (``BAD_RECORD``) before anything changes.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session

from shoal.core import timefmt
from shoal.core.clock import Clock
from shoal.domain.batch import exits, job_manager, jobtasks, multi_instance, tasks
from shoal.domain.batch import nodes as node_rules
from shoal.domain.batch import pools as pool_rules
from shoal.store import models

SCHEDULABLE_NODE_STATES = ("idle", "running")
NOBODY = node_rules.NOBODY

# The job preparation runs of a pass, by (job key, node key); absent: not run on that node yet.
Prepared = Mapping[tuple[str, str], dict[str, Any] | None]

# What reading a malformed stored record raises (a spec written by hand, or by an older version).
BAD_RECORD = (TypeError, ValueError, AttributeError, KeyError, OverflowError)
FIRST_LOAD_SPARE = 16  # nodes loaded beyond twice what a pass could take (see free_nodes)


@dataclass
class SpecialLaunch:
    """How to run a job preparation or release task on a node (plain data, usable outside the session)."""

    spec: dict[str, Any]
    job_key: str
    node_key: str
    pool_id: str
    node_id: str
    node_url: str
    machine: str
    task_dir: str
    root: str
    root_url: str
    env: dict[str, str]

    @property
    def row_key(self) -> str:
        """The key of the job's preparation/release row for this node."""
        return f"{self.job_key}|{self.node_key}"


@dataclass
class Launch:
    """One attempt of a task to start on a node."""

    key: str
    attempt: str
    machine: str
    task_dir: str
    env: dict[str, str]
    admin: bool
    timeout: float | None
    command: str
    resources: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    # The job's preparation task must run on the node first: the task stays preparing until it has.
    prepare: SpecialLaunch | None = None
    # The task's application packages to install first (``applications.Install``), and the references that
    # cannot be satisfied (the attempt fails with ``ApplicationPackageError``).
    packages: list[Any] = field(default_factory=list)
    bad_packages: list[tuple[str, str]] = field(default_factory=list)
    # A multi-instance task: its instances on their nodes (the primary first, on this launch's machine).
    multi: MultiLaunch | None = None

    @property
    def slow(self) -> bool:
        """Files to move or a preparation to wait for: the whole attempt runs on a waiter thread."""
        return bool(self.resources or self.outputs or self.prepare or self.packages or self.bad_packages or self.multi)


@dataclass
class Instance:
    """One instance of a multi-instance task: 0 is the primary, 1..n-1 the subtasks."""

    id: int
    node_key: str
    machine: str
    env: dict[str, str]


@dataclass
class MultiLaunch:
    """What running a multi-instance task needs besides its primary's :class:`Launch`."""

    coordination: str
    common_resources: list[dict[str, Any]]
    instances: list[Instance]


@dataclass
class Plan:
    """What running a task needs from its and its job's specs."""

    env: dict[str, str]
    admin: bool
    timeout: float | None
    command: str
    resources: list[dict[str, Any]]
    outputs: list[dict[str, Any]]


# --- reading specs ---------------------------------------------------------------------------------------------
def is_admin(spec: dict[str, Any]) -> bool:
    return str(((spec.get("userIdentity") or {}).get("autoUser") or {}).get("elevationLevel", "")).lower() == "admin"


def task_user(admin: bool) -> str | None:
    """Who a task's processes (and its file transfers) run as in the node: its root, or the unprivileged user."""
    return None if admin else str(NOBODY)


def constraints(spec: dict[str, Any]) -> dict[str, Any]:
    found = spec.get("constraints")
    return found if isinstance(found, dict) else {}


def settings(items: Any, where: str) -> dict[str, str]:
    """``environmentSettings``-like lists of {"name", "value"} (a ValueError names what is wrong)."""
    if items is None:
        return {}
    if not isinstance(items, list) or not all(isinstance(i, dict) and isinstance(i.get("name"), str)
                                              for i in items):
        raise ValueError(f"{where} must be a list of {{name, value}} objects")
    return {i["name"]: str(i.get("value", "")) for i in items}


def plan(task: models.Task, job: models.Job) -> Plan:
    """What running the task needs from its and its job's specs, read (and checked) before anything changes."""
    env = settings(job.spec.get("commonEnvironmentSettings"), "the job's commonEnvironmentSettings")
    env.update(settings(task.spec.get("environmentSettings"), "environmentSettings"))
    identity = task.spec.get("userIdentity") or {}
    if not isinstance(identity, dict) or not isinstance(identity.get("autoUser") or {}, dict):
        raise ValueError("userIdentity must be an object")
    admin = is_admin(task.spec)
    limits = task.spec.get("constraints") or {}
    if not isinstance(limits, dict):
        raise ValueError("constraints must be an object")
    limit_text = limits.get("maxWallClockTime")
    timeout = timefmt.parse_duration(str(limit_text)).total_seconds() if limit_text else None
    resources, outputs = task.spec.get("resourceFiles") or [], task.spec.get("outputFiles") or []
    if not isinstance(resources, list) or not isinstance(outputs, list):
        raise ValueError("resourceFiles and outputFiles must be lists")
    return Plan(env=env, admin=admin, timeout=timeout, command=str(task.spec.get("commandLine", "")),
                resources=resources, outputs=outputs)


def slots_per_node(pool: models.Pool) -> int:
    return int(pool.spec.get("taskSlotsPerNode", 1))


# --- what a pass loads ----------------------------------------------------------------------------------------
def _schedulable() -> tuple[Any, ...]:
    return (models.Node.state.in_(SCHEDULABLE_NODE_STATES), models.Node.scheduling_state == "enabled",
            models.Node.pending == "")


def _has_waiting_task() -> Any:
    """The job (of the enclosing query) has a task waiting for a slot: active, without an attempt."""
    return exists().where(models.Task.job_key == models.Job.key, models.Task.state == "active",
                          models.Task.attempt.is_(None))


def pools_with_room(s: Session) -> dict[str, models.Pool]:
    """The active pools where at least one schedulable node has a free slot (one aggregate over the nodes)."""
    active = {p.key: p for p in s.scalars(select(models.Pool).where(models.Pool.state == "active"))}
    if not active:
        return {}
    least = s.execute(select(models.Node.pool_key, func.min(models.Node.running_slots)).where(
        *_schedulable(), models.Node.pool_key.in_(sorted(active))).group_by(models.Node.pool_key)).all()
    return {key: active[key] for key, used in least if used < slots_per_node(active[key])}


def waiting_jobs(s: Session, pools_: dict[str, models.Pool]) -> dict[str, models.Job]:
    """The active jobs of these pools that have tasks waiting for a slot. Only jobs whose pool exists and has
    room: tasks waiting for a pool that is not there (Azure accepts such jobs) must not crowd out tasks that can
    run."""
    if not pools_:
        return {}
    rows = s.scalars(select(models.Job).where(
        models.Job.state == "active", models.Job.pool_id.in_(sorted({p.pool_id.lower() for p in pools_.values()})),
        _has_waiting_task()))
    return {j.key: j for j in rows if pool_rules.pool_key(j.account_key, j.pool_id) in pools_}


def _assignable() -> Any:
    job, pool, node = models.Job, models.Pool, models.Node
    room = exists().where(pool.key == job.account_key + "/" + job.pool_id, pool.state == "active",
                          node.pool_key == pool.key, *_schedulable(),
                          node.running_slots < func.coalesce(pool.spec["taskSlotsPerNode"].as_integer(), 1))
    return select(exists().where(job.state == "active", _has_waiting_task(), room))


_ASSIGNABLE = _assignable()  # built once: the statement has no parameter, and building it costs more than running it


def can_assign(s: Session) -> bool:
    """Whether an assignment pass could place anything: a task waits, in an active job whose pool is active and
    has a schedulable node with a free slot. One statement that loads no row: the loop asks this at every nudge
    (each task submission is one), so an idle loop, or one whose jobs wait for pools that are full or absent,
    costs next to nothing."""
    return bool(s.scalar(_ASSIGNABLE))


def free_slots(s: Session, pools_: Mapping[str, models.Pool]) -> int:
    """The free slots on the schedulable nodes of these pools (an aggregate: no node is loaded)."""
    if not pools_:
        return 0
    rows = s.execute(select(models.Node.pool_key, models.Node.running_slots, func.count()).where(
        *_schedulable(), models.Node.pool_key.in_(sorted(pools_))
    ).group_by(models.Node.pool_key, models.Node.running_slots)).all()
    return sum(max(0, slots_per_node(pools_[key]) - used) * count for key, used, count in rows)


def nodes_wanted(candidates: Iterable[models.Task], jobs: Mapping[str, models.Job]) -> dict[str, int]:
    """How many nodes the candidates of a pass could take at most, by pool (a multi-instance task takes one
    node per instance)."""
    wanted: dict[str, int] = {}
    for task in candidates:
        job = jobs[task.job_key]
        key = pool_rules.pool_key(job.account_key, job.pool_id)
        try:
            count = multi_instance.instances(task.spec) if multi_instance.is_multi(task) else 1
        except BAD_RECORD:
            count = 1  # the pass rejects the task on its own
        wanted[key] = wanted.get(key, 0) + max(1, count)
    return wanted


def free_nodes(s: Session, pools_: Mapping[str, models.Pool], wanted: Mapping[str, int]) -> dict[str, FreeNodes]:
    """The schedulable nodes with room of these pools, by pool. Of ``wanted`` nodes (by pool), a pool's first
    nodes are loaded in the order its fill type chooses them, twice as many and a few more, and the rest only when
    a choice needs them (see :class:`FreeNodes`): a pass costs what it assigns, not what the pool holds."""
    found: dict[str, FreeNodes] = {}
    for key, pool in sorted(pools_.items()):
        query = select(models.Node).where(*_schedulable(), models.Node.pool_key == key,
                                          models.Node.running_slots < slots_per_node(pool))
        order = (models.Node.running_slots.desc(), models.Node.key.desc()) if packs(pool) else \
            (models.Node.running_slots, models.Node.key)
        limit = 2 * wanted.get(key, 0) + FIRST_LOAD_SPARE
        first = list(s.scalars(query.order_by(*order).limit(limit)))
        rest = (lambda q=query: s.scalars(q)) if len(first) == limit else None
        found[key] = FreeNodes(pool, first, rest)
    return found


def parallel_room(s: Session, jobs: Mapping[str, models.Job]) -> dict[str, int]:
    """``maxParallelTasks``: how many more tasks each job with a limit may start now (its tasks with an attempt,
    preparing or running, count; a multi-instance task counts once). Jobs without a limit are not listed."""
    limits = {key: int(job.spec["maxParallelTasks"]) for key, job in jobs.items()
              if isinstance(job.spec.get("maxParallelTasks"), int) and job.spec["maxParallelTasks"] > 0}
    if not limits:
        return {}
    running = dict(s.execute(select(models.Task.job_key, func.count()).where(
        models.Task.job_key.in_(sorted(limits)), models.Task.attempt.is_not(None)).group_by(models.Task.job_key)).all())
    return {key: max(0, limit - int(running.get(key, 0))) for key, limit in limits.items()}


def by_creation(pool: models.Pool) -> bool:
    """``taskSchedulingPolicy.jobDefaultOrder: creationtime``: of jobs of equal priority, the older job's tasks
    go first (``none``, the default: the tasks of equal-priority jobs go in the order they were added)."""
    order = (pool.spec.get("taskSchedulingPolicy") or {}).get("jobDefaultOrder")
    return str(order or "none").lower() == "creationtime"


def candidates(s: Session, jobs: dict[str, models.Job], free_slots: int, limit: int,
               oldest_first: Iterable[str] = ()) -> list[models.Task]:
    """The waiting tasks of these jobs a pass considers, by job priority, then (for the jobs of
    ``oldest_first``, whose pools order jobs by creation time) the job's age, then the task's: about as many as
    there are free slots (up to ``limit`` when dependencies may hold some back)."""
    older = set(oldest_first)
    found: list[models.Task] = []
    for job in sorted(jobs.values(), key=lambda j: -j.priority):
        window = limit if job.spec.get("usesTaskDependencies") else min(limit, 2 * free_slots)
        found += list(s.scalars(select(models.Task).where(
            models.Task.job_key == job.key, models.Task.state == "active", models.Task.attempt.is_(None)
        ).order_by(models.Task.seq).limit(window)))
    found.sort(key=lambda t: (-jobs[t.job_key].priority,
                              jobs[t.job_key].created_at.timestamp() if t.job_key in older else 0.0, t.seq))
    return found


# --- dependencies and preparation ------------------------------------------------------------------------------
def dependency_index(s: Session, candidates: Iterable[models.Task]) -> dict[str, set[str]]:
    """For jobs with dependent tasks: ids of completed tasks whose exit options satisfy dependents, per job."""
    wanted = {t.job_key for t in candidates if t.spec.get("dependsOn")}
    out: dict[str, set[str]] = {}
    for job_key in wanted:
        rows = s.execute(select(models.Task.task_id, models.Task.spec, models.Task.execution_info).where(
            models.Task.job_key == job_key, models.Task.state == "completed")).all()
        out[job_key] = {tid.lower() for tid, spec, info in rows if exits.satisfies_dependents(spec, info or {})}
    return out


def dependencies_met(task: models.Task, done_ok: dict[str, set[str]]) -> bool:
    ids, ranges = tasks.dependency_ids(task.spec)
    if not ids and not ranges:
        return True
    done = done_ok.get(task.job_key, set())
    if any(i.lower() not in done for i in ids):
        return False
    return all(str(n) in done for start, end in ranges for n in range(start, end + 1))


def preparation_index(s: Session, prep_jobs: list[models.Job]) -> dict[tuple[str, str], dict[str, Any] | None]:
    """Preparation task runs of these jobs, by (job, node); absent: not run on that node yet."""
    if not prep_jobs:
        return {}
    rows = s.scalars(select(models.JobNodeTask).where(
        models.JobNodeTask.job_key.in_([j.key for j in prep_jobs])))
    return {(r.job_key, r.node_key): r.preparation for r in rows}


# --- the decision ----------------------------------------------------------------------------------------------
def packs(pool: models.Pool) -> bool:
    return str((pool.spec.get("taskSchedulingPolicy") or {}).get("nodeFillType", "spread")) == "pack"


class FreeNodes:
    """A pool's schedulable nodes with room, by the slots they use (buckets of equal use, each sorted by key), so
    that choosing a node for each task of a pass takes time that does not grow with the pool.

    ``rest``: the nodes were loaded only in part, the first ones in the order of the fill type (``spread``: least
    used, then lowest key; ``pack``: most used, then highest key), and ``rest`` loads them all. Every node not
    loaded comes after the last one loaded in that order, and a pass only adds use to the loaded ones, so a choice
    among them is the choice among all unless none fits (a node reserved by an affinity hint, a failed job
    preparation, a task of several slots) or, under ``spread``, the chosen node is now used more than the boundary
    of the first load: then the rest is loaded and the choice made again."""

    def __init__(self, pool: models.Pool, nodes: Iterable[models.Node],
                 rest: Callable[[], Iterable[models.Node]] | None = None) -> None:
        self.per_node = slots_per_node(pool)
        self.pack = packs(pool)
        self._buckets: dict[int, list[str]] = {}
        self._nodes: dict[str, models.Node] = {}
        self._by_affinity: dict[str, models.Node] = {}
        first = list(nodes)
        self._add(first)
        self._rest = rest
        # The last node of the first load in the spread order (every node not loaded comes after it).
        self._boundary = max(((n.running_slots, n.key) for n in first), default=None)

    def _add(self, nodes: Iterable[models.Node]) -> None:
        grown: set[int] = set()
        for node in nodes:
            if node.key in self._nodes:
                continue  # loaded before (and maybe given tasks since): kept as it is
            self._nodes[node.key] = node
            self._by_affinity[f"tvm:{node.node_id}".lower()] = node
            if node.running_slots < self.per_node:
                self._buckets.setdefault(node.running_slots, []).append(node.key)
                grown.add(node.running_slots)
        for used in grown:
            self._buckets[used].sort()

    def _load_rest(self) -> bool:
        """Load the nodes not loaded yet; whether there were any to load."""
        if self._rest is None:
            return False
        rest, self._rest = self._rest, None
        self._add(rest())
        return True

    def _settled(self, node: models.Node | None) -> bool:
        """Whether a choice among the loaded nodes is the choice among all (see the class)."""
        if self._rest is None:
            return True
        if node is None:
            return False
        return self.pack or self._boundary is None or (node.running_slots, node.key) <= self._boundary

    def free_slots(self) -> int:
        return sum((self.per_node - used) * len(keys) for used, keys in self._buckets.items())

    def pick(self, job: models.Job, task: models.Task, prepared: Prepared) -> models.Node | None:
        """The node the task goes to now, or None when none has room.

        ``spread`` (the default) picks the least busy node, ``pack`` the busiest that still has room; ties go
        to the lowest node key (spread) or the highest (pack). A node whose job preparation failed (and the job
        waits for success) is not used. affinityInfo is a hint: the named node when it has room, any other
        node otherwise."""
        if job_manager.runs_exclusive(task) and task.slots != self.per_node:
            task.slots = self.per_node  # a Job Manager task that runs exclusive holds its whole node
        low_priority_ok = job_manager.allows_low_priority(task)

        def fits(node: models.Node) -> bool:
            return node.running_slots + task.slots <= self.per_node and \
                (node.is_dedicated or low_priority_ok) and \
                jobtasks.usable(job.spec, prepared.get((job.key, node.key))) is not False

        affinity = str((task.spec.get("affinityInfo") or {}).get("affinityId") or "").lower()
        if affinity and affinity not in self._by_affinity:
            self._load_rest()  # the named node may be one not loaded yet
        hinted = self._by_affinity.get(affinity) if affinity else None
        if hinted is not None and fits(hinted):
            return hinted
        chosen = self._choose(task, fits)
        if not self._settled(chosen) and self._load_rest():
            chosen = self._choose(task, fits)
        return chosen

    def _choose(self, task: models.Task, fits: Callable[[models.Node], bool]) -> models.Node | None:
        for used in sorted(self._buckets, reverse=self.pack):
            if used + task.slots > self.per_node:
                if self.pack:
                    continue
                break
            for key in (reversed(self._buckets[used]) if self.pack else self._buckets[used]):
                node = self._nodes[key]
                if fits(node):
                    return node
        return None

    def pick_many(self, job: models.Job, task: models.Task, prepared: Prepared, count: int) -> \
            list[models.Node] | None:
        """``count`` nodes that run nothing (a multi-instance task takes whole nodes), or None when fewer are
        free now: the task then waits for them."""
        if self.pack:
            self._load_rest()  # whole nodes are the least used, which a pack pool's first load holds last
        found = self._choose_many(job, prepared, count)
        if found is None and self._load_rest():
            found = self._choose_many(job, prepared, count)
        return found

    def _choose_many(self, job: models.Job, prepared: Prepared, count: int) -> list[models.Node] | None:
        chosen: list[models.Node] = []
        for key in self._buckets.get(0, []):
            node = self._nodes[key]
            if jobtasks.usable(job.spec, prepared.get((job.key, node.key))) is not False:
                chosen.append(node)
                if len(chosen) == count:
                    return chosen
        return None

    def take(self, node: models.Node, used_before: int) -> None:
        """The node's use changed from ``used_before`` (a task was assigned to it): move it to its bucket."""
        keys = self._buckets.get(used_before)
        if keys is not None:
            index = bisect.bisect_left(keys, node.key)
            if index < len(keys) and keys[index] == node.key:
                del keys[index]
            if not keys:
                del self._buckets[used_before]
        if node.running_slots < self.per_node:
            bisect.insort(self._buckets.setdefault(node.running_slots, []), node.key)


def assign(task: models.Task, node: models.Node, attempt: str, clock: Clock) -> None:
    """Give the task an attempt on the node: it is preparing, and holds its slots there."""
    task.attempt, task.node_key = attempt, node.key
    tasks.set_state(task, clock, "preparing")
    node.running_slots += task.slots
    node.running_tasks += 1
    if node.state == "idle":
        node_rules.set_state(node, clock, "running")


# --- what a node sees ------------------------------------------------------------------------------------------
def task_root(job_id: str, task_id: str) -> str:
    """A task's directory below the node root."""
    return f"workitems/{job_id}/job-1/{task_id}"


def task_dir(job_id: str, task_id: str) -> str:
    return f"{node_rules.NODE_ROOT}/{task_root(job_id, task_id)}"


def node_url(account_url: str, pool: models.Pool, node: models.Node) -> str:
    return f"{account_url}/pools/{pool.pool_id}/nodes/{node.node_id}"


def node_info(account_url: str, pool: models.Pool, node: models.Node, job: models.Job,
              task: models.Task) -> dict[str, Any]:
    """The task's ``nodeInfo`` for an attempt on this node."""
    root = task_root(job.job_id, task.task_id)
    url = node_url(account_url, pool, node)
    return {"affinityId": f"TVM:{node.node_id}", "poolId": pool.pool_id, "nodeId": node.node_id, "nodeUrl": url,
            "taskRootDirectory": root, "taskRootDirectoryUrl": f"{url}/files/{root}"}


def _preparation_dirs(job: models.Job) -> dict[str, str]:
    prep = jobtasks.preparation(job.spec)
    if prep is None:
        return {}
    prep_dir = task_dir(job.job_id, jobtasks.task_id(prep, jobtasks.PREPARATION_ID))
    return {"AZ_BATCH_JOB_PREP_DIR": prep_dir, "AZ_BATCH_JOB_PREP_WORKING_DIR": f"{prep_dir}/wd"}


def launch(task: models.Task, job: models.Job, pool: models.Pool, node: models.Node, attempt: str, plan_: Plan,
           account_url: str, node_account_url: str, prepared: Prepared) -> Launch:
    """What starting this attempt needs (``node_account_url``: the account's URL as the nodes reach it)."""
    directory = task_dir(job.job_id, task.task_id)
    env = node_rules.base_environment(account_url.rsplit("/", 1)[-1], node_account_url, pool, node)
    env.update({"AZ_BATCH_JOB_ID": job.job_id, "AZ_BATCH_TASK_ID": task.task_id,
                "AZ_BATCH_TASK_DIR": directory, "AZ_BATCH_TASK_WORKING_DIR": f"{directory}/wd",
                "AZ_BATCH_TASK_USER_IDENTITY": "PoolNonAdmin"})
    env.update(_preparation_dirs(job))
    env.update(plan_.env)
    if plan_.admin:
        env["AZ_BATCH_TASK_USER_IDENTITY"] = "PoolAdmin"
    prep = jobtasks.preparation(job.spec)
    prepare = special_launch(job, prep, jobtasks.PREPARATION_ID, pool, node, account_url, node_account_url) \
        if prep is not None and jobtasks.usable(job.spec, prepared.get((job.key, node.key))) is None else None
    return Launch(key=task.key, attempt=attempt, machine=node.machine_id, task_dir=directory, env=env,
                  admin=plan_.admin, timeout=plan_.timeout, command=plan_.command, resources=plan_.resources,
                  outputs=plan_.outputs, prepare=prepare)


def multi_launch(task: models.Task, chosen: list[models.Node], primary: Launch) -> MultiLaunch:
    """The instances of a multi-instance task on the nodes chosen for it (the primary's first); each sees the
    same task directory, its job's and task's variables and the multi-instance ones."""
    ips = [n.ip_address for n in chosen]
    instances = []
    for i, node in enumerate(chosen):
        env = dict(primary.env)  # the node's own variables differ from the primary's, the rest is the same
        env.update({"AZ_BATCH_NODE_ID": node.node_id,
                    "AZ_BATCH_NODE_IS_DEDICATED": "true" if node.is_dedicated else "false"})
        env.update(multi_instance.environment(primary.task_dir, ips, i == 0))
        instances.append(Instance(id=i, node_key=node.key, machine=node.machine_id, env=env))
    return MultiLaunch(coordination=multi_instance.coordination(task.spec),
                       common_resources=multi_instance.common_resources(task.spec), instances=instances)


def special_launch(job: models.Job, spec: dict[str, Any], default_id: str, pool: models.Pool, node: models.Node,
                   account_url: str, node_account_url: str) -> SpecialLaunch:
    """How to run a job preparation or release task on a node."""
    tid = jobtasks.task_id(spec, default_id)
    root = task_root(job.job_id, tid)
    directory = f"{node_rules.NODE_ROOT}/{root}"
    url = node_url(account_url, pool, node)
    env = node_rules.base_environment(account_url.rsplit("/", 1)[-1], node_account_url, pool, node)
    env.update({"AZ_BATCH_JOB_ID": job.job_id, "AZ_BATCH_TASK_ID": tid, "AZ_BATCH_TASK_DIR": directory,
                "AZ_BATCH_TASK_WORKING_DIR": f"{directory}/wd", "AZ_BATCH_TASK_USER_IDENTITY": "PoolNonAdmin"})
    if default_id == jobtasks.RELEASE_ID:
        env.update(_preparation_dirs(job))
    for item in [*(job.spec.get("commonEnvironmentSettings") or []), *(spec.get("environmentSettings") or [])]:
        env[str(item.get("name"))] = str(item.get("value", ""))
    return SpecialLaunch(spec=spec, job_key=job.key, node_key=node.key, pool_id=pool.pool_id, node_id=node.node_id,
                         node_url=url, machine=node.machine_id, task_dir=directory, root=root,
                         root_url=f"{url}/files/{root}", env=env)


def recovered_env(task: models.Task, job: models.Job | None) -> dict[str, str]:
    """Enough of an attempt's environment to expand its output file patterns after a restart."""
    if not task.spec.get("outputFiles") or not task.node_info:
        return {}
    directory = f"{node_rules.NODE_ROOT}/{task.node_info['taskRootDirectory']}"
    env = {"AZ_BATCH_TASK_DIR": directory, "AZ_BATCH_TASK_WORKING_DIR": f"{directory}/wd",
           "AZ_BATCH_TASK_ID": task.task_id, "AZ_BATCH_JOB_ID": job.job_id if job is not None else ""}
    for item in [*((job.spec.get("commonEnvironmentSettings") or []) if job is not None else []),
                 *(task.spec.get("environmentSettings") or [])]:
        env[str(item.get("name"))] = str(item.get("value", ""))
    return env
