"""Task exit conditions: what a task's ending means for its job and for the tasks that depend on it.

``exitConditions`` picks the ``exitOptions`` that match how the task ended: an exact ``exitCodes`` entry first,
then the first ``exitCodeRanges`` entry that contains the code, then ``default``; a task that could not start
(a resource file could not be downloaded) uses ``preProcessingError`` and one whose output files could not be
uploaded uses ``fileUploadError``; ``default`` covers every failure without an entry of its own (never exit code
0). Unspecified options take Azure's defaults: a task that succeeded satisfies its
dependents and leaves the job alone; one that failed blocks its dependents and, when the job's
``onTaskFailure`` is ``performexitoptionsjobaction``, terminates the job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shoal.core import errors
from shoal.domain.batch.pools import bad_value

JOB_ACTIONS = ("none", "disable", "terminate")
DEPENDENCY_ACTIONS = ("satisfy", "block")
PRE_PROCESSING = "preProcessingError"
FILE_UPLOAD = "fileUploadError"


@dataclass(frozen=True)
class ExitOptions:
    job_action: str
    dependency_action: str


def options(spec: dict[str, Any], exit_code: int | None, failed: bool, failure_kind: str | None = None) -> ExitOptions:
    """The effective exit options of a completed task.

    ``failure_kind`` is :data:`PRE_PROCESSING` or :data:`FILE_UPLOAD` when the task failed before or after its
    command rather than through its exit code."""
    conditions = spec.get("exitConditions") or {}
    chosen: dict[str, Any] | None = None
    if failure_kind == PRE_PROCESSING:
        chosen = conditions.get(PRE_PROCESSING)
    elif exit_code is not None:
        # An exit code listed explicitly takes precedence over a file upload error that followed it.
        for entry in conditions.get("exitCodes") or []:
            if _int(entry.get("code")) == exit_code:
                chosen = entry.get("exitOptions")
                break
        else:
            for entry in conditions.get("exitCodeRanges") or []:
                if _int(entry.get("start")) <= exit_code <= _int(entry.get("end")):
                    chosen = entry.get("exitOptions")
                    break
    if chosen is None and failure_kind == FILE_UPLOAD:
        chosen = conditions.get(FILE_UPLOAD)
    # ``default`` covers failures only: a non-zero code not listed, or an error kind without its own entry.
    if chosen is None and (failure_kind is not None or (exit_code is not None and exit_code != 0) or failed):
        chosen = conditions.get("default")
    chosen = chosen or {}
    return ExitOptions(
        job_action=str(chosen.get("jobAction") or ("terminate" if failed else "none")).lower(),
        dependency_action=str(chosen.get("dependencyAction") or ("block" if failed else "satisfy")).lower())


def satisfies_dependents(spec: dict[str, Any], execution_info: dict[str, Any]) -> bool:
    """Whether a completed task lets the tasks that depend on it run."""
    failure = execution_info.get("failureInfo") or {}
    return options(spec, execution_info.get("exitCode"), bool(failure), _kind(failure)).dependency_action == "satisfy"


def job_action(spec: dict[str, Any], job_spec: dict[str, Any], execution_info: dict[str, Any]) -> str:
    """The action a completed task asks of its job (``none`` unless the job takes exit-option actions)."""
    if str(job_spec.get("onTaskFailure", "noaction")).lower() != "performexitoptionsjobaction":
        return "none"
    failure = execution_info.get("failureInfo") or {}
    return options(spec, execution_info.get("exitCode"), bool(failure), _kind(failure)).job_action


def _kind(failure: dict[str, Any]) -> str | None:
    code = str(failure.get("code") or "")
    if code in PRE_PROCESSING_CODES:
        return PRE_PROCESSING
    if code in FILE_UPLOAD_CODES:
        return FILE_UPLOAD
    return None


# failureInfo codes of tasks that could not start (resource files) and of output files that could not be uploaded.
PRE_PROCESSING_CODES = frozenset({"BlobNotFound", "BlobAccessDenied", "BlobDownloadTimedOut", "BlobDownloadMiscError",
                                  "ResourceFileCreateFailed", "ResourceFileWriteFailed", "DiskFull",
                                  "ResourceContainerAccessDenied", "ResourceContainerListMiscError"})
FILE_UPLOAD_CODES = frozenset({"FileUploadContainerNotFound", "FileUploadMiscError"})


def validate(spec: dict[str, Any], job_spec: dict[str, Any]) -> None:
    """Shape and values of ``exitConditions``; job actions need a job that performs them (as in Azure)."""
    conditions = spec.get("exitConditions")
    if conditions is None:
        return
    if not isinstance(conditions, dict):
        raise bad_value("exitConditions", conditions, "an object")
    entries: list[tuple[str, Any]] = []
    for i, entry in enumerate(conditions.get("exitCodes") or []):
        where = f"exitConditions.exitCodes[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("code"), int):
            raise bad_value(f"{where}.code", (entry or {}).get("code") if isinstance(entry, dict) else entry,
                            "an integer exit code")
        entries.append((where, entry.get("exitOptions")))
    for i, entry in enumerate(conditions.get("exitCodeRanges") or []):
        where = f"exitConditions.exitCodeRanges[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("start"), int) \
                or not isinstance(entry.get("end"), int) or entry["start"] > entry["end"]:
            raise bad_value(where, entry, "integers start <= end")
        entries.append((where, entry.get("exitOptions")))
    for name in (PRE_PROCESSING, FILE_UPLOAD, "default"):
        if name in conditions:
            entries.append((f"exitConditions.{name}", conditions[name]))
    performs = str(job_spec.get("onTaskFailure", "noaction")).lower() == "performexitoptionsjobaction"
    for where, opts in entries:
        if opts is None:
            continue
        if not isinstance(opts, dict):
            raise bad_value(where, opts, "exit options object")
        action = opts.get("jobAction")
        if action is not None:
            if str(action).lower() not in JOB_ACTIONS:
                raise bad_value(f"{where}.jobAction", action, " or ".join(JOB_ACTIONS))
            if not performs:
                raise errors.InvalidPropertyValue(
                    f"The value provided for one of the properties in the request body is invalid: {where}.jobAction "
                    "(the job's onTaskFailure is noaction; set it to performexitoptionsjobaction to use job "
                    "actions).",
                    values={"PropertyName": f"{where}.jobAction", "PropertyValue": str(action)})
        dependency = opts.get("dependencyAction")
        if dependency is not None and str(dependency).lower() not in DEPENDENCY_ACTIONS:
            raise bad_value(f"{where}.dependencyAction", dependency, " or ".join(DEPENDENCY_ACTIONS))


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0
