"""Installing application packages on a node, as Azure's node agent does: each package is fetched inside the node
through the transfer worker (the node's network, Shoal's signed container URL), extracted there by the node's
``python3`` into ``$AZ_BATCH_NODE_ROOT_DIR/applications/...``, once per node and package content.

Pools install theirs when a node starts (before its start task; a package that cannot be installed makes the node
``unusable`` with ``ApplicationPackageError``), tasks theirs before they run (the task fails with that code).
"""

from __future__ import annotations

from typing import Any

from shoal.core.hosterrors import TransferError
from shoal.domain import containers
from shoal.domain.batch import applications
from shoal.domain.host import HostAgent
from shoal.store import models
from shoal.store.db import Database

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def has_start_work(pool: models.Pool) -> bool:
    """Whether a node of this pool has work to do between booting and idle (a start task, packages)."""
    return bool(pool.spec.get("startTask") or pool.spec.get("applicationPackageReferences"))


def resolve(db: Database, account_key: str, refs: Any, base_url: str
            ) -> tuple[list[applications.Install], list[tuple[str, str]]]:
    """The installs of these references, and the ones that cannot be satisfied."""
    if not refs:
        return [], []
    with db.write() as s:  # the container signing key is made on first use
        key = containers.signing_key(s)
        account = s.get(models.Resource, account_key)
        if account is None:
            return [], [(str(r), "The Batch account no longer exists.") for r in refs]
        return applications.resolve(s, account, refs, base_url, key)


def install(agent: HostAgent, machine: str, installs: list[applications.Install]) -> None:
    """Fetch and extract each package into its directory (skipped when it is there already); a failure raises
    :class:`TransferError` with Azure's ``ApplicationPackageError``."""
    if not installs:
        return
    agent.make_dirs(machine, [applications.APPS_DIR])
    for item in installs:
        name = item.directory.rsplit("/", 1)[-1]
        try:
            check = agent.run(machine, ["python3", "-I", "-c", "import os,sys; sys.exit(0 if os.path.isdir("
                                        "sys.argv[1]) else 1)", item.directory], env={"PATH": PATH},
                              cwd=applications.APPS_DIR, timeout=60)
            if int(check.get("exitCode", 1)) == 0:
                continue
            zip_name = f".{name}.zip"
            agent.download_resource(machine, {"httpUrl": item.url, "filePath": zip_name, "fileMode": "0600"},
                                    applications.APPS_DIR, None)
            result = agent.run(machine, ["python3", "-I", "-c", applications.EXTRACT, zip_name, item.directory],
                               env={"PATH": PATH, "LANG": "C.UTF-8"}, cwd=applications.APPS_DIR, timeout=3600)
        except TransferError as exc:
            raise TransferError("ApplicationPackageError", f"Installing the application package {item.label} "
                                f"failed: {exc.message}", exc.category,
                                (("ApplicationPackageReference", item.label), ("Message", exc.message))) from None
        if int(result.get("exitCode", -1)) != 0:
            stderr = result.get("stderr") or b""
            text = stderr.decode(errors="replace") if isinstance(stderr, bytes) else str(stderr)
            message = (text.strip()[-500:] or str(result.get("error") or "")) or f"exit code {result.get('exitCode')}"
            raise TransferError("ApplicationPackageError", f"Extracting the application package {item.label} "
                                f"failed: {message}", "usererror",
                                (("ApplicationPackageReference", item.label), ("Message", message)))
