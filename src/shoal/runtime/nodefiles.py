"""Node and task files as the Batch file API sees them: list, stat, read (with a byte range) and delete.

Everything below a node's temporary drive is written by the node: any component of a path may be a symlink,
or become one between two requests or two system calls. Every operation here opens the path beneath the
drive's host directory without following any link at any step (``safepath``), then works on that descriptor
only (``fstat``, ``pread``, ``scandir`` of the descriptor, ``unlinkat`` relative to the parent's descriptor):
no check-then-open, so a link swapped in at any moment leads nowhere. Only regular files and directories are
served; a fifo, a socket or a device node is "not found" (opening one is non-blocking and reads nothing).

Calls take and return plain data (a host directory, relative paths, dicts and bytes): a remote host agent
serves the same calls.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from shoal.core.hostfiles import NodeFileError
from shoal.runtime import safepath

HIDDEN_PREFIX = ".shoal"  # Shoal's own bookkeeping in task directories (an attempt's exit file)
MAX_ENTRIES = 100_000  # a listing stops here: a node cannot make a request take unbounded time and memory
_OPEN = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY


def _rel(*parts: str) -> str:
    joined = "/".join(p.strip("/") for p in parts if p.strip("/"))
    for name in joined.split("/"):
        if name == ".." or "\0" in name:
            raise NodeFileError("invalid", "the path must stay inside the directory and hold no NUL")
        if name.startswith(HIDDEN_PREFIX):
            raise NodeFileError("notfound", "The specified file does not exist.")
    return joined


def _open(base: Path, rel: str) -> int:
    try:
        return safepath.open_beneath(base, rel, _OPEN)
    except safepath.UnsafePath:
        raise NodeFileError("notfound", "The specified file does not exist.") from None
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EACCES, errno.ENXIO):
            raise NodeFileError("notfound", "The specified file does not exist.") from None
        raise


def _info(st: os.stat_result, name: str) -> dict[str, Any]:
    is_dir = stat.S_ISDIR(st.st_mode)
    return {"name": name, "isDirectory": is_dir, "size": 0 if is_dir else st.st_size, "mtime": st.st_mtime,
            "ctime": st.st_ctime, "mode": stat.S_IMODE(st.st_mode)}


def _served(st: os.stat_result) -> bool:
    return stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)


def stat_file(base: Path, root: str, path: str) -> dict[str, Any]:
    """What one file or directory is (``root``/``path`` relative to ``base``)."""
    fd = _open(base, _rel(root, path))
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    if not _served(st):
        raise NodeFileError("notfound", "The specified file does not exist.")
    return _info(st, path.strip("/"))


def read_file(base: Path, root: str, path: str, start: int = 0, end: int | None = None) -> tuple[
        dict[str, Any], bytes]:
    """A file's info and its bytes ``start``..``end`` (inclusive; None: to the end), read from one descriptor.
    A directory reads as nothing."""
    fd = _open(base, _rel(root, path))
    try:
        st = os.fstat(fd)
        if not _served(st):
            raise NodeFileError("notfound", "The specified file does not exist.")
        info = _info(st, path.strip("/"))
        if info["isDirectory"]:
            return info, b""
        last = st.st_size - 1 if end is None else min(end, st.st_size - 1)
        chunks, offset = [], max(0, start)
        while offset <= last:
            chunk = os.pread(fd, min(1 << 20, last - offset + 1), offset)
            if not chunk:
                break  # it shrank meanwhile: what there is
            chunks.append(chunk)
            offset += len(chunk)
        return info, b"".join(chunks)
    finally:
        os.close(fd)


def list_files(base: Path, root: str, *, recursive: bool) -> list[dict[str, Any]]:
    """Files and directories below ``root`` (names relative to it), sorted; links and Shoal's own files are
    left out. A missing root lists as empty."""
    try:
        fd = _open(base, _rel(root))
    except NodeFileError:
        return []
    try:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            return []
        out = list(_walk(fd, "", recursive))
    finally:
        os.close(fd)
    return sorted(out, key=lambda i: i["name"])


def _walk(dirfd: int, prefix: str, recursive: bool, budget: list[int] | None = None) -> Iterator[dict[str, Any]]:
    budget = budget if budget is not None else [MAX_ENTRIES]
    with os.scandir(dirfd) as it:
        entries = list(it)
    for entry in entries:
        if budget[0] <= 0:
            return
        if entry.name.startswith(HIDDEN_PREFIX):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        if not _served(st):
            continue  # links (and fifos, sockets, devices) are not served
        budget[0] -= 1
        name = prefix + entry.name
        yield _info(st, name)
        if recursive and stat.S_ISDIR(st.st_mode):
            try:
                sub = os.open(entry.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                              dir_fd=dirfd)
            except OSError:
                continue  # swapped for a link, or gone, since it was listed
            try:
                yield from _walk(sub, name + "/", recursive, budget)
            finally:
                os.close(sub)


def delete_file(base: Path, root: str, path: str, *, recursive: bool) -> None:
    """Remove a file, an empty directory, or (``recursive``) a directory tree; links inside are removed, never
    followed."""
    rel = _rel(root, path)
    parent_rel, _, name = rel.rpartition("/")
    if not name or not _rel(path):
        raise NodeFileError("invalid", "the path must name a file or directory below the root")
    parent = _open(base, parent_rel)
    try:
        try:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            raise NodeFileError("notfound", "The specified file does not exist.") from None
        if stat.S_ISLNK(st.st_mode) or not _served(st):
            raise NodeFileError("notfound", "The specified file does not exist.")
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(name, dir_fd=parent)
            return
        try:
            os.rmdir(name, dir_fd=parent)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            if not recursive:
                raise NodeFileError("notempty", "The directory is not empty: delete it with recursive=true.") \
                    from None
            shutil.rmtree(name, dir_fd=parent)  # descriptor-based: never follows links inside
    finally:
        os.close(parent)


# --- logs that outlive their node ------------------------------------------------------------------------------
NODE_TASKS = "batch/tasks"  # the node's Batch root on its drive (/mnt/batch/tasks inside)
LOG_NAMES = ("stdout.txt", "stderr.txt", "fileuploadout.txt", "fileuploaderr.txt")
# Where logs live below the Batch root: the start task's directory, and every task (and job preparation or release
# task) directory, workitems/<job>/job-<n>/<task>.
LOG_DIRS = (("startup",), ("workitems", "*", "*", "*"))


def archive_logs(base: Path, archive: Path) -> int:
    """Move the task and start-task logs of a node's drive (``base``, the host directory behind /mnt) into
    ``archive``, in the same layout, before the drive is removed; returns how many were kept.

    The drive is the node's: any name may be a link, a fifo or a huge tree. Directories are opened without
    following links, only regular files with the known log names are taken, and the walk is bounded."""
    try:
        root = safepath.open_beneath(base, NODE_TASKS, os.O_RDONLY | os.O_DIRECTORY)
    except (OSError, safepath.UnsafePath):
        return 0
    kept, budget = 0, [MAX_ENTRIES]
    try:
        for pattern in LOG_DIRS:
            for fd, rel in _dirs_matching(root, pattern, "", budget):
                try:
                    kept += _keep_logs(fd, archive / NODE_TASKS / rel)
                finally:
                    os.close(fd)
    finally:
        os.close(root)
    return kept


def _dirs_matching(dirfd: int, pattern: tuple[str, ...], rel: str, budget: list[int]) -> Iterator[tuple[int, str]]:
    """Descriptors of the directories below ``dirfd`` that ``pattern`` names ("*": any), never through a link."""
    if not pattern:
        yield os.dup(dirfd), rel
        return
    head, rest = pattern[0], pattern[1:]
    if head == "*":
        with os.scandir(dirfd) as it:
            names = []
            for entry in it:
                budget[0] -= 1
                if budget[0] <= 0:
                    break
                if entry.is_dir(follow_symlinks=False):
                    names.append(entry.name)
    else:
        names = [head]
    for name in names:
        try:
            sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
        except OSError:
            continue  # missing, or a link
        try:
            yield from _dirs_matching(sub, rest, f"{rel}/{name}".lstrip("/"), budget)
        finally:
            os.close(sub)


def _keep_logs(dirfd: int, target: Path) -> int:
    kept = 0
    for name in LOG_NAMES:
        try:
            st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode):
            continue  # a link, a fifo, a directory...: not a log
        target.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            # The node is stopped: nothing swaps the name now. A rename keeps a large log without copying it; what
            # arrives is checked again all the same (only regular files stay).
            os.rename(name, target / name, src_dir_fd=dirfd)
        except OSError as exc:
            if exc.errno != errno.EXDEV or not _copy(dirfd, name, target / name):
                continue
        if stat.S_ISREG(os.lstat(target / name).st_mode):
            kept += 1
        else:
            os.unlink(target / name)
    return kept


def _copy(dirfd: int, name: str, target: Path) -> bool:
    """Copy a regular file from the descriptor it was opened as (another file system than the archive's)."""
    try:
        fd = os.open(name, _OPEN | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
    except OSError:
        return False
    with os.fdopen(fd, "rb") as src:
        if not stat.S_ISREG(os.fstat(src.fileno()).st_mode):
            return False
        with open(target, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
    return True
