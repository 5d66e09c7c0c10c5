"""A pool's ``mountConfiguration``: what each node mounts at ``$AZ_BATCH_NODE_MOUNTS_DIR/{relativeMountPath}``.

Azure mounts four kinds of file systems on every node of a pool; Shoal mounts them as follows.

- ``azureBlobFileSystemConfiguration`` of a **Shoal container**: the container's directory (its blobs are plain
  files, ``runtime/blobs.py``) is bind-mounted read-write into the node, so blobs written before are read there
  and what a task writes is a blob at once (no cache to flush, nothing to write back later). Shoal's
  containers belong to one storage account, named :data:`SHOAL_STORAGE_ACCOUNT`; its credential is the
  container's SAS, the ``sig=...`` query of its URL (``shoal container url NAME``), given as ``sasKey``. Other
  accounts, ``accountKey`` (Shoal's storage has no account keys) and ``identityReference`` cannot be honoured:
  they are refused with a 400 naming the property. A wrong ``sasKey`` or a container that does not exist is
  what Azure finds only on the node: the node goes ``unusable`` with ``MountConfigurationError``.
- ``nfsMountConfiguration``, ``cifsMountConfiguration``, ``azureFileShareConfiguration`` (SMB, the kernel's cifs
  client): mounted by the host in the node where the host kernel has the client; where it is missing the node
  goes ``unusable`` with ``MountConfigurationError`` naming it (see ``runtime/mounts.py``).

``relativeMountPath`` is hostile input: absolute paths, ``..``, ``.`` and empty segments are refused here; the
host agent then makes the mount point without following any link the node may have left on its drive.

Pure rules: :func:`validate` (at pool creation), :func:`plan` (what the host agent mounts at each boot),
:func:`credential_problems` (the SAS check) and :func:`node_error` (Azure's node error).
"""

from __future__ import annotations

import itertools
import re
import shlex
from typing import Any
from urllib.parse import parse_qs

from sqlalchemy.orm import Session

from shoal.core import errors
from shoal.domain import containers, identity
from shoal.domain.batch import pools

# The name Shoal's own storage answers to as an ``accountName``: its containers are ``{base}/containers/{name}``.
SHOAL_STORAGE_ACCOUNT = "shoal"
MOUNTS_DIR = "/mnt/batch/tasks/fsmounts"  # AZ_BATCH_NODE_MOUNTS_DIR on a Linux node

KINDS = {"azureBlobFileSystemConfiguration": "blob", "nfsMountConfiguration": "nfs",
         "cifsMountConfiguration": "cifs", "azureFileShareConfiguration": "azurefiles"}
_REQUIRED = {"azureBlobFileSystemConfiguration": ("accountName", "containerName", "relativeMountPath"),
             "nfsMountConfiguration": ("source", "relativeMountPath"),
             "cifsMountConfiguration": ("source", "relativeMountPath", "password"),
             "azureFileShareConfiguration": ("accountName", "azureFileUrl", "accountKey", "relativeMountPath")}
_SEGMENT = re.compile(r"[^/\\\x00-\x1f\x7f]{1,255}")
# blobfuse options that tune blobfuse's own cache: a bind of the container's files has no cache, so each is
# honoured by construction. ``-o ro`` makes the mount read-only; ``allow_other``/``default_permissions`` are
# what a bind does anyway (every user of the node reaches the files, as their modes allow).
_FUSE_OPTS = re.compile(r"(ro|rw|allow_other|default_permissions|(attr|entry|negative)_timeout=\d+)")
_BLOBFUSE_FLAGS = re.compile(r"--(file-cache-timeout-in-seconds=\d+|cache-size-mb=\d+|use-attr-cache=(true|false)"
                             r"|use-https=true|log-level=LOG_[A-Z]+|tmp-path=\S+)")


def validate(value: Any) -> None:
    """Refuse (400, naming the property) a mount configuration Shoal cannot honour."""
    if value is None:
        return
    if not isinstance(value, list):
        raise pools.bad_value("mountConfiguration", value, "a list of mount configurations is required")
    seen: list[tuple[str, ...]] = []
    for i, entry in enumerate(value):
        prop = f"mountConfiguration[{i}]"
        given = [k for k, v in (entry.items() if isinstance(entry, dict) else []) if v is not None]
        if len(given) != 1 or given[0] not in KINDS:
            raise pools.bad_value(prop, given or entry, "exactly one of " + ", ".join(KINDS) + " is required")
        kind = given[0]
        config = entry[kind]
        prop = f"{prop}.{kind}"
        if not isinstance(config, dict):
            raise pools.bad_value(prop, config, "an object is required")
        for name in _REQUIRED[kind]:
            if not config.get(name):
                raise pools.missing(f"{prop}.{name}")
        parts = relative_parts(config["relativeMountPath"], f"{prop}.relativeMountPath")
        for other in seen:
            if parts[:len(other)] == other or other[:len(parts)] == parts:
                raise pools.bad_value(f"{prop}.relativeMountPath", config["relativeMountPath"],
                                      "another mount uses this path, or a path inside it or around it")
        seen.append(parts)
        if kind == "azureBlobFileSystemConfiguration":
            _validate_blob(config, prop)
        elif kind == "cifsMountConfiguration" and not (config.get("username") or config.get("userName")):
            raise pools.missing(f"{prop}.username")


def relative_parts(path: Any, prop: str) -> tuple[str, ...]:
    """The segments of a ``relativeMountPath``; anything that could leave the mounts directory is refused."""
    if not isinstance(path, str) or path.startswith("/"):
        raise pools.bad_value(prop, path, "a relative path inside AZ_BATCH_NODE_MOUNTS_DIR is required")
    parts = tuple(path.split("/"))
    if any(p in (".", "..") or not _SEGMENT.fullmatch(p) for p in parts):
        raise pools.bad_value(prop, path, "use '/'-separated names without '.', '..', empty segments, backslashes "
                              "or control characters: the path must stay inside AZ_BATCH_NODE_MOUNTS_DIR")
    return parts


def _validate_blob(config: dict[str, Any], prop: str) -> None:
    if config["accountName"] != SHOAL_STORAGE_ACCOUNT:
        raise pools.bad_value(f"{prop}.accountName", config["accountName"],
                              f"Shoal mounts only its own containers, of the storage account "
                              f"'{SHOAL_STORAGE_ACCOUNT}' (shoal container url NAME)")
    try:
        containers.check_name(str(config["containerName"]))
    except errors.AzureError as exc:
        raise pools.bad_value(f"{prop}.containerName", config["containerName"], exc.message) from exc
    if config.get("accountKey"):
        raise pools.bad_value(f"{prop}.accountKey", "(hidden)", "Shoal's storage has no account keys: give the "
                              "container URL's SAS (its sig=... query) as sasKey")
    if config.get("identityReference"):
        raise pools.bad_value(f"{prop}.identityReference", config["identityReference"],
                              "managed identities cannot reach Shoal's containers: give the container URL's SAS as "
                              "sasKey")
    if not config.get("sasKey"):
        raise pools.missing(f"{prop}.sasKey")
    options = config.get("blobfuseOptions") or ""
    try:
        tokens = shlex.split(str(options))
    except ValueError as exc:
        raise pools.bad_value(f"{prop}.blobfuseOptions", options, str(exc)) from exc
    it = iter(tokens)
    for token in it:
        if token == "-o":
            opts = next(it, "")
            bad = [o or "-o without options" for o in opts.split(",") if not _FUSE_OPTS.fullmatch(o)]
        else:
            bad = [] if _BLOBFUSE_FLAGS.fullmatch(token) else [token]
        if bad:
            raise pools.bad_value(f"{prop}.blobfuseOptions", options,
                                  f"Shoal cannot apply {', '.join(bad)}: it binds the "
                                  "container's files into the node (only -o ro, allow_other, default_permissions, "
                                  "timeouts and cache options apply)")


def _read_only(config: dict[str, Any]) -> bool:
    tokens = shlex.split(str(config.get("blobfuseOptions") or ""))
    return any(a == "-o" and "ro" in b.split(",") for a, b in itertools.pairwise(tokens))


def sas_signature(sas_key: str) -> str | None:
    """The ``sig`` of a SAS given as ``sasKey`` (``sig=...``, ``?sig=...`` or a whole query)."""
    found = parse_qs(str(sas_key).lstrip("?")).get("sig")
    return found[0] if found else None


def plan(value: Any) -> list[dict[str, Any]]:
    """What the host agent mounts in a node (plain data): ``{"kind", "path" (inside the node), ...}``."""
    mounts: list[dict[str, Any]] = []
    for entry in value or []:
        kind = next(k for k, v in entry.items() if v is not None)
        config = entry[kind]
        path = f"{MOUNTS_DIR}/{config['relativeMountPath']}"
        if kind == "azureBlobFileSystemConfiguration":
            mounts.append({"kind": "blob", "path": path, "container": config["containerName"],
                           "readOnly": _read_only(config)})
        elif kind == "azureFileShareConfiguration":  # an SMB share: the account's name and key log in
            mounts.append({"kind": "azurefiles", "path": path, "source": config["azureFileUrl"],
                           "options": config.get("mountOptions") or "", "username": config["accountName"],
                           "password": config["accountKey"]})
        else:
            mount = {"kind": KINDS[kind], "path": path, "source": config["source"],
                     "options": config.get("mountOptions") or ""}
            if kind == "cifsMountConfiguration":
                mount |= {"username": config.get("username") or config.get("userName"),
                          "password": config["password"]}
            mounts.append(mount)
    return mounts


def credential_problems(value: Any, key: bytes | None) -> list[tuple[str, str]]:
    """``(path, reason)`` of the blob mounts whose ``sasKey`` does not grant their container (``key``: Shoal's
    container signing key, None when no container URL was ever made)."""
    problems = []
    for entry in value or []:
        config = entry.get("azureBlobFileSystemConfiguration")
        if config is None:
            continue
        sig = sas_signature(config.get("sasKey") or "")
        if key is None or not containers.verify(key, str(config["containerName"]), sig):
            problems.append((f"{MOUNTS_DIR}/{config['relativeMountPath']}",
                             f"the sasKey does not grant access to the container '{config['containerName']}' of "
                             f"the storage account '{config['accountName']}' (AuthenticationFailed)"))
    return problems


def node_error(path: str, reason: str) -> dict[str, Any]:
    """The node error of a mount that failed, as Azure reports it (the node is then ``unusable``)."""
    return {"code": "MountConfigurationError",
            "message": f"Mount configuration error: the file system at {path} could not be mounted: {reason}.",
            "errorDetails": [{"name": "MountPath", "value": path}, {"name": "Reason", "value": reason}]}


def container_key(session: Session) -> bytes | None:
    """Shoal's container signing key, if a container URL was ever made (read only: no key, no valid sasKey)."""
    value = identity.get_setting(session, containers.KEY_SETTING)
    return bytes.fromhex(value) if value else None
