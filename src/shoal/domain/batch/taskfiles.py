"""Task file rules: ``resourceFiles`` and ``outputFiles`` as a task (or job preparation/release task) declares
them, checked when it is added; when an output file is uploaded."""

from __future__ import annotations

import re
from typing import Any

from shoal.domain.batch.pools import bad_value, missing


def validate_resource_files(items: Any, where: str) -> None:
    """``resourceFiles`` rules checked when a task is added (400 with the property named)."""
    if items is None:
        return
    if not isinstance(items, list):
        raise bad_value(where, items, "a list")
    for i, item in enumerate(items):
        prop = f"{where}[{i}]"
        if not isinstance(item, dict):
            raise bad_value(prop, item, "an object")
        sources = [k for k in ("autoStorageContainerName", "storageContainerUrl", "httpUrl") if item.get(k)]
        if len(sources) != 1:
            raise bad_value(prop, ",".join(sources) or "none", "exactly one of autoStorageContainerName, "
                            "storageContainerUrl and httpUrl")
        if sources[0] == "autoStorageContainerName":
            raise bad_value(f"{prop}.autoStorageContainerName", item["autoStorageContainerName"],
                            "Shoal accounts have no auto-storage account; use storageContainerUrl with a Shoal "
                            "container URL (`shoal container url`)")
        if sources[0] == "httpUrl" and not item.get("filePath"):
            raise missing(f"{prop}.filePath")
        _check_relative(item.get("filePath"), f"{prop}.filePath")
        if item.get("fileMode") is not None and not re.fullmatch(r"0?[0-7]{3,4}", str(item["fileMode"])):
            raise bad_value(f"{prop}.fileMode", item["fileMode"], "an octal mode such as 0770")


def validate_output_files(items: Any, where: str) -> None:
    if items is None:
        return
    if not isinstance(items, list):
        raise bad_value(where, items, "a list")
    for i, item in enumerate(items):
        prop = f"{where}[{i}]"
        if not isinstance(item, dict) or not item.get("filePattern"):
            raise missing(f"{prop}.filePattern")
        container = ((item.get("destination") or {}).get("container") or {})
        if not container.get("containerUrl"):
            raise missing(f"{prop}.destination.container.containerUrl")
        condition = str((item.get("uploadOptions") or {}).get("uploadCondition") or "")
        if not condition:
            raise missing(f"{prop}.uploadOptions.uploadCondition")
        if condition.lower() not in ("tasksuccess", "taskfailure", "taskcompletion"):
            raise bad_value(f"{prop}.uploadOptions.uploadCondition", condition,
                            "taskSuccess, taskFailure or taskCompletion")


def wants_upload(output: dict[str, Any], exit_code: int | None, failed: bool) -> bool:
    condition = str((output.get("uploadOptions") or {}).get("uploadCondition") or "taskcompletion").lower()
    succeeded = exit_code == 0 and not failed
    return condition == "taskcompletion" or (condition == "tasksuccess") == succeeded


def _check_relative(value: Any, prop: str) -> None:
    if value is None:
        return
    text = str(value)
    if text.startswith("/") or ".." in text.replace("\\", "/").split("/"):
        raise bad_value(prop, text, "a path relative to the task's working directory, without '..'")
