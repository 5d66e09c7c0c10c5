"""Converters between the two wire spellings of a Batch pool and Shoal's canonical form.

The canonical pool spec uses the data plane's names and lower-case enums. The management plane (ARM) nests
things differently (``deploymentConfiguration.virtualMachineConfiguration``, ``scaleSettings``), spells some
names differently (``nodeAgentSkuId``, ``inboundNatPools``, ``imageReference.id``) and uses PascalCase enums.
Unknown fields are dropped silently by the SDKs, so every spelling here matters.
"""

from __future__ import annotations

import copy
from typing import Any

# Enum-valued fields (by JSON key) and their canonical lower-case <-> ARM PascalCase values.
_ENUMS: dict[str, dict[str, str]] = {
    "protocol": {"tcp": "TCP", "udp": "UDP"},
    "access": {"allow": "Allow", "deny": "Deny"},
    "nodeFillType": {"spread": "Spread", "pack": "Pack"},
    "elevationLevel": {"nonadmin": "NonAdmin", "admin": "Admin"},
    "scope": {"task": "Task", "pool": "Pool"},
    "nodeDeallocationOption": {"requeue": "Requeue", "terminate": "Terminate", "taskcompletion": "TaskCompletion",
                               "retaineddata": "RetainedData"},
    "caching": {"none": "None", "readonly": "ReadOnly", "readwrite": "ReadWrite"},
    "storageAccountType": {"standard_lrs": "Standard_LRS", "premium_lrs": "Premium_LRS",
                           "standardssd_lrs": "StandardSSD_LRS"},
    "provision": {"batchmanaged": "BatchManaged", "usermanaged": "UserManaged",
                  "nopublicipaddresses": "NoPublicIPAddresses"},
    "dynamicVNetAssignmentScope": {"none": "None", "job": "Job"},
}
# Field names that differ between the planes (canonical -> ARM), applied at every depth.
_RENAMES = {"inboundNATPools": "inboundNatPools", "nodeAgentSKUId": "nodeAgentSkuId"}


def _convert(value: Any, to_arm: bool) -> Any:
    if isinstance(value, list):
        return [_convert(v, to_arm) for v in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, v in value.items():
        canonical = next((c for c, a in _RENAMES.items() if a == key), key)
        name = _RENAMES.get(canonical, canonical) if to_arm else canonical
        if isinstance(v, str) and canonical in _ENUMS:
            v = _ENUMS[canonical].get(v.lower(), v) if to_arm else v.lower()
        out[name] = _convert(v, to_arm)
    return out


def to_canonical(value: Any) -> Any:
    """ARM spelling (or a lenient data-plane body) -> canonical."""
    return _convert(value, to_arm=False)


def to_arm(value: Any) -> Any:
    return _convert(value, to_arm=True)


# --- pool bodies ------------------------------------------------------------------------------------------
SPEC_FIELDS = ("displayName", "vmSize", "virtualMachineConfiguration", "taskSlotsPerNode", "taskSchedulingPolicy",
               "startTask", "networkConfiguration", "metadata", "userAccounts", "enableInterNodeCommunication",
               "applicationPackageReferences", "mountConfiguration", "certificateReferences",
               "targetNodeCommunicationMode", "upgradePolicy", "resourceTags")


def spec_from_data_plane(body: dict[str, Any]) -> dict[str, Any]:
    spec = {k: copy.deepcopy(body[k]) for k in SPEC_FIELDS if k in body}
    if "maxTasksPerNode" in body and "taskSlotsPerNode" not in spec:
        spec["taskSlotsPerNode"] = body["maxTasksPerNode"]
    return to_canonical(spec)


def spec_from_arm(props: dict[str, Any]) -> dict[str, Any]:
    """ARM ``properties`` of a pool -> canonical spec (scale settings are read separately)."""
    p = copy.deepcopy(props)
    spec: dict[str, Any] = {}
    for key in ("displayName", "vmSize", "taskSlotsPerNode", "taskSchedulingPolicy", "startTask",
                "networkConfiguration", "metadata", "userAccounts", "applicationPackages", "mountConfiguration",
                "certificates", "targetNodeCommunicationMode", "upgradePolicy", "resourceTags"):
        if key in p:
            target = {"applicationPackages": "applicationPackageReferences",
                      "certificates": "certificateReferences"}.get(key, key)
            spec[target] = p[key]
    if "maxTasksPerNode" in p and "taskSlotsPerNode" not in spec:
        spec["taskSlotsPerNode"] = p["maxTasksPerNode"]
    vmc = ((p.get("deploymentConfiguration") or {}).get("virtualMachineConfiguration"))
    if vmc is not None:
        vmc = dict(vmc)
        ref = dict(vmc.get("imageReference") or {})
        if "id" in ref:
            ref["virtualMachineImageId"] = ref.pop("id")
        vmc["imageReference"] = ref
        spec["virtualMachineConfiguration"] = vmc
    if "interNodeCommunication" in p:
        spec["enableInterNodeCommunication"] = str(p["interNodeCommunication"]).lower() == "enabled"
    return to_canonical(spec)


def spec_to_arm(spec: dict[str, Any]) -> dict[str, Any]:
    out = to_arm({k: v for k, v in spec.items() if k not in ("virtualMachineConfiguration",
                                                              "enableInterNodeCommunication",
                                                              "applicationPackageReferences",
                                                              "certificateReferences")})
    assert isinstance(out, dict)
    vmc = spec.get("virtualMachineConfiguration")
    if vmc is not None:
        vmc_arm = to_arm(vmc)
        ref = dict(vmc_arm.get("imageReference") or {})
        if "virtualMachineImageId" in ref:
            ref["id"] = ref.pop("virtualMachineImageId")
        vmc_arm["imageReference"] = ref
        out["deploymentConfiguration"] = {"virtualMachineConfiguration": vmc_arm}
    out["interNodeCommunication"] = "Enabled" if spec.get("enableInterNodeCommunication") else "Disabled"
    if "applicationPackageReferences" in spec:
        out["applicationPackages"] = spec["applicationPackageReferences"]
    return out


# --- rendering ---------------------------------------------------------------------------------------------
def data_plane_pool(pool: Any, counts: tuple[int, int], url: str, fmt: Any, fmt_duration: Any) -> dict[str, Any]:
    """A pool as the Batch data plane shows it (``fmt``/``fmt_duration`` render timestamps and durations)."""
    spec = copy.deepcopy(pool.spec)
    body: dict[str, Any] = {
        "id": pool.pool_id, "url": url, "eTag": pool.etag, "lastModified": fmt(pool.last_modified),
        "creationTime": fmt(pool.created_at), "state": pool.state,
        "stateTransitionTime": fmt(pool.state_transition_time),
        "allocationState": pool.allocation_state,
        "allocationStateTransitionTime": fmt(pool.allocation_state_transition_time),
        **spec,
        "resizeTimeout": fmt_duration(pool.resize_timeout_s),
        "currentDedicatedNodes": counts[0], "currentLowPriorityNodes": counts[1],
        "targetDedicatedNodes": pool.target_dedicated, "targetLowPriorityNodes": pool.target_low_priority,
        "enableAutoScale": bool(pool.autoscale.get("enabled")),
        "enableInterNodeCommunication": bool(spec.get("enableInterNodeCommunication", False)),
        "taskSlotsPerNode": spec.get("taskSlotsPerNode", 1),
        "taskSchedulingPolicy": spec.get("taskSchedulingPolicy") or {"nodeFillType": "spread"},
    }
    if pool.autoscale.get("enabled"):
        body["autoScaleFormula"] = pool.autoscale.get("formula")
        body["autoScaleEvaluationInterval"] = pool.autoscale.get("interval")
    if pool.autoscale.get("run"):
        body["autoScaleRun"] = pool.autoscale["run"]
    if pool.resize_errors and pool.allocation_state == "steady":
        body["resizeErrors"] = pool.resize_errors
    return body


def arm_pool(pool: Any, counts: tuple[int, int], account_id: str, fmt: Any, fmt_duration: Any) -> dict[str, Any]:
    props = spec_to_arm(pool.spec)
    props.update({
        "lastModified": fmt(pool.last_modified), "creationTime": fmt(pool.created_at),
        "provisioningState": "Deleting" if pool.state == "deleting" else "Succeeded",
        "provisioningStateTransitionTime": fmt(pool.state_transition_time),
        "allocationState": pool.allocation_state.capitalize(),
        "allocationStateTransitionTime": fmt(pool.allocation_state_transition_time),
        "currentDedicatedNodes": counts[0], "currentLowPriorityNodes": counts[1],
        "taskSlotsPerNode": pool.spec.get("taskSlotsPerNode", 1),
        "taskSchedulingPolicy": to_arm(pool.spec.get("taskSchedulingPolicy") or {"nodeFillType": "spread"}),
    })
    if pool.autoscale.get("enabled"):
        props["scaleSettings"] = {"autoScale": {"formula": pool.autoscale.get("formula"),
                                                "evaluationInterval": pool.autoscale.get("interval")}}
    else:
        props["scaleSettings"] = {"fixedScale": {
            "targetDedicatedNodes": pool.target_dedicated, "targetLowPriorityNodes": pool.target_low_priority,
            "resizeTimeout": fmt_duration(pool.resize_timeout_s),
            "nodeDeallocationOption": _ENUMS["nodeDeallocationOption"].get(pool.deallocation_option, "Requeue")}}
    status: dict[str, Any] = {
        "targetDedicatedNodes": pool.target_dedicated, "targetLowPriorityNodes": pool.target_low_priority,
        "resizeTimeout": fmt_duration(pool.resize_timeout_s),
        "nodeDeallocationOption": _ENUMS["nodeDeallocationOption"].get(pool.deallocation_option, "Requeue"),
    }
    if pool.resize_started_at is not None:
        status["startTime"] = fmt(pool.resize_started_at)
    if pool.resize_errors and pool.allocation_state == "steady":
        status["errors"] = [{"code": e["code"], "message": e["message"],
                             "details": [{"code": v["name"], "message": v["value"]} for v in e.get("values") or []]}
                            for e in pool.resize_errors]
    props["resizeOperationStatus"] = status
    if pool.autoscale.get("run"):
        props["autoScaleRun"] = pool.autoscale["run"]
    return {"id": f"{account_id}/pools/{pool.pool_id}", "name": pool.pool_id,
            "type": "Microsoft.Batch/batchAccounts/pools", "etag": f'W/"{pool.etag}"', "properties": props}


def data_plane_node(node: Any, pool: Any, url: str, fmt: Any, isolation: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": node.node_id, "url": url, "state": node.state, "schedulingState": node.scheduling_state,
        "stateTransitionTime": fmt(node.state_transition_time), "allocationTime": fmt(node.allocation_time),
        "ipAddress": node.ip_address, "affinityId": f"TVM:{node.node_id}", "vmSize": pool.spec.get("vmSize"),
        "totalTasksRun": node.total_tasks_run, "totalTasksSucceeded": node.total_tasks_succeeded,
        "runningTasksCount": node.running_tasks, "runningTaskSlotsCount": node.running_slots,
        "isDedicated": node.is_dedicated,
        "nodeAgentInfo": {"version": f"shoal-1.0 ({isolation})", "lastUpdateTime": fmt(node.allocation_time)},
        "virtualMachineInfo": {"imageReference": copy.deepcopy(
            (pool.spec.get("virtualMachineConfiguration") or {}).get("imageReference") or {})},
        "isolationLevel": isolation,
    }
    if node.last_boot_time is not None:
        body["lastBootTime"] = fmt(node.last_boot_time)
    if pool.spec.get("startTask"):
        body["startTask"] = copy.deepcopy(pool.spec["startTask"])
    if node.start_task_info:
        body["startTaskInfo"] = node.start_task_info
    if node.errors:
        body["errors"] = node.errors
    if node.endpoints:
        body["endpointConfiguration"] = {"inboundEndpoints": node.endpoints}
    return body
