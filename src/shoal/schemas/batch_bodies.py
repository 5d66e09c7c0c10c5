"""The shapes of Batch request bodies: every property has its JSON type, checked before anything is stored.

The models are strict (a string is not a number, a number is not a string) and allow properties they do not
name (the domain rules refuse those it cannot honour, with their own messages). Values are the domain's to
judge; here a body that is not even shaped like Azure's is refused with ``InvalidPropertyValue`` naming the
property, as Azure does, so that no malformed record is ever stored.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, ValidationError

from shoal.core import errors, timefmt


def _duration(text: str) -> str:
    timefmt.parse_duration(text)  # ValueError (TimeFormatError) when it is not one Azure accepts
    return text


Duration = Annotated[str, AfterValidator(_duration)]


def _integer_text(value: Any) -> Any:
    """An integer written as a JSON string of digits becomes that integer: Azure's deserializer accepts those,
    and `az batch` sends its integer options that way (``"targetDedicatedNodes": "1"``). Anything else that is
    not a JSON integer ("y", "1.5", true) stays what it is, and is refused."""
    if isinstance(value, str) and re.fullmatch(r"-?\d{1,18}", value.strip()):
        return int(value)
    return value


Int = Annotated[int, BeforeValidator(_integer_text)]


def _boolean_text(value: Any) -> Any:
    """``"true"`` / ``"false"`` as Azure's deserializer reads them (az sends some flags that way)."""
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return value


Bool = Annotated[bool, BeforeValidator(_boolean_text)]


class Wire(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")


class NameValue(Wire):
    name: str
    value: str | None = None


class AutoUser(Wire):
    scope: str | None = None
    elevationLevel: str | None = None


class UserIdentity(Wire):
    username: str | None = None
    autoUser: AutoUser | None = None


class TaskConstraints(Wire):
    maxWallClockTime: Duration | None = None
    retentionTime: Duration | None = None
    maxTaskRetryCount: Int | None = None


class TaskIdRange(Wire):
    start: Int
    end: Int


class DependsOn(Wire):
    taskIds: list[str] | None = None
    taskIdRanges: list[TaskIdRange] | None = None


class ResourceFile(Wire):
    autoStorageContainerName: str | None = None
    storageContainerUrl: str | None = None
    httpUrl: str | None = None
    blobPrefix: str | None = None
    filePath: str | None = None
    fileMode: str | None = None
    identityReference: dict[str, Any] | None = None


class OutputFile(Wire):
    filePattern: str | None = None
    destination: dict[str, Any] | None = None
    uploadOptions: dict[str, Any] | None = None


class TaskSpec(Wire):
    """What a task, a start task and the job manager, preparation and release tasks share."""

    id: str | None = None
    displayName: str | None = None
    commandLine: str | None = None
    environmentSettings: list[NameValue] | None = None
    resourceFiles: list[ResourceFile] | None = None
    userIdentity: UserIdentity | None = None
    containerSettings: dict[str, Any] | None = None


class TaskAdd(TaskSpec):
    constraints: TaskConstraints | None = None
    dependsOn: DependsOn | None = None
    outputFiles: list[OutputFile] | None = None
    requiredSlots: Int | None = None
    affinityInfo: dict[str, Any] | None = None
    exitConditions: dict[str, Any] | None = None
    multiInstanceSettings: dict[str, Any] | None = None
    applicationPackageReferences: list[dict[str, Any]] | None = None
    authenticationTokenSettings: dict[str, Any] | None = None


class TaskCollection(Wire):
    value: list[TaskAdd] | None = None


class TaskUpdate(Wire):
    constraints: TaskConstraints | None = None


class JobConstraints(Wire):
    maxWallClockTime: Duration | None = None
    maxTaskRetryCount: Int | None = None


class JobTask(TaskSpec):
    constraints: TaskConstraints | None = None
    waitForSuccess: Bool | None = None
    rerunOnNodeRebootAfterSuccess: Bool | None = None
    maxWallClockTime: Duration | None = None
    retentionTime: Duration | None = None
    killJobOnCompletion: Bool | None = None
    runExclusive: Bool | None = None
    allowLowPriorityNode: Bool | None = None
    requiredSlots: Int | None = None
    outputFiles: list[OutputFile] | None = None
    applicationPackageReferences: list[dict[str, Any]] | None = None
    authenticationTokenSettings: dict[str, Any] | None = None


class JobSpecification(Wire):
    """A job as a job schedule makes it (a job's properties, without its id)."""

    displayName: str | None = None
    priority: Int | None = None
    maxParallelTasks: Int | None = None
    allowTaskPreemption: Bool | None = None
    usesTaskDependencies: Bool | None = None
    onAllTasksComplete: str | None = None
    onTaskFailure: str | None = None
    constraints: JobConstraints | None = None
    poolInfo: dict[str, Any] | None = None
    jobManagerTask: JobTask | None = None
    jobPreparationTask: JobTask | None = None
    jobReleaseTask: JobTask | None = None
    commonEnvironmentSettings: list[NameValue] | None = None
    metadata: list[NameValue] | None = None
    networkConfiguration: dict[str, Any] | None = None


class Job(JobSpecification):
    id: str | None = None


class Schedule(Wire):
    """When a job schedule makes its jobs (values are checked by ``domain/batch/schedule_rules.py``)."""

    doNotRunUntil: str | None = None
    doNotRunAfter: str | None = None
    startWindow: Duration | None = None
    recurrenceInterval: Duration | None = None


class JobSchedule(Wire):
    id: str | None = None
    displayName: str | None = None
    schedule: Schedule | None = None
    jobSpecification: JobSpecification | None = None
    metadata: list[NameValue] | None = None


class JobScheduleUpdate(Wire):
    """The body of a job schedule's PATCH and PUT."""

    schedule: Schedule | None = None
    jobSpecification: JobSpecification | None = None
    metadata: list[NameValue] | None = None


class StartTask(TaskSpec):
    maxTaskRetryCount: Int | None = None
    waitForSuccess: Bool | None = None


class Pool(Wire):
    id: str | None = None
    displayName: str | None = None
    vmSize: str | None = None
    virtualMachineConfiguration: dict[str, Any] | None = None
    resizeTimeout: Duration | None = None
    targetDedicatedNodes: Int | None = None
    targetLowPriorityNodes: Int | None = None
    enableAutoScale: Bool | None = None
    autoScaleFormula: str | None = None
    autoScaleEvaluationInterval: Duration | None = None
    enableInterNodeCommunication: Bool | None = None
    networkConfiguration: dict[str, Any] | None = None
    startTask: StartTask | None = None
    taskSlotsPerNode: Int | None = None
    taskSchedulingPolicy: dict[str, Any] | None = None
    metadata: list[NameValue] | None = None
    userAccounts: list[dict[str, Any]] | None = None
    mountConfiguration: list[dict[str, Any]] | None = None
    applicationPackageReferences: list[dict[str, Any]] | None = None
    certificateReferences: list[dict[str, Any]] | None = None
    targetNodeCommunicationMode: str | None = None


class PoolResize(Wire):
    targetDedicatedNodes: Int | None = None
    targetLowPriorityNodes: Int | None = None
    resizeTimeout: Duration | None = None
    nodeDeallocationOption: str | None = None


class AutoScale(Wire):
    autoScaleFormula: str | None = None
    autoScaleEvaluationInterval: Duration | None = None


class RemoveNodes(Wire):
    nodeList: list[str] | None = None
    resizeTimeout: Duration | None = None
    nodeDeallocationOption: str | None = None


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def check(body: dict[str, Any], shape: type[Wire]) -> dict[str, Any]:
    """``body`` when it has ``shape``; else the Batch error naming the first property that does not."""
    try:
        checked = shape.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = _path(tuple(p for p in first["loc"] if not (isinstance(p, str) and p.startswith("function-"))))
        value = first.get("input")
        raise errors.InvalidPropertyValue(
            f"The value provided for one of the properties in the request body is invalid: '{where}': "
            f"{first['msg']}.",
            values={"PropertyName": where, "PropertyValue": str(value)[:400]}) from None
    return checked.model_dump(exclude_unset=True)
