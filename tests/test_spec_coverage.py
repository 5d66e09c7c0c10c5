"""Nothing accepted and ignored: every request-body property of every Batch data-plane operation that Azure
describes (``tests/facts/azure_api_facts.json``) is honoured by Shoal or refused with a 400 naming it.

- Refused: the table in ``src/shoal/domain/batch/unsupported.py``. For each entry a request carrying the property
  (in an otherwise minimal body) goes to a real server and must get 400 ``InvalidPropertyValue`` naming it and
  saying Shoal does not support it. A property below one refused whatever its value is refused with it.
- Honoured: ``HONOURED`` below, each with where it is honoured. Descriptive properties (``displayName``,
  ``metadata``) are honoured by being stored and returned; the others have their effect.
- ``NO_EFFECT``: accepted on purpose although they change nothing here, each with the reason (README lists them).
- ``GAPS``: honoured in part, each with what is missing (README lists them).

A property of the facts in none of these fails the test, and so does an entry that matches nothing (stale).
README.md must name every refused property.
"""

from __future__ import annotations

import fnmatch
import json
import re
from pathlib import Path
from typing import Any

import pytest
import requests

from harness import ShoalServer
from shoal.azure import Shoal
from shoal.domain.batch.unsupported import REFUSED, Refusal

FACTS = json.loads((Path(__file__).parent / "facts" / "azure_api_facts.json").read_text())
BATCH_VERSION = "2025-06-01"
README = (Path(__file__).parent.parent / "README.md").read_text()

# --- honoured: (operations, property paths within the body, where) -------------------------------------------
POOL_OPS, POOL_UPDATES = "POST /pools", "P* /pools*"
TASK_BASE = ["commandLine", "environmentSettings", "environmentSettings.name", "environmentSettings.value",
             "resourceFiles", "resourceFiles.blobPrefix", "resourceFiles.fileMode", "resourceFiles.filePath",
             "resourceFiles.httpUrl", "resourceFiles.storageContainerUrl", "userIdentity", "userIdentity.autoUser",
             "userIdentity.autoUser.elevationLevel"]
START_TASK = [f"startTask.{p}" for p in ["", *TASK_BASE, "maxTaskRetryCount", "waitForSuccess"]]
TASK = ["id", "displayName", *TASK_BASE, "affinityInfo", "affinityInfo.affinityId", "applicationPackageReferences",
        "applicationPackageReferences.applicationId", "applicationPackageReferences.version", "constraints",
        "constraints.maxTaskRetryCount", "constraints.maxWallClockTime", "constraints.retentionTime", "dependsOn",
        "dependsOn.taskIdRanges", "dependsOn.taskIdRanges.end", "dependsOn.taskIdRanges.start", "dependsOn.taskIds",
        "requiredSlots", "outputFiles", "outputFiles.destination", "outputFiles.destination.container",
        "outputFiles.destination.container.containerUrl", "outputFiles.destination.container.path",
        "outputFiles.destination.container.uploadHeaders", "outputFiles.filePattern", "outputFiles.uploadOptions",
        "outputFiles.uploadOptions.uploadCondition"]
EXITS = ["exitConditions*"]
MULTI = ["multiInstanceSettings", "multiInstanceSettings.coordinationCommandLine",
         "multiInstanceSettings.numberOfInstances", "multiInstanceSettings.commonResourceFiles",
         *[f"multiInstanceSettings.commonResourceFiles.{p}" for p in ("blobPrefix", "fileMode", "filePath", "httpUrl",
                                                                     "storageContainerUrl")]]
JOB_TASKS = (["jobPreparationTask", "jobPreparationTask.id", "jobPreparationTask.waitForSuccess",
              "jobPreparationTask.constraints", "jobPreparationTask.constraints.maxTaskRetryCount",
              "jobPreparationTask.constraints.maxWallClockTime"]
             + [f"jobPreparationTask.{p}" for p in TASK_BASE]
             + ["jobReleaseTask", "jobReleaseTask.id", "jobReleaseTask.maxWallClockTime"]
             + [f"jobReleaseTask.{p}" for p in TASK_BASE])
JOB_MANAGER = ["jobManagerTask", *[f"jobManagerTask.{p}" for p in [
    "id", "displayName", *TASK_BASE, "killJobOnCompletion", "runExclusive", "allowLowPriorityNode", "requiredSlots",
    "constraints", "constraints.*", "applicationPackageReferences", "applicationPackageReferences.*", "outputFiles",
    "outputFiles.*"]]]
JOB = ["displayName", "priority", "constraints", "constraints.maxTaskRetryCount", "constraints.maxWallClockTime",
       "onAllTasksComplete", "onTaskFailure", "usesTaskDependencies", "commonEnvironmentSettings",
       "commonEnvironmentSettings.name", "commonEnvironmentSettings.value", "poolInfo", "poolInfo.poolId",
       "metadata", "metadata.name", "metadata.value"]

HONOURED: list[tuple[str, list[str], str]] = [
    ("P* /pools*", ["displayName", "metadata", "metadata.name", "metadata.value"],
     "stored and returned (domain/batch/service.py)"),
    (POOL_OPS, ["id", "vmSize"], "domain/batch/pools.py validate_spec, create; vmsizes.py (cores and memory)"),
    (POOL_OPS, ["virtualMachineConfiguration", "virtualMachineConfiguration.imageReference",
                "virtualMachineConfiguration.imageReference.*", "virtualMachineConfiguration.nodeAgentSKUId"],
     "domain/batch/images.py, image_rules.py, node_agents.py: the nodes boot from the image"),
    ("PATCH /pools/{}", ["vmSize", "virtualMachineConfiguration*"],
     "domain/batch/service.py update_pool: a change is refused with PropertyCannotBeUpdated naming it"),
    (POOL_OPS, ["virtualMachineConfiguration.dataDisks", "virtualMachineConfiguration.dataDisks.lun"],
     "domain/batch/nodes.py machine_spec: an empty disk at /datadisks/lun{N}"),
    (POOL_OPS, ["virtualMachineConfiguration.nodePlacementConfiguration"],
     "regional placement only (policy zonal is refused)"),
    (POOL_OPS, ["resizeTimeout", "targetDedicatedNodes", "targetLowPriorityNodes"],
     "domain/batch/pools.py scale_from_body; the allocation reconciler"),
    (POOL_OPS, ["enableAutoScale", "autoScaleFormula", "autoScaleEvaluationInterval"],
     "domain/batch/autoscaling.py and domain/batch/autoscale/"),
    (POOL_OPS, ["enableInterNodeCommunication"], "domain/batch/multi_instance.py (multi-instance tasks need it)"),
    (POOL_OPS, ["taskSlotsPerNode", "taskSchedulingPolicy", "taskSchedulingPolicy.nodeFillType",
                "taskSchedulingPolicy.jobDefaultOrder"],
     "domain/batch/assignment.py (slots, pack/spread, jobs of equal priority by creation time)"),
    (POOL_OPS, ["networkConfiguration", "networkConfiguration.subnetId"], "domain/batch/pool_subnets.py"),
    (POOL_OPS, ["networkConfiguration.endpointConfiguration*", "networkConfiguration.publicIPAddressConfiguration"],
     "domain/batch/natpools.py (inbound NAT endpoints; provision nopublicipaddresses removes them)"),
    ("P* /pools*", ["mountConfiguration", "mountConfiguration.*"],
     "domain/batch/mounts.py, runtime/mounts.py: mounted on every node (values Shoal cannot apply are refused "
     "there by name; tests/test_mounts.py)"),
    (POOL_OPS, ["upgradePolicy"], "stored and returned; mode manual only (nodes are never upgraded in place)"),
    (POOL_UPDATES, ["applicationPackageReferences", "applicationPackageReferences.*"],
     "reconcilers/app_packages.py: extracted on the nodes, AZ_BATCH_APP_PACKAGE_*"),
    ("P* /pools*", START_TASK, "reconcilers/allocation/start_task.py"),
    ("POST /pools/{}/updateproperties", START_TASK, "reconcilers/allocation/start_task.py"),
    ("P* /pools*", [f"startTask.{p}" for p in TASK_BASE if p.startswith("userIdentity.autoUser.")], "start_task.py"),
    ("POST /pools/{}/resize", ["targetDedicatedNodes", "targetLowPriorityNodes", "resizeTimeout",
                               "nodeDeallocationOption"], "domain/batch/pool_changes.py resize"),
    ("POST /pools/{}/removenodes", ["nodeList", "resizeTimeout", "nodeDeallocationOption"],
     "domain/batch/pool_changes.py remove_nodes"),
    ("POST /pools/{}/*autoscale", ["autoScaleFormula", "autoScaleEvaluationInterval"], "domain/batch/autoscaling.py"),
    ("POST /pools/{}/nodes/{}/*", ["nodeRebootOption", "nodeReimageOption", "nodeDeallocateOption"],
     "domain/batch/deallocation.py release_tasks (what happens to the node's running tasks)"),
    ("POST /pools/{}/nodes/{}/disablescheduling", ["nodeDisableSchedulingOption"],
     "domain/batch/deallocation.py disable_scheduling (requeue, terminate or let the running tasks finish)"),
    ("POST /jobs", ["jobPreparationTask.rerunOnNodeRebootAfterSuccess"],
     "domain/batch/jobtasks.py forget_preparations (run again after a reboot unless false; always after a reimage)"),
    ("P* /jobschedules*", ["jobSpecification.jobPreparationTask.rerunOnNodeRebootAfterSuccess"], "as for jobs"),
    ("POST /pools/{}/nodes/{}/uploadbatchservicelogs", ["containerUrl", "startTime"], "domain/batch/node_logs.py"),
    ("POST /pools/{}/nodes/{}/uploadbatchservicelogs", ["endTime"],
     "node_logs.py: every log file modified since startTime, so every file with messages of the range (Azure "
     "too may upload more than the range, never less)"),
    ("P* /pools/{}/nodes/{}/users*", ["name", "isAdmin", "password", "sshPublicKey", "expiryTime"],
     "domain/batch/node_users.py: useradd, password hash, authorized_keys, sudoers, expiry"),
    ("POST /jobs", ["id"], "domain/batch/jobs.py create"),
    ("P* /jobs/{}", ["priority", "constraints", "constraints.*", "onAllTasksComplete", "poolInfo", "poolInfo.poolId",
                     "metadata", "metadata.*"], "domain/batch/jobs.py update"),
    ("POST /jobs", JOB + JOB_TASKS, "domain/batch/jobs.py, jobtasks.py; reconcilers/tasks/"),
    ("POST /jobs", JOB_MANAGER, "domain/batch/job_manager.py: one of the job's tasks, run first"),
    ("P* /jobschedules*", [f"jobSpecification.{p}" for p in JOB_MANAGER], "domain/batch/job_manager.py"),
    ("P* /jobschedules*", [f"jobSpecification.{p}" for p in JOB + JOB_TASKS] + ["jobSpecification"],
     "domain/batch/job_schedules.py: the jobs it makes"),
    ("P* /jobschedules*", ["id", "displayName", "metadata", "metadata.*", "schedule", "schedule.*"],
     "domain/batch/job_schedules.py, schedule_rules.py"),
    ("* /jobs", ["jobPreparationTask.constraints.retentionTime", "jobReleaseTask.retentionTime"],
     "kept until the job is deleted, never less than retentionTime (reconcilers/tasks/job_tasks.py)"),
    ("P* /jobschedules*", ["jobSpecification.jobPreparationTask.constraints.retentionTime",
                           "jobSpecification.jobReleaseTask.retentionTime"], "as for jobs"),
    ("P* /jobs*", ["maxParallelTasks"], "domain/batch/assignment.py parallel_room (the scheduler starts no more)"),
    ("P* /jobschedules*", ["jobSpecification.maxParallelTasks"], "as for jobs"),
    ("POST /jobs/{}/disable", ["disableTasks"], "domain/batch/jobs.py disable"),
    ("POST /jobs/{}/terminate", ["terminateReason"], "domain/batch/jobs.py terminate"),
    ("POST /jobs/{}/tasks", TASK + EXITS + MULTI, "domain/batch/tasks.py, exits.py, multi_instance.py; "
                                                  "reconcilers/tasks/"),
    ("POST /jobs/{}/addtaskcollection", ["value"] + [f"value.{p}" for p in TASK + EXITS + MULTI], "as for tasks"),
    ("PUT /jobs/{}/tasks/{}", ["constraints", "constraints.*"], "domain/batch/tasks.py update"),
]

# Accepted on purpose though they change nothing in Shoal (listed in README.md with the reason).
NO_EFFECT: list[tuple[str, list[str], str]] = [
    (POOL_OPS, ["virtualMachineConfiguration.dataDisks.caching", "virtualMachineConfiguration.dataDisks.diskSizeGB",
                "virtualMachineConfiguration.dataDisks.managedDisk",
                "virtualMachineConfiguration.dataDisks.managedDisk.storageAccountType"],
     "a data disk is a directory on the node host: no host cache, one storage class, no size quota"),
]

# Known gaps: honoured only in part, each with what is missing (README.md lists them). Not refused, because what
# Shoal does is what most requests ask for, and the missing part is a default that cannot be refused.
GAPS: list[tuple[str, list[str], str]] = []

# Properties the facts do not list (below their depth, or missing from the stand-in the facts were rebuilt from)
# that the table refuses all the same.
BEYOND_FACTS = ["POST /jobs/{}/tasks body.outputFiles.destination.container.identityReference"]


def _walk(schema: dict[str, Any], prefix: str, out: dict[str, dict[str, Any]]) -> None:
    if "items" in schema:
        _walk(schema["items"], prefix, out)
        return
    for name, sub in schema.get("properties", {}).items():
        path = f"{prefix}.{name}" if prefix else name
        out[path] = sub
        _walk(sub, path, out)


def facts() -> dict[str, dict[str, dict[str, Any]]]:
    """operation ("POST /pools/{}") -> property path within the body -> its schema."""
    found: dict[str, dict[str, dict[str, Any]]] = {}
    for op in FACTS["operations"]["batch"][BATCH_VERSION]:
        if "body" in op:
            found[f"{op['method']} {op['path']}"] = props = {}
            _walk(op["body"], "", props)
    return found


def _matches(entries: list[tuple[str, list[str], str]], op: str, path: str) -> list[str]:
    return [f"{ops} {p}" for ops, paths, _ in entries for p in paths
            if fnmatch.fnmatchcase(op, ops) and fnmatch.fnmatchcase(path, p.rstrip("."))]


def test_every_property_is_honoured_or_refused() -> None:
    unclassified, used = [], set()
    for op, props in facts().items():
        table = REFUSED.get(op, {})
        for path in props:
            key = f"{op} body.{path}"
            if path in table or any(path.startswith(f"{r}.") and not table[r].accepts for r in table):
                continue
            hits = _matches(HONOURED, op, path) + _matches(NO_EFFECT, op, path) + _matches(GAPS, op, path)
            used.update(hits)
            if not hits:
                unclassified.append(key)
    depth = FACTS["maxDepth"]  # the facts stop there: an entry deeper down cannot match
    declared = {f"{ops} {p}" for ops, paths, _ in HONOURED + NO_EFFECT + GAPS for p in paths if p.count(".") < depth}
    stale = sorted(declared - used)
    assert not unclassified, "properties neither honoured nor refused:\n" + "\n".join(unclassified)
    assert not stale, "HONOURED / NO_EFFECT entries that match no property of the facts:\n" + "\n".join(stale)


def test_every_refusal_is_a_property_of_the_facts() -> None:
    known = facts()
    depth = FACTS["maxDepth"]
    stale = [f"{op} body.{path}" for op, table in REFUSED.items() for path in table
             if path not in known.get(op, {}) and f"{op} body.{path}" not in BEYOND_FACTS
             and not (path.count(".") >= depth and ".".join(path.split(".")[:depth]) in known.get(op, {}))]
    assert not stale, "refusals of properties Azure does not describe:\n" + "\n".join(stale)


def test_readme_lists_every_refusal() -> None:
    section = README.split("Refused, and why", 1)[-1]
    prefixes = r"^(jobSpecification\.|value\.|startTask\.|jobManagerTask\.|jobPreparationTask\.|jobReleaseTask\.)+"
    names = {re.sub(prefixes, "", path) for table in REFUSED.values() for path in table}
    names.update(p for _, paths, _ in NO_EFFECT for p in paths if not p.endswith("managedDisk"))
    names.update(re.sub(prefixes, "", p) for _, paths, _ in GAPS for p in paths)
    missing = sorted(n for n in names if f"`{n}`" not in section)
    assert "Refused, and why" in README
    assert not missing, "README.md's 'Refused, and why' does not name:\n" + "\n".join(missing)


# --- each refusal through a real server --------------------------------------------------------------------
BASES: dict[str, dict[str, Any]] = {
    "POST /pools": {"id": "spec-pool", "vmSize": "standard_d2s_v3", "virtualMachineConfiguration": {
        "imageReference": {"publisher": "shoal", "offer": "host", "sku": "host", "version": "latest"},
        "nodeAgentSKUId": "batch.node.debian 12"}},
    "POST /jobs": {"id": "spec-job", "poolInfo": {"poolId": "spec-pool"}},
    "POST /jobschedules": {"id": "spec-schedule", "schedule": {"recurrenceInterval": "PT1H"},
                           "jobSpecification": {"poolInfo": {"poolId": "spec-pool"}}},
    "POST /jobs/{}/tasks": {"id": "spec-task", "commandLine": "/bin/true"},
    "POST /jobs/{}/addtaskcollection": {"value": [{"id": "spec-task", "commandLine": "/bin/true"}]},
    "POST /pools/{}/updateproperties": {"metadata": [], "applicationPackageReferences": [],
                                        "startTask": {"commandLine": "/bin/true"}},
    "POST /pools/{}/nodes/{}/uploadbatchservicelogs": {"containerUrl": "https://127.0.0.1/containers/c?sig=x",
                                                       "startTime": "2026-01-01T00:00:00Z"},
}
def schema_of(op: str, path: str) -> dict[str, Any]:
    """The property's schema: the operation's, or where the facts stop short of it, the same property's in another
    operation (a job schedule's jobSpecification.X is a job's X)."""
    known = facts()
    if path in known.get(op, {}):
        return known[op][path]
    bare = re.sub(r"^(jobSpecification\.|value\.)", "", path)
    return next((props[bare] for props in known.values() if bare in props), {"type": "string"})


def sample(op: str, path: str, refusal: Refusal) -> Any:
    """A value of the property's type that asks for something (not one of the refusal's accepted values); an
    object gets a sub-property that is not refused in its own right (so that the 400 names this one)."""
    schema = schema_of(op, path)
    accepted = {str(a).lower() for a in refusal.accepts}
    kind = schema.get("type")
    if "enum" in schema or "enum" in schema.get("items", {}):
        enum = schema.get("enum") or schema["items"]["enum"]
        value = next(e for e in enum if e.lower() not in accepted)
        return [value] if "items" in schema else value
    if kind == "boolean":
        return "true" not in accepted
    if kind in ("integer", "number"):
        return 1
    if kind == "string":
        return "x"
    item = schema.get("items", schema)
    props = item.get("properties") or {}
    name = next((n for n in props if f"{path}.{n}" not in REFUSED.get(op, {})), None)
    value = {name: sample(op, f"{path}.{name}", Refusal(""))} if name else {"x": "x"}
    return [value] if "items" in schema else value


def request_body(op: str, path: str, refusal: Refusal) -> dict[str, Any]:
    """The operation's minimal body with the property set (lists along the way hold one item)."""
    body = json.loads(json.dumps(BASES.get(op, {})))
    node: Any = body
    parts = path.split(".")
    for i, part in enumerate(parts):
        if i == len(parts) - 1:
            node[part] = sample(op, path, refusal)
            break
        schema = schema_of(op, ".".join(parts[: i + 1]))
        child = node.get(part)
        if "items" in schema:
            child = child[0] if isinstance(child, list) and child else {}
            node[part] = [child]
        elif not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    return body


def url_path(op: str) -> tuple[str, str]:
    method, path = op.split(" ", 1)
    names = iter(["spec-pool" if path.startswith("/pools") else "spec-job" if path.startswith("/jobs/")
                  else "spec-schedule", "spec-node" if "/nodes/" in path else "spec-task", "spec-user"])
    return method, re.sub(r"\{\}", lambda _: next(names), path)


REFUSALS = sorted((op, path) for op, table in REFUSED.items() for path in table)


@pytest.fixture(scope="module")
def batch_url(shoal: Shoal) -> str:
    from azure.mgmt.resource.resources.models import ResourceGroup

    from batch_fixtures import create_account

    shoal.resource_client().resource_groups.create_or_update("spec", ResourceGroup(location="westus"))
    return f"https://{create_account(shoal, 'spec').account_endpoint}"


@pytest.fixture(scope="module")
def session(shoal: Shoal, server: ShoalServer) -> requests.Session:
    token = shoal.credential().get_token("https://batch.core.windows.net//.default").token
    out = requests.Session()
    out.headers["Authorization"] = f"Bearer {token}"
    out.verify = server.ca  # and per request: requests lets REQUESTS_CA_BUNDLE override a session's verify
    return out


@pytest.mark.parametrize(("op", "path"), REFUSALS, ids=[f"{op} {path}" for op, path in REFUSALS])
def test_a_refused_property_gets_a_400_naming_it(session: requests.Session, batch_url: str, op: str,
                                                 path: str) -> None:
    refusal = REFUSED[op][path]
    method, url = url_path(op)
    body = request_body(op, path, refusal)
    response = session.request(method, f"{batch_url}{url}?api-version={BATCH_VERSION}", json=body, timeout=30,
                               verify=session.verify)
    assert response.status_code == 400, f"{op} {json.dumps(body)} -> {response.status_code} {response.text}"
    error = response.json()
    values = {v["key"]: v["value"] for v in error.get("values", [])}
    assert (error["code"], values.get("PropertyName")) == ("InvalidPropertyValue", path), response.text
    assert path in error["message"]["value"] and "not supported by Shoal" in error["message"]["value"], \
        response.text
