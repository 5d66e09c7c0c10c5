"""Shoal-served blob containers: names, blob paths and the signature that grants access to a container.

A container URL is ``{base}/containers/{name}?sig=...``, a shared-access URL like an Azure Storage SAS: the
signature is an HMAC of the container name under a key kept in the database, so the URL works for anyone who has
it (task output files, resource files, a user's browser) and for nothing else. ``shoal container url`` prints one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qs, urlsplit

from sqlalchemy.orm import Session

from shoal.core import errors
from shoal.domain import identity

KEY_SETTING = "containerSigningKey"
_NAME = re.compile(r"^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$")


class Blob(Protocol):
    """A blob as a listing shows it."""

    @property
    def name(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def modified(self) -> float: ...


class BlobContainers(Protocol):
    """Where the blobs of Shoal-served containers are kept (``runtime/blobs.py``: files below the state
    directory, on the server's own machine). Names reach it checked by :func:`check_name` and
    :func:`check_blob_name`; ``parts`` are a blob name's segments."""

    def container_dir(self, container: str) -> Path: ...
    def create_container(self, container: str) -> bool: ...
    def delete_container(self, container: str) -> bool: ...
    def put(self, container: str, parts: list[str], data: Iterator[bytes]) -> Blob: ...
    def find(self, container: str, parts: list[str]) -> Path | None: ...
    def delete(self, container: str, parts: list[str]) -> bool: ...
    def list(self, container: str, prefix: str = "") -> Sequence[Blob]: ...


def signing_key(session: Session) -> bytes:
    """The key behind container signatures (created on first use)."""
    value = identity.get_setting(session, KEY_SETTING)
    if value is None:
        value = secrets.token_hex(32)
        identity.set_setting(session, KEY_SETTING, value)
    return bytes.fromhex(value)


def check_name(name: str) -> None:
    if not _NAME.match(name):
        raise errors.InvalidResourceName(f"The container name '{name}' is invalid: use 3-63 lowercase letters, digits "
                                         "and single hyphens, starting and ending with a letter or digit.")


def check_blob_name(name: str) -> list[str]:
    """The blob's path segments; a name that could leave its container ('..', empty segments) is refused."""
    parts = name.split("/")
    if not name or len(name) > 1024 or any(p in ("", ".", "..") for p in parts) or "\\" in name or "\0" in name:
        raise errors.InvalidResourceName(f"The blob name '{name}' is invalid: use '/'-separated segments without '.', "
                                         "'..' or empty segments.")
    return parts


def signature(key: bytes, container: str) -> str:
    digest = hmac.new(key, f"container:{container}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def verify(key: bytes, container: str, sig: str | None) -> bool:
    return bool(sig) and hmac.compare_digest(signature(key, container), str(sig))


def url(base_url: str, container: str, key: bytes) -> str:
    return f"{base_url.rstrip('/')}/containers/{container}?sig={signature(key, container)}"


def parse_own_url(base_url: str, container_url: str) -> tuple[str, str, str | None] | None:
    """``(container, blob prefix, sig)`` when ``container_url`` points at this Shoal's containers, else None."""
    parts = urlsplit(container_url)
    own = urlsplit(base_url)
    if (parts.scheme, parts.netloc) != (own.scheme, own.netloc) or not parts.path.startswith("/containers/"):
        return None
    container, _, rest = parts.path[len("/containers/"):].partition("/")
    sigs = parse_qs(parts.query).get("sig")
    sig = sigs[0] if sigs else None
    return container, rest, sig
