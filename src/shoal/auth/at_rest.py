"""Secrets at rest: who may read the state directory and the files that hold secrets.

The state directory is 0700 (0701 when the process runtime runs machine commands as an unprivileged host user:
that user must traverse it to reach the store, never list it). The database file, the token signing key, the
TLS private keys and the credentials file are 0600, whoever made them and whenever.

The token signing key is a file of its own (``--signing-key FILE``, by default ``signing-key.pem`` in the state
directory), never a database row: whoever can read the database must not be able to mint Owner tokens.
Several servers on one database share it by pointing ``--signing-key`` at the same file. A key found in the
database (state from before this rule) moves to the file once and leaves the database.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from collections.abc import Callable, Iterable
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from shoal.auth.tokens import SigningKeyPair

PRIVATE = 0o600


class SecretFileError(Exception):
    """A secret file cannot be used (the message says which and what to do)."""


def lock_down_state_dir(state_dir: Path, *, traversable: bool = False) -> None:
    """Make the state directory private to the user running Shoal (0700; 0701 if ``traversable``)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    want = 0o701 if traversable else 0o700
    if state_dir.stat().st_uid == os.geteuid() and stat.S_IMODE(state_dir.stat().st_mode) & 0o077 != want & 0o077:
        os.chmod(state_dir, want)


def make_private(paths: Iterable[Path]) -> None:
    """0600 for every existing file among ``paths`` (files from older versions, or made with another umask)."""
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) != PRIVATE:
                os.chmod(path, PRIVATE)


def create_private_file(path: Path) -> None:
    """Create an empty file readable by its owner only, unless it exists (then it is made 0600)."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE))
    except FileExistsError:
        make_private([path])


def key_id(key: rsa.RSAPrivateKey) -> str:
    """A key's id from its public half (RFC 7638 style): servers sharing one key file agree on it."""
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()[:32]


def load_signing_key(path: Path, legacy: Callable[[], str | None] = lambda: None) -> SigningKeyPair:
    """The token signing key in ``path``: read it, or create it (from ``legacy()``, a PEM the database held,
    or a new key). The file is written 0600 and atomically: a reader never sees half a key."""
    try:
        pem = path.read_bytes()
    except FileNotFoundError:
        pem = None
    except OSError as exc:
        raise SecretFileError(f"cannot read the signing key {path}: {exc}") from exc
    if pem is None:
        old = legacy()
        key = (serialization.load_pem_private_key(old.encode(), password=None) if old
               else rsa.generate_private_key(public_exponent=65537, key_size=2048))
        if not isinstance(key, rsa.RSAPrivateKey):
            raise SecretFileError("the signing key kept in the database is not an RSA key")
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # never replaces a key another server wrote meanwhile
        except FileExistsError:
            pem = path.read_bytes()
        finally:
            tmp.unlink(missing_ok=True)
    make_private([path])
    try:
        loaded = serialization.load_pem_private_key(pem, password=None)
    except ValueError as exc:
        raise SecretFileError(f"{path} does not hold a PEM private key: {exc}") from exc
    if not isinstance(loaded, rsa.RSAPrivateKey):
        raise SecretFileError(f"{path} holds a private key that is not RSA: tokens are signed with RS256")
    return SigningKeyPair(key_id(loaded), loaded)
