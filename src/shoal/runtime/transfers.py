"""Task file transfers: resource files into a task's working directory, output files out of the node.

Every transfer runs inside the node, as the task's user, in the node's network: the host agent starts
``transfer_worker.py`` there with the node's own ``python3`` (what Azure's node agent does for a task). So a
``file://`` URL names a file of the node, read or written with the task's rights; no host file is reachable,
and no host service either (the node's network does not reach the host's loopback, and the worker refuses
loopback, link-local and metadata addresses). Shoal's own signed container and disk URLs are rewritten to the
address where the node reaches Shoal (its gateway) and allowed there, so they keep working: the node fetches
and uploads them over HTTPS, and Shoal checks their signatures as it does for anyone.

Operators who want nodes to read a host directory share it with ``--share-host-dir`` (bind-mounted read-only
into every node at the same path): ``file://`` URLs then reach it inside the node.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from shoal.core.hosterrors import TransferError

WORKER = Path(__file__).with_name("transfer_worker.py")
TIMEOUT = 3600.0  # one transfer job (one resourceFiles or outputFiles entry)
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# run(machine_id, argv, env=, cwd=, user=, stdin=, timeout=) -> {"exitCode", "stdout", "stderr", "error"...}
Runner = Callable[..., dict[str, Any]]


class Transfers:
    def __init__(self, run: Runner, base_url: str, node_base_url: Callable[[], str], *,
                 ca_bundle: Path | None = None) -> None:
        """``base_url``: the origin of Shoal's own URLs as clients got them; ``node_base_url()``: where nodes
        reach the same endpoint."""
        self._run, self.base_url, self._node_base_url, self.ca_bundle = run, base_url.rstrip("/"), node_base_url, \
            ca_bundle
        self._source = WORKER.read_text()

    # --- the two operations ------------------------------------------------------------------------------------
    def download(self, machine: str, resource: dict[str, Any], wd: str, user: str | None) -> list[str]:
        """Fetch one ``resourceFiles`` entry into ``wd`` (a path inside the node) as ``user`` (None: the node's
        root); returns the files written, relative to ``wd``."""
        resource = {k: self._for_node(v) if k in ("httpUrl", "storageContainerUrl") and isinstance(v, str) else v
                    for k, v in resource.items()}
        return list(self._job(machine, {"op": "download", "resource": resource}, wd, user)["files"])

    def upload(self, machine: str, output: dict[str, Any], env: dict[str, str], user: str | None,
               log: Callable[[str], None]) -> int:
        """Upload the files one ``outputFiles`` entry matches (its pattern is a path in the node, relative ones
        to the task's working directory, environment variables expanded); returns how many went."""
        wd = env.get("AZ_BATCH_TASK_WORKING_DIR", "/")
        pattern = expand(str(output.get("filePattern") or ""), env)
        pattern = pattern if pattern.startswith("/") else f"{wd.rstrip('/')}/{pattern}"
        destination = json.loads(json.dumps(output.get("destination") or {}))
        container = destination.get("container") or {}
        if isinstance(container.get("containerUrl"), str):
            container["containerUrl"] = self._for_node(container["containerUrl"])
        out = self._job(machine, {"op": "upload", "pattern": pattern, "destination": destination}, wd, user)
        for line in out.get("log") or []:
            log(str(line).replace(self._node_base_url().rstrip("/"), self.base_url))
        return int(out.get("files") or 0)

    # --- running the worker -----------------------------------------------------------------------------------
    def _for_node(self, url: str) -> str:
        """Shoal's own URLs as the node reaches them."""
        if url == self.base_url or url.startswith(self.base_url + "/"):
            return self._node_base_url().rstrip("/") + url[len(self.base_url):]
        return url

    def _job(self, machine: str, job: dict[str, Any], cwd: str, user: str | None) -> dict[str, Any]:
        own = urlsplit(self._node_base_url())
        job = {**job, "allow": [f"{own.hostname}:{own.port or 443}"],
               "ca": self.ca_bundle.read_text() if self.ca_bundle is not None and self.ca_bundle.exists() else None}
        result = self._run(machine, ["python3", "-I", "-c", self._source], env={"PATH": PATH, "LANG": "C.UTF-8"},
                           cwd=cwd, user=user, stdin=json.dumps(job).encode(), timeout=TIMEOUT)
        code = result.get("exitCode")
        if code in (126, 127) or (code == 125 and "python3" in str(result.get("error") or "")):
            raise TransferError("NodeAgentUnavailable", "The node's image has no usable python3, which Shoal's node "
                                "agent needs to transfer task files: install python3 in the image.", "servererror")
        lines = (result.get("stdout") or b"").decode(errors="replace").strip().splitlines()
        try:
            out = json.loads(lines[-1]) if lines else None
        except json.JSONDecodeError:
            out = None
        if result.get("timedOut"):
            raise TransferError("TransferTimedOut", f"The file transfer did not finish within {int(TIMEOUT)} s.",
                                "servererror")
        if not isinstance(out, dict):
            stderr = (result.get("stderr") or b"").decode(errors="replace").strip()[-2000:]
            raise TransferError("NodeAgentFailed", f"The node's transfer agent failed (exit code {code}): "
                                f"{stderr or result.get('error') or 'no output'}", "servererror")
        if not out.get("ok"):
            error = out.get("error") or {}
            raise TransferError(str(error.get("code") or "NodeAgentFailed"), str(error.get("message") or ""),
                                str(error.get("category") or "usererror"),
                                tuple((str(d.get("name")), str(d.get("value"))) for d in error.get("details") or []))
        return out


def expand(pattern: str, env: dict[str, str]) -> str:
    """``$VAR``, ``${VAR}`` and ``%VAR%`` from the task's environment (unknown ones stay as they are)."""
    return re.sub(r"\$\{(\w+)\}|\$(\w+)|%(\w+)%",
                  lambda m: env.get(m.group(1) or m.group(2) or m.group(3), m.group(0)), pattern)
