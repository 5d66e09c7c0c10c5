"""Batch application packages: applications and their versions, and what installing them on a node takes.

An application is a child resource of its Batch account (``.../batchAccounts/{a}/applications/{app}``, properties
``displayName``, ``allowUpdates``, ``defaultVersion``) and a package one of the application
(``.../applications/{app}/versions/{v}``); both are rows of the generic resources table. A package's bytes live in
a Shoal-served blob container of its own (``apppkg-<hash>``, see :mod:`shoal.domain.containers`): creating the
version hands out that container's signed blob URL as ``storageUrl``, a client PUTs the zip there as a block blob
(what ``az batch application package create`` does) and ``activate`` makes it usable (state ``Active``).

On a node a package is extracted to ``$AZ_BATCH_NODE_ROOT_DIR/applications/{app}{version}.{hash}`` (the hash of
its activated content, so an updated package gets a directory of its own) and named by
``AZ_BATCH_APP_PACKAGE_{app}_{version}`` (and ``AZ_BATCH_APP_PACKAGE_{app}`` when the reference asks for the
default version), with ``.``, ``-`` and ``#`` turned into ``_`` and the application id's case kept, as on Azure's
Linux nodes.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session

from shoal.core import errors, ids, timefmt
from shoal.core.clock import Clock
from shoal.domain import containers, resources
from shoal.domain.batch import nodes as node_rules
from shoal.store import models

APP_TYPE = "Microsoft.Batch/batchAccounts/applications"
VERSION_TYPE = "Microsoft.Batch/batchAccounts/applications/versions"
_APP_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_VERSION_NAME = re.compile(r"^[a-zA-Z0-9_.-]{1,64}$")
URL_LIFETIME = timedelta(hours=48)  # how long a storageUrl is said to be good for (Azure's is about as long)
APPS_DIR = f"{node_rules.NODE_ROOT}/applications"
BLOB = "package.zip"


# --- names --------------------------------------------------------------------------------------------------
def check_app_name(name: str) -> None:
    if not _APP_NAME.match(name):
        raise errors.InvalidParameter(f"The application name '{name}' is invalid: use 1-64 letters, digits, "
                                      "hyphens and underscores.", target="applicationName")


def check_version_name(name: str) -> None:
    if not _VERSION_NAME.match(name):
        raise errors.InvalidParameter(f"The version name '{name}' is invalid: use 1-64 letters, digits, hyphens, "
                                      "underscores and periods.", target="versionName")


def env_name(*parts: str) -> str:
    """``AZ_BATCH_APP_PACKAGE_{parts joined by _}`` with ``.``, ``-`` and ``#`` as ``_`` (Linux nodes)."""
    return "AZ_BATCH_APP_PACKAGE_" + "_".join(re.sub(r"[.#-]", "_", p) for p in parts)


def container_name(version_key: str) -> str:
    """The blob container that holds one package (one container each, so its URL grants that package only)."""
    return "apppkg-" + hashlib.sha256(version_key.encode()).hexdigest()[:40]


# --- rows ---------------------------------------------------------------------------------------------------
def app_id(account: models.Resource, app: str) -> ids.ResourceId:
    return ids.parse(account.id).child("applications", app)


def find_app(s: Session, account: models.Resource, app: str) -> models.Resource | None:
    row = resources.find(s, app_id(account, app))
    return row if row is not None and row.type_key == APP_TYPE.lower() else None


def get_app(s: Session, account: models.Resource, app: str) -> models.Resource:
    row = find_app(s, account, app)
    if row is None:
        raise errors.ApplicationNotFound(
            f"The specified application '{app}' does not exist in account '{account.name}'.")
    return row


def list_apps(s: Session, account: models.Resource) -> list[models.Resource]:
    return resources.list_of_type(s, account.subscription_id, APP_TYPE, parent=ids.parse(account.id))


def versions(s: Session, app: models.Resource) -> list[models.Resource]:
    return resources.list_of_type(s, app.subscription_id, VERSION_TYPE, parent=ids.parse(app.id))


def find_version(s: Session, app: models.Resource, version: str) -> models.Resource | None:
    row = resources.find(s, ids.parse(app.id).child("versions", version))
    return row if row is not None and row.type_key == VERSION_TYPE.lower() else None


def get_version(s: Session, app: models.Resource, version: str) -> models.Resource:
    row = find_version(s, app, version)
    if row is None:
        raise errors.ApplicationPackageNotFound(
            f"The specified application package '{app.name}' version '{version}' does not exist.")
    return row


def _app_props(s: Session, app: models.Resource | None, body: dict[str, Any]) -> dict[str, Any]:
    props = dict(body.get("properties") or {})
    out: dict[str, Any] = dict(app.properties) if app is not None else {"allowUpdates": True}
    if "displayName" in props:
        out["displayName"] = props["displayName"]
    if "allowUpdates" in props and props["allowUpdates"] is not None:
        if not isinstance(props["allowUpdates"], bool):
            raise errors.InvalidParameter("allowUpdates must be true or false.", target="allowUpdates")
        out["allowUpdates"] = props["allowUpdates"]
    if "defaultVersion" in props:
        default = props["defaultVersion"]
        if default:
            if app is None or find_version(s, app, str(default)) is None:
                raise errors.ApplicationPackageNotFound(
                    f"The default version '{default}' is not a package of this application.", target="defaultVersion")
            out["defaultVersion"] = str(default)
        else:
            out.pop("defaultVersion", None)
    return {k: v for k, v in out.items() if v is not None}


def put_app(s: Session, clock: Clock, account: models.Resource, app: str, body: dict[str, Any]
            ) -> models.Resource:
    check_app_name(app)
    row = find_app(s, account, app)
    if row is None:
        row = resources.create_row(s, clock, app_id(account, app), location=None,
                                   properties=_app_props(s, None, body), provisioning_state="Succeeded")
    else:
        row.properties = _app_props(s, row, body)
        resources.touch(row, clock)
    return row


def patch_app(s: Session, clock: Clock, account: models.Resource, app: str, body: dict[str, Any]
              ) -> models.Resource:
    row = get_app(s, account, app)
    row.properties = _app_props(s, row, body)
    resources.touch(row, clock)
    return row


def delete_app(s: Session, account: models.Resource, app: str) -> list[str] | None:
    """Delete an application and its packages; the containers to delete (None: there was none)."""
    row = find_app(s, account, app)
    if row is None:
        return None
    gone = []
    for version in versions(s, row):
        gone.append(str(version.internal.get("container") or ""))
        s.delete(version)
    s.delete(row)
    return [c for c in gone if c]


def put_version(s: Session, clock: Clock, account: models.Resource, app: str, version: str
                ) -> tuple[models.Resource, bool]:
    """Create (or, with ``allowUpdates``, renew) a package record; ``(row, created)``. The package is
    ``Pending`` until activated."""
    check_version_name(version)
    app_row = get_app(s, account, app)
    row = find_version(s, app_row, version)
    expiry = timefmt.format_timestamp(clock.now() + URL_LIFETIME)
    if row is not None:
        if row.properties.get("state") == "Active" and not app_row.properties.get("allowUpdates", True):
            raise errors.ApplicationUpdatesNotAllowed(
                f"The application '{app}' does not allow updates, and version '{version}' already exists.")
        row.properties = {**row.properties, "storageUrlExpiry": expiry}
        resources.touch(row, clock)
        return row, False
    rid = ids.parse(app_row.id).child("versions", version)
    row = resources.create_row(s, clock, rid, location=None, provisioning_state="Succeeded",
                               properties={"state": "Pending", "storageUrlExpiry": expiry},
                               internal={"container": container_name(rid.key), "blob": BLOB})
    return row, True


def activate(s: Session, clock: Clock, account: models.Resource, app: str, version: str, fmt: Any,
             digest: str | None) -> models.Resource:
    """Activate an uploaded package; ``digest``: the sha256 of the uploaded blob (None: nothing uploaded)."""
    if not isinstance(fmt, str) or fmt.lower() != "zip":
        raise errors.InvalidParameter("The package format must be 'zip'.", target="format")
    row = get_version(s, get_app(s, account, app), version)
    if digest is None:
        raise errors.ApplicationPackageBlobNotFound(
            f"The application package '{app}' version '{version}' has not been uploaded: PUT it to its "
            "storageUrl first.")
    row.properties = {**row.properties, "state": "Active", "format": "zip",
                      "lastActivationTime": timefmt.format_timestamp(clock.now())}
    row.internal = {**row.internal, "digest": digest}
    resources.touch(row, clock)
    return row


def delete_version(s: Session, account: models.Resource, app: str, version: str) -> str | None:
    """Delete a package; its container (None: there was no such package)."""
    app_row = find_app(s, account, app)
    row = find_version(s, app_row, version) if app_row is not None else None
    if row is None or app_row is None:
        return None
    if app_row.properties.get("defaultVersion") == row.name:
        app_row.properties = {k: v for k, v in app_row.properties.items() if k != "defaultVersion"}
    s.delete(row)
    return str(row.internal.get("container") or "") or None


# --- wire shapes --------------------------------------------------------------------------------------------
def blob_url(base_url: str, key: bytes, row: models.Resource) -> str:
    container = str(row.internal["container"])
    return (f"{base_url.rstrip('/')}/containers/{container}/{row.internal.get('blob') or BLOB}"
            f"?sig={containers.signature(key, container)}")


def render_app(row: models.Resource) -> dict[str, Any]:
    props = {"allowUpdates": bool(row.properties.get("allowUpdates", True))}
    for key in ("displayName", "defaultVersion"):
        if row.properties.get(key):
            props[key] = row.properties[key]
    return {"id": row.id, "name": row.name, "type": row.type, "etag": f'W/"{row.etag}"', "properties": props}


def render_version(row: models.Resource, base_url: str, key: bytes) -> dict[str, Any]:
    props = {k: row.properties[k] for k in ("state", "format", "lastActivationTime", "storageUrlExpiry")
             if row.properties.get(k)}
    props["storageUrl"] = blob_url(base_url, key, row)
    return {"id": row.id, "name": row.name, "type": row.type, "etag": f'W/"{row.etag}"', "properties": props}


def summary(s: Session, app: models.Resource) -> dict[str, Any] | None:
    """The data plane's ``ApplicationSummary``: only active packages (what references can use)."""
    active = [v.name for v in versions(s, app) if v.properties.get("state") == "Active"]
    if not active:
        return None
    return {"id": app.name, "displayName": app.properties.get("displayName") or app.name, "versions": active}


# --- references and installs --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Install:
    """One package to install on a node: where to fetch it and where it goes (plain data)."""

    label: str  # "app:version", as Azure names the reference in errors
    url: str
    directory: str
    env: dict[str, str]


def _ref_app(ref: Any) -> tuple[str, str | None]:
    if not isinstance(ref, dict):
        raise errors.InvalidPropertyValue("An application package reference must be an object.")
    app = str(ref.get("applicationId") or ref.get("id") or "")
    if "/applications/" in app.lower():  # the ARM form: the application's full resource id
        app = app.rstrip("/").rsplit("/", 1)[-1]
    version = ref.get("version")
    return app, str(version) if version else None


def resolve(s: Session, account: models.Resource, refs: Any, base_url: str, key: bytes
            ) -> tuple[list[Install], list[tuple[str, str]]]:
    """The installs for these references, and the references that cannot be satisfied
    (``(label, reason)``: no such application or version, not active, no default version)."""
    installs: list[Install] = []
    bad: list[tuple[str, str]] = []
    for ref in refs or []:
        app, version = _ref_app(ref)
        label = f"{app}:{version}" if version else app
        app_row = find_app(s, account, app) if _APP_NAME.match(app) else None
        if app_row is None:
            bad.append((label, f"The application '{app}' does not exist."))
            continue
        wanted = version or app_row.properties.get("defaultVersion")
        if not wanted:
            bad.append((label, f"The application '{app}' has no default version: name a version."))
            continue
        row = find_version(s, app_row, str(wanted))
        if row is None or row.properties.get("state") != "Active" or not row.internal.get("digest"):
            bad.append((label, f"The application package '{app}:{wanted}' does not exist or is not active."))
            continue
        directory = f"{APPS_DIR}/{app_row.name}{row.name}.{str(row.internal['digest'])[:16]}"
        env = {env_name(app_row.name, row.name): directory}
        if not version:
            env[env_name(app_row.name)] = directory
        installs.append(Install(f"{app_row.name}:{row.name}", blob_url(base_url, key, row), directory, env))
    return installs, bad


def check_pool_references(s: Session, account: models.Resource, refs: Any) -> None:
    """A pool's references must all name active packages (409 ``InvalidApplicationPackageReferences``)."""
    if not refs:
        return
    if not isinstance(refs, list):
        raise errors.InvalidPropertyValue("applicationPackageReferences must be a list.",
                                          values={"PropertyName": "applicationPackageReferences"})
    _, bad = resolve(s, account, refs, "", b"")
    if bad:
        raise errors.InvalidApplicationPackageReferences(
            "One or more of the specified application package references are invalid.",
            values={label: reason for label, reason in bad})


def environment(installs: list[Install]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in installs:
        env.update(item.env)
    return env


def node_error(bad: list[tuple[str, str]]) -> dict[str, Any]:
    """The node error of a pool whose packages cannot be installed (the node goes unusable)."""
    return {"code": "ApplicationPackageError",
            "message": "One or more application packages specified for the pool are invalid",
            "errorDetails": [d for label, reason in bad for d in (
                {"name": "ApplicationPackageReference", "value": label}, {"name": "Message", "value": reason})]}


def task_failure(bad: list[tuple[str, str]]) -> dict[str, Any]:
    """The failure of a task whose packages cannot be installed (a pre-processing error)."""
    return {"category": "usererror", "code": "ApplicationPackageError",
            "message": "One or more application packages specified for the task are invalid",
            "details": [d for label, reason in bad for d in (
                {"name": "ApplicationPackageReference", "value": label}, {"name": "Message", "value": reason})]}


# The node agent's extraction, run inside the node with its python3: the zip into a fresh directory renamed into
# place (so concurrent installs and crashes never leave half a package), Unix modes kept as unzip keeps them.
EXTRACT = r"""
import os, shutil, sys, tempfile, zipfile
src, dest = sys.argv[1], sys.argv[2]
if not os.path.isdir(dest):
    tmp = tempfile.mkdtemp(prefix=".extract-", dir=os.path.dirname(dest))
    try:
        with zipfile.ZipFile(src) as z:
            for info in z.infolist():
                path = z.extract(info, tmp)
                mode = (info.external_attr >> 16) & 0o7777
                if mode and not info.is_dir():
                    os.chmod(path, mode)
        os.chmod(tmp, 0o755)
        os.rename(tmp, dest)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not os.path.isdir(dest):
            raise
    except zipfile.BadZipFile as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        sys.exit("not a zip file: %s" % exc)
try:
    os.unlink(src)
except OSError:
    pass
"""
