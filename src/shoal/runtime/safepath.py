"""File operations beneath a directory that a machine controls, without following links at any step.

A node's temporary drive, task directories and disks are written by the node's root: any component of a path
in there may be a symlink (to ``/etc/shadow``, to ``/proc/1/root``...) or become one between a check and a use.
Everything the host does there resolves the path with ``openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
RESOLVE_NO_MAGICLINKS)`` (Linux >= 5.6), or, where that is missing, with a walk of ``O_NOFOLLOW`` directory
descriptors, and then acts on the descriptor it got: no check-then-open.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import stat
import struct
from collections.abc import Iterator
from pathlib import Path

_SYS_OPENAT2 = 437  # the same number on every architecture (added after the syscall tables were unified)
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_NO_SYMLINKS = 0x04
_RESOLVE_BENEATH = 0x08
_libc = ctypes.CDLL(None, use_errno=True)
_have_openat2: bool | None = None


class UnsafePath(OSError):
    """The path leaves its root, or goes through a link."""


def _parts(rel: str) -> list[str]:
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts) or any("\0" in p for p in parts):
        raise UnsafePath(errno.EINVAL, f"path {rel!r} leaves its directory")
    return parts


def _openat2(dirfd: int, rel: str, flags: int, mode: int) -> int:
    global _have_openat2
    how = struct.pack("QQQ", flags | os.O_CLOEXEC, mode if flags & os.O_CREAT else 0,
                      _RESOLVE_BENEATH | _RESOLVE_NO_SYMLINKS | _RESOLVE_NO_MAGICLINKS)
    buf = ctypes.create_string_buffer(how)
    fd = _libc.syscall(_SYS_OPENAT2, dirfd, os.fsencode(rel), buf, len(how))
    if fd < 0:
        err = ctypes.get_errno()
        if err == errno.ENOSYS:
            _have_openat2 = False
            return -1
        if err == errno.ELOOP or err == errno.EXDEV:
            raise UnsafePath(err, f"{rel}: goes through a link or leaves its directory")
        raise OSError(err, os.strerror(err), rel)
    _have_openat2 = True
    return int(fd)


def _walk_open(dirfd: int, parts: list[str], flags: int, mode: int) -> int:
    """The fallback: one O_NOFOLLOW directory at a time."""
    fd = os.dup(dirfd)
    try:
        for name in parts[:-1]:
            nxt = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = nxt
        return os.open(parts[-1], flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafePath(exc.errno, f"{'/'.join(parts)}: goes through a link") from exc
        raise
    finally:
        os.close(fd)


def open_beneath(root: Path | str, rel: str, flags: int = os.O_RDONLY, mode: int = 0o644) -> int:
    """A descriptor for ``root/rel`` (``rel`` relative to ``root``), opened without following any link."""
    parts = _parts(rel)
    rootfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if not parts:
            return os.dup(rootfd) if flags & (os.O_WRONLY | os.O_RDWR) == 0 else _fail_dir(rel)
        if _have_openat2 is not False:
            fd = _openat2(rootfd, "/".join(parts), flags, mode)
            if fd >= 0:
                return fd
        return _walk_open(rootfd, parts, flags, mode)
    finally:
        os.close(rootfd)


def _fail_dir(rel: str) -> int:
    raise IsADirectoryError(errno.EISDIR, "is a directory", rel)


@contextlib.contextmanager
def dir_beneath(root: Path | str, rel: str) -> Iterator[int]:
    fd = open_beneath(root, rel, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield fd
    finally:
        os.close(fd)


def makedirs_beneath(root: Path | str, rel: str, owner: tuple[int, int] | None = None, mode: int = 0o755,
                     *, own_existing: bool = False, tail: int = 1,
                     parents_owner: tuple[int, int] | None = None) -> None:
    """``mkdir -p root/rel`` without following links; directories it makes belong to ``owner``
    (``own_existing``: the last ``tail`` components too, if they were there already). With ``parents_owner``
    only the last ``tail`` components are ``owner``'s; the parents it makes are ``parents_owner``'s."""
    parts = _parts(rel)
    first_owned = len(parts) - tail
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for i, name in enumerate(parts):
            made = False
            try:
                os.mkdir(name, mode, dir_fd=fd)
                made = True
            except FileExistsError:
                pass
            try:
                nxt = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise UnsafePath(exc.errno, f"{'/'.join(parts[:i + 1])}: not a directory") from exc
                raise
            os.close(fd)
            fd = nxt
            who = owner if parents_owner is None or i >= first_owned else parents_owner
            if who is not None and (made or (own_existing and i >= first_owned)):
                os.fchown(fd, *who)
                os.fchmod(fd, mode)
    finally:
        os.close(fd)


def write_beneath(root: Path | str, rel: str, data: bytes, owner: tuple[int, int] | None = None) -> None:
    fd = open_beneath(root, rel, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        if owner is not None:
            os.fchown(fd, *owner)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def remove_beneath(root: Path | str, rel: str) -> None:
    """Remove ``root/rel`` (a file, or a directory tree) without following links; missing is fine."""
    parts = _parts(rel)
    if not parts:
        raise UnsafePath(errno.EINVAL, "refusing to remove the root itself")
    try:
        parent = open_beneath(root, "/".join(parts[:-1]), os.O_RDONLY | os.O_DIRECTORY) if parts[:-1] else \
            os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except (FileNotFoundError, UnsafePath):
        return
    try:
        st = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(parts[-1], dir_fd=parent)  # fd-based: never follows links inside
        else:
            os.unlink(parts[-1], dir_fd=parent)
    except FileNotFoundError:
        pass
    finally:
        os.close(parent)
