"""Job preparation and release tasks: their rules, defaults and the status rows the API lists.

The preparation task runs on a node before the first task of the job runs there; with ``waitForSuccess`` (the
default) a node whose preparation failed gets no tasks of that job. The release task runs, on every node that
ran the preparation task, when the job ends (terminated, completed or deleted); the job stays ``terminating``
until they are done.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from shoal.core import errors, timefmt
from shoal.domain.batch import taskfiles
from shoal.domain.batch.pools import bad_value, missing
from shoal.store import models

PREPARATION_ID = "jobpreparation"
RELEASE_ID = "jobrelease"
RELEASE_MAX_WALL_CLOCK = 15 * 60


def preparation(job_spec: dict[str, Any]) -> dict[str, Any] | None:
    return job_spec.get("jobPreparationTask") or None


def release(job_spec: dict[str, Any]) -> dict[str, Any] | None:
    return job_spec.get("jobReleaseTask") or None


def task_id(spec: dict[str, Any], default: str) -> str:
    return str(spec.get("id") or default)


def validate(job_spec: dict[str, Any]) -> None:
    prep, rel = job_spec.get("jobPreparationTask"), job_spec.get("jobReleaseTask")
    for name, spec in (("jobPreparationTask", prep), ("jobReleaseTask", rel)):
        if spec is None:
            continue
        if not isinstance(spec, dict) or not spec.get("commandLine"):
            raise missing(f"{name}.commandLine")
        taskfiles.validate_resource_files(spec.get("resourceFiles"), f"{name}.resourceFiles")
    if rel is not None and prep is None:
        raise bad_value("jobReleaseTask", "jobReleaseTask", "a job release task needs a job preparation task")
    if rel is not None and rel.get("maxWallClockTime"):
        try:
            limit = timefmt.parse_duration(str(rel["maxWallClockTime"])).total_seconds()
        except timefmt.TimeFormatError as exc:
            raise bad_value("jobReleaseTask.maxWallClockTime", rel["maxWallClockTime"], str(exc)) from exc
        if limit > RELEASE_MAX_WALL_CLOCK:
            raise bad_value("jobReleaseTask.maxWallClockTime", rel["maxWallClockTime"], "at most 15 minutes")


def check_task_id(job_spec: dict[str, Any], tid: str) -> None:
    """A task may not take the id of the job's preparation or release task."""
    prep, rel = preparation(job_spec), release(job_spec)
    if prep is not None and tid.lower() == task_id(prep, PREPARATION_ID).lower():
        raise errors.TaskIdSameAsJobPreparationTask("The task id is the same as the job's preparation task.")
    if rel is not None and tid.lower() == task_id(rel, RELEASE_ID).lower():
        raise errors.TaskIdSameAsJobReleaseTask("The task id is the same as the job's release task.")


def timeout(spec: dict[str, Any], *, is_release: bool) -> float | None:
    text = spec.get("maxWallClockTime") if is_release else (spec.get("constraints") or {}).get("maxWallClockTime")
    if not text:
        return float(RELEASE_MAX_WALL_CLOCK) if is_release else None
    return timefmt.parse_duration(str(text)).total_seconds()


def usable(job_spec: dict[str, Any], info: dict[str, Any] | None) -> bool | None:
    """Whether a node may run the job's tasks given its preparation run: True, False (failed and the job waits
    for success), or None (the preparation task has not run there yet, or is running)."""
    if info is None or info.get("state") != "completed":
        return None
    if info.get("result") == "success":
        return True
    prep = preparation(job_spec) or {}
    return not bool(prep.get("waitForSuccess", True))


def forget_preparations(s: Session, node_key: str, *, reimage: bool) -> None:
    """A node restarts: the jobs' preparation tasks run there again before their next task, as on Azure: always
    after a reimage (the node's disk is new), after a reboot unless ``rerunOnNodeRebootAfterSuccess`` is false."""
    for row in s.scalars(select(models.JobNodeTask).where(models.JobNodeTask.node_key == node_key)):
        if not row.preparation:
            continue
        job = s.get(models.Job, row.job_key)
        prep = preparation(job.spec) if job is not None else None
        if reimage or not prep or prep.get("rerunOnNodeRebootAfterSuccess", True) is not False:
            row.preparation = None


def status_list(s: Session, job: models.Job) -> list[dict[str, Any]]:
    """``jobpreparationandreleasetaskstatus``: one entry per node the preparation task ran on."""
    if preparation(job.spec) is None:
        raise errors.JobPreparationTaskNotSpecified("The specified job does not have a job preparation task.")
    rows = s.scalars(select(models.JobNodeTask).where(models.JobNodeTask.job_key == job.key)
                     .order_by(models.JobNodeTask.node_id))
    return [render(r) for r in rows if r.preparation]


def render(row: models.JobNodeTask) -> dict[str, Any]:
    body: dict[str, Any] = {"poolId": row.pool_id, "nodeId": row.node_id, "nodeUrl": row.node_url}
    if row.preparation:
        body["jobPreparationTaskExecutionInfo"] = row.preparation
    if row.release:
        body["jobReleaseTaskExecutionInfo"] = row.release
    return body
