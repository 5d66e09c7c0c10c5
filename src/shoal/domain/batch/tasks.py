"""Task rules: creation (one or a collection), states, dependencies, retries, rendering."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, func, insert, select
from sqlalchemy.orm import Session

from shoal.core import errors, etags, timefmt
from shoal.core.clock import Clock
from shoal.domain.batch import exits, jobtasks, multi_instance, taskfiles
from shoal.domain.batch import nodes as node_rules
from shoal.domain.batch.pools import bad_value, missing
from shoal.store import models

_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
TASKS = cast(Table, models.Task.__table__)  # bulk writes go to the table, without ORM objects
MAX_COLLECTION = 100
MAX_COLLECTION_BYTES = 1024 * 1024
SPEC_FIELDS = ("displayName", "commandLine", "resourceFiles", "outputFiles", "environmentSettings", "affinityInfo",
               "constraints", "requiredSlots", "userIdentity", "dependsOn", "exitConditions", "containerSettings",
               "multiInstanceSettings", "applicationPackageReferences", "authenticationTokenSettings")
_TRANSITIONS = {
    "active": {"preparing", "running", "completed"},
    "preparing": {"running", "active", "completed"},
    "running": {"completed", "active"},
    "completed": {"active"},
}


def task_key(job_key: str, task_id: str) -> str:
    return f"{job_key}/{task_id.lower()}"


def set_state(task: models.Task, clock: Clock, state: str) -> None:
    """The one place a task's state changes (active -> preparing -> running -> completed, and back on retry)."""
    if state == task.state:
        return
    if state not in _TRANSITIONS[task.state]:
        raise errors.TaskStateConflict(f"The task is {task.state}; it cannot become {state}.")
    now = clock.now()
    task.previous_state, task.previous_state_transition_time = task.state, task.state_transition_time
    task.state, task.state_transition_time = state, now
    # Set the execution info's result before completing a task: counts read this column.
    task.result = (task.execution_info or {}).get("result") if state == "completed" else None


def requeue(task: models.Task, clock: Clock) -> None:
    """Put a task whose attempt was taken off its node back in the queue (not a retry: requeueCount counts it)."""
    info = dict(task.execution_info)
    info["requeueCount"] = int(info.get("requeueCount", 0)) + 1
    info["lastRequeueTime"] = timefmt.format_timestamp(clock.now())
    task.execution_info = info
    task.attempt, task.pid, task.node_key = None, None, None
    set_state(task, clock, "active")


def free_slot(node: models.Node, task: models.Task, clock: Clock) -> None:
    """Give the task's slots back to its node (idle again when nothing else runs there)."""
    node.running_slots = max(0, node.running_slots - task.slots)
    node.running_tasks = max(0, node.running_tasks - 1)
    if node.running_tasks == 0 and node.state == "running":
        node_rules.set_state(node, clock, node_rules.after_last_task(node))


def run_failure(exit_code: int | None, timed_out: bool, error: str | None = None) -> dict[str, Any] | None:
    """The failureInfo of a process that ended this way (None when it succeeded)."""
    if timed_out:
        return {"category": "usererror", "code": "MaxWallClockTimeExpiry",
                "message": "The task was terminated because it exceeded its maximum wall clock time.",
                "details": []}
    if exit_code is None:
        return {"category": "servererror" if error else "usererror", "code": "TaskEnded",
                "message": error or "The task process ended without an exit code.", "details": []}
    if exit_code != 0:
        return {"category": "usererror", "code": "FailureExitCode",
                "message": "The task process exited with an unexpected exit code",
                "details": [{"name": "AdditionalErrorCode", "value": "FailureExitCode"}]}
    return None


def validate(job: models.Job, body: dict[str, Any]) -> dict[str, Any]:
    task_id = str(body.get("id") or "")
    if not task_id:
        raise missing("id")
    if not _ID.match(task_id):
        raise bad_value("id", task_id, "1-64 letters, digits, hyphens and underscores")
    if not body.get("commandLine"):
        raise missing("commandLine")
    jobtasks.check_task_id(job.spec, task_id)
    spec = {k: body[k] for k in SPEC_FIELDS if k in body}
    slots = spec.get("requiredSlots", 1)
    if not isinstance(slots, int) or slots < 1:
        raise bad_value("requiredSlots", slots, "a positive integer")
    if spec.get("dependsOn") and not job.spec.get("usesTaskDependencies"):
        raise errors.TaskDependenciesNotSpecifiedOnJob(
            "The job does not allow task dependencies: create it with usesTaskDependencies.")
    affinity = spec.get("affinityInfo")
    if affinity is not None and (not isinstance(affinity, dict) or not affinity.get("affinityId")):
        raise missing("affinityInfo.affinityId")
    exits.validate(spec, job.spec)
    multi_instance.validate(spec)
    taskfiles.validate_resource_files(spec.get("resourceFiles"), "resourceFiles")
    taskfiles.validate_output_files(spec.get("outputFiles"), "outputFiles")
    constraints = spec.get("constraints") or {}
    for name in ("maxWallClockTime", "retentionTime"):
        if name in constraints:
            try:
                timefmt.parse_duration(str(constraints[name]))
            except timefmt.TimeFormatError as exc:
                raise bad_value(f"constraints.{name}", constraints[name], str(exc)) from exc
    return spec


DEFAULT_RETENTION = timedelta(days=7)


def retention(spec: dict[str, Any]) -> timedelta:
    """How long a completed task's directory stays on its node (constraints.retentionTime, 7 days by default)."""
    text = (spec.get("constraints") or {}).get("retentionTime")
    return timefmt.parse_duration(str(text)) if text else DEFAULT_RETENTION


def check_job_accepts_tasks(job: models.Job) -> None:
    if job.state in ("completed", "terminating"):
        raise errors.JobCompleted("The specified job is already in a completed state.")
    if job.state == "deleting":
        raise errors.JobBeingDeleted("The specified job is being deleted.")


def next_seq(s: Session) -> int:
    return int(s.scalar(select(func.coalesce(func.max(models.Task.seq), 0))) or 0) + 1


def new_row(job: models.Job, clock: Clock, body: dict[str, Any], spec: dict[str, Any], seq: int,
            now: datetime | None = None) -> dict[str, Any]:
    """A new task's columns (the others start empty); ``now``: the time of a whole collection."""
    now = now or clock.now()
    return {"key": task_key(job.key, str(body["id"])), "job_key": job.key, "task_id": str(body["id"]), "seq": seq,
            "spec": spec, "slots": int(spec.get("requiredSlots", 1)), "state": "active", "state_transition_time": now,
            "execution_info": {"retryCount": 0, "requeueCount": 0}, "etag": etags.new_etag(), "created_at": now,
            "last_modified": now}


def new_task(job: models.Job, clock: Clock, body: dict[str, Any], spec: dict[str, Any], seq: int) -> models.Task:
    return models.Task(**new_row(job, clock, body, spec, seq))


def add(s: Session, clock: Clock, job: models.Job, body: dict[str, Any]) -> models.Task:
    check_job_accepts_tasks(job)
    spec = validate(job, body)
    if s.get(models.Task, task_key(job.key, str(body["id"]))) is not None:
        raise errors.TaskExists("The specified task already exists.")
    task = new_task(job, clock, body, spec, next_seq(s))
    s.add(task)
    return task


def add_collection(s: Session, clock: Clock, job: models.Job, raw_size: int, items: Any) -> list[dict[str, Any]]:
    """``addtaskcollection``: per-task results; the whole request fails only when it is too large."""
    if not isinstance(items, list):
        raise missing("value")
    if len(items) > MAX_COLLECTION or raw_size >= MAX_COLLECTION_BYTES:
        raise errors.RequestBodyTooLarge(f"The collection has {len(items)} tasks and {raw_size} bytes: at most "
                                         f"{MAX_COLLECTION} tasks and less than 1 MB are allowed per request.")
    check_job_accepts_tasks(job)
    # Looked up by primary key (a task's key holds its id in lower case): a search by lower(task_id) would read
    # every task of the job for each request.
    keys = {task_key(job.key, str(i.get("id", ""))) for i in items if isinstance(i, dict)}
    existing = set(s.scalars(select(models.Task.key).where(models.Task.key.in_(keys)))) if keys else set()
    seq = next_seq(s)
    # One time for the collection (one request, one transaction), written and shown the same way for each task.
    now = clock.now()
    modified = timefmt.format_timestamp(now)
    results: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for item in items:
        task_id = str(item.get("id", "")) if isinstance(item, dict) else ""
        try:
            if not isinstance(item, dict):
                raise missing("value[]")
            spec = validate(job, item)
            if task_key(job.key, task_id) in existing or task_id.lower() in seen:
                raise errors.TaskExists("The specified task already exists.")
        except errors.AzureError as exc:
            results.append({"status": "clienterror", "taskId": task_id, "error": {
                "code": exc.code, "message": {"lang": "en-US", "value": exc.message},
                "values": [{"key": k, "value": v} for k, v in exc.values.items()]}})
            continue
        seen.add(task_id.lower())
        row = new_row(job, clock, item, spec, seq, now)
        seq += 1
        rows.append(row)
        results.append({"status": "success", "taskId": task_id, "eTag": row["etag"], "lastModified": modified})
    if rows:  # one statement for the collection, to the table (ORM objects, even an ORM bulk insert, cost more)
        s.execute(insert(TASKS), [{**row, "version": 1} for row in rows])
    return results


def body_size(body: dict[str, Any]) -> int:
    return len(json.dumps(body, separators=(",", ":")).encode())


def get(s: Session, job: models.Job, task_id: str) -> models.Task:
    task = s.get(models.Task, task_key(job.key, task_id))
    if task is None:
        raise errors.TaskNotFound("The specified task does not exist.")
    return task


def list_tasks(s: Session, job: models.Job) -> list[models.Task]:
    return list(s.scalars(select(models.Task).where(models.Task.job_key == job.key).order_by(models.Task.seq)))


def terminate(task: models.Task, clock: Clock) -> None:
    """A task not yet running completes now as failed; a running one gets no more retries (its attempt is
    killed by the caller, and its end arrives as usual)."""
    if task.state == "completed":
        return
    if task.attempt is None:
        task.execution_info = {**task.execution_info, "result": "failure",
                               "endTime": timefmt.format_timestamp(clock.now()),
                               "failureInfo": {"category": "usererror", "code": "TaskEnded",
                                               "message": "Task Was Ended by User Request"}}
        set_state(task, clock, "completed")
    else:
        task.spec = {**task.spec, "constraints": {**(task.spec.get("constraints") or {}), "maxTaskRetryCount": 0}}


def reactivate(task: models.Task, clock: Clock) -> None:
    """Only a completed task that failed becomes active again, with its retries counted from zero."""
    if task.state != "completed" or task.execution_info.get("result") != "failure":
        refused = errors.TaskCompleted if task.state == "completed" else errors.TaskNotCompleted
        raise refused("Only a completed task that failed can be reactivated.")
    task.execution_info = {"retryCount": 0, "requeueCount": task.execution_info.get("requeueCount", 0)}
    set_state(task, clock, "active")


def delete(s: Session, task: models.Task, clock: Clock) -> None:
    """Delete a task; a running attempt gives its nodes' slots back now (the caller kills its processes, and
    their end, arriving for a task that is gone, is ignored)."""
    if task.attempt is not None:
        node = node_of(s, task)
        if node is not None:
            free_slot(node, task, clock)
        multi_instance.end_subtasks(s, task, None, clock)  # a multi-instance task's other nodes
    s.delete(task)


def node_of(s: Session, task: models.Task) -> models.Node | None:
    """The node the task runs or last ran on, while that node exists."""
    return s.get(models.Node, task.node_key) if task.node_key else None


def dependency_ids(spec: dict[str, Any]) -> tuple[list[str], list[tuple[int, int]]]:
    deps = spec.get("dependsOn") or {}
    ranges = [(int(r["start"]), int(r["end"])) for r in deps.get("taskIdRanges") or []]
    return [str(t) for t in deps.get("taskIds") or []], ranges


# The shapes of a task's fields: a stored record holding something else (written by hand, or by a bug of an
# older version) still renders, without that field, rather than failing every read of its task.
_LISTS = ("environmentSettings", "resourceFiles", "outputFiles", "applicationPackageReferences")
_OBJECTS = ("constraints", "userIdentity", "affinityInfo", "exitConditions", "dependsOn", "containerSettings",
            "multiInstanceSettings", "authenticationTokenSettings")


def _readable(spec: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in spec.items() if not (k in _LISTS and not isinstance(v, list))
            and not (k in _OBJECTS and not isinstance(v, dict))}


def render(task: models.Task, url: str) -> dict[str, Any]:
    fmt = timefmt.format_timestamp
    spec = _readable(task.spec)
    constraints = {"maxWallClockTime": timefmt.INFINITE_DURATION_TEXT, "retentionTime": "P7D",
                   "maxTaskRetryCount": 0, **(spec.get("constraints") or {})}
    body: dict[str, Any] = {
        "id": task.task_id, "url": url, "eTag": task.etag, "lastModified": fmt(task.last_modified),
        "creationTime": fmt(task.created_at), "state": task.state,
        "stateTransitionTime": fmt(task.state_transition_time),
        "requiredSlots": task.slots, "constraints": constraints,
        "executionInfo": task.execution_info,
        "userIdentity": spec.get("userIdentity") or {"autoUser": {"scope": "pool", "elevationLevel": "nonadmin"}},
        **{k: v for k, v in spec.items() if k not in ("constraints", "userIdentity", "requiredSlots",
                                                      "jobManager")},  # (job_manager.KEY: Shoal's own)
    }
    if task.previous_state:
        body["previousState"] = task.previous_state
        body["previousStateTransitionTime"] = fmt(task.previous_state_transition_time) \
            if task.previous_state_transition_time else None
    if task.node_info:
        body["nodeInfo"] = task.node_info
    return body
