"""Content-addressed layer store: the canonical tar form of filesystem layers plus unpacked copies for overlayfs.

Layout under ``root`` (``<store_dir>/layers``)::

    blobs/<hex>.tar.zst   canonical tar, zstd-compressed (what is exported and imported)
    unpacked/<hex>/       the same layer in overlayfs-native form: a whiteout is a char 0/0 device, an opaque
                          directory carries ``trusted.overlay.opaque=y``; used directly as an overlay lowerdir
    tmp/<pid>-<hex>/      staging; finished layers are renamed out of here (same filesystem, atomic)
    lock                  flock: publication and gc are serialized (short critical sections only)

The digest of a layer is the lowercase hex sha256 of its UNCOMPRESSED canonical tar (like an OCI diff_id).
The canonical tar is defined here, so that the same tree always gives the same bytes:

* depth-first walk, siblings sorted bytewise by their name IN THE TAR (so ``.wh.x`` sorts as ``.wh.x``);
  a directory precedes its contents; the layer root itself has no entry;
* ustar headers with numeric ids only (no user/group names); a PAX ``x`` header (``././@PaxHeader``, mode
  0644, mtime 0, records sorted by key) is added only when a path or link target exceeds 100 bytes or a
  number does not fit its octal field; directories end in ``/``; end = two zero blocks, padded to 10240 bytes;
* mode (including setuid/setgid/sticky), uid, gid and mtime are content. mtimes are whole seconds (the
  sub-second part is dropped, and the unpacked copy gets the truncated value too, so that it is exactly the
  tree the blob describes). Keeping mtimes follows docker/OCI: build tools, pip and dpkg look at them. The
  consequence is that two trees with identical bytes but different mtimes are different layers;
* whiteouts and opaque markers carry no metadata: ``.wh.<name>`` / ``.wh..wh..opq`` are empty regular files
  with mode 0, uid 0, gid 0, mtime 0 (the kernel's whiteout inode attributes mean nothing);
* a regular file with several links is stored once, at its first path in walk order; later paths are
  hard-link entries pointing at that path;
* xattrs are not part of a layer (the only one kept is the opaque marker); sockets, fifos and device nodes
  other than whiteouts are never part of a layer (machines get a fresh minimal /dev at run time);
* names must be valid UTF-8 (so they can always be written in PAX records and re-imported elsewhere).

Importing a canonical tar gives back the identical tar (export/import is a fixpoint), so a digest computed on
one host verifies on another.

The store runs as root (whiteouts need mknod, the opaque marker is a trusted.* xattr, ownership is kept);
without root, ownership is not restored and whiteouts cannot be created.

Capture reads each file once and writes the tar stream and the unpacked copy from the same buffer, so the
two always agree even if the upper is still changing (crash consistency). The tar stream is hashed and
compressed in a worker thread (sha256 and zstd release the GIL; zstd also uses its own worker threads), so
the Python walk, hashing and compression overlap.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import gzip
import hashlib
import io
import lzma
import math
import os
import queue
import re
import secrets
import shutil
import stat
import struct
import sys
import tarfile
import threading
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, cast

import zstandard

from shoal.core.hosterrors import LayerError

OPAQUE_XATTR = "trusted.overlay.opaque"
# Written by overlayfs only with redirect_dir=on / metacopy=on: then part of the layer's content lives in the
# LOWER layers, and the upper alone is not a layer. Machines must mount with redirect_dir=off,metacopy=off.
_REDIRECT_XATTR = "trusted.overlay.redirect"
_METACOPY_XATTR = "trusted.overlay.metacopy"
WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"

_DIGEST_RE = re.compile(r"^[0-9a-f]{64}$")
_STAGING_RE = re.compile(r"^(?:gc-)?(\d+)-[0-9a-f]+$")
_FLUSH = 1 << 20            # tar bytes handed to the hash/compress worker at a time
_READ = 4 << 20             # read size for big files
_RECORD = 10240             # tar record size (end of archive is padded to it)
_ZEROS = bytes(_RECORD)
_MAX_DEPTH = 512
_MAX_PATH = 4000            # bytes; below PATH_MAX so that every layer path can be used with plain syscalls
_FICLONE = 0x40049409

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

_HEADER = struct.Struct("100s8s8s8s12s12s8s1s100s6s2s32s32s8s8s155s12s")
_MAX_ID = 0o7777777
_MAX_NUM = 0o77777777777
_DEV_ZERO = b"0000000\x00"


@dataclass(frozen=True)
class LayerInfo:
    digest: str         # sha256 hex of the uncompressed canonical tar
    size: int           # uncompressed canonical tar bytes
    entries: int = 0    # tar members (files, dirs, links, whiteouts, opaque markers; PAX headers not counted)


# --------------------------------------------------------------------------------------------------------------
# canonical tar writing

def _pax_record(key: bytes, value: bytes) -> bytes:
    payload = b" " + key + b"=" + value + b"\n"
    n = len(payload) + 1
    while True:  # the length prefix counts itself
        rec = b"%d" % n + payload
        if len(rec) == n:
            return rec
        n = len(rec)


def _ustar(name: bytes, mode: int, uid: int, gid: int, size: int, mtime: int, typeflag: bytes,
           linkname: bytes) -> bytes:
    h = _HEADER.pack(name, b"%07o\x00" % mode, b"%07o\x00" % uid, b"%07o\x00" % gid, b"%011o\x00" % size,
                     b"%011o\x00" % mtime, b"        ", typeflag, linkname, b"ustar\x00", b"00", b"", b"",
                     _DEV_ZERO, _DEV_ZERO, b"", b"")
    return h[:148] + b"%06o\x00 " % sum(h) + h[156:]


def tar_header(name: bytes, mode: int, uid: int, gid: int, size: int, mtime: int, typeflag: bytes,
               linkname: bytes = b"") -> bytes:
    """Header block(s) of one canonical tar member (a PAX header first when ustar cannot hold the values)."""
    if (len(name) <= 100 and len(linkname) <= 100 and uid <= _MAX_ID and gid <= _MAX_ID and size <= _MAX_NUM
            and 0 <= mtime <= _MAX_NUM):
        return _ustar(name, mode, uid, gid, size, mtime, typeflag, linkname)
    records: list[tuple[bytes, bytes]] = []
    if gid > _MAX_ID:
        records.append((b"gid", b"%d" % gid))
        gid = 0
    if len(linkname) > 100:
        records.append((b"linkpath", linkname))
        linkname = linkname[:100]
    if not 0 <= mtime <= _MAX_NUM:
        records.append((b"mtime", b"%d" % mtime))
        mtime = 0
    if len(name) > 100:
        records.append((b"path", name))
        name = name[:100]
    if size > _MAX_NUM:
        records.append((b"size", b"%d" % size))
        size = 0
    if uid > _MAX_ID:
        records.append((b"uid", b"%d" % uid))
        uid = 0
    body = b"".join(_pax_record(k, v) for k, v in records)
    pax = _ustar(b"././@PaxHeader", 0o644, 0, 0, len(body), 0, b"x", b"")
    return pax + body + _ZEROS[: -len(body) % 512] + _ustar(name, mode, uid, gid, size, mtime, typeflag, linkname)


class _Sink:
    """Receives the canonical tar stream; a worker thread hashes it and (optionally) zstd-compresses it."""

    def __init__(self, out: BinaryIO | None, level: int, threads: int) -> None:
        self.size = 0
        self._sha = hashlib.sha256()
        self._parts: list[bytes] = []
        self._buffered = 0
        self._error: BaseException | None = None
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=8)
        self._writer: zstandard.ZstdCompressionWriter | None = None
        if out is not None:
            cctx = zstandard.ZstdCompressor(level=level, threads=threads)
            self._writer = cctx.stream_writer(out, write_size=1 << 20, closefd=False)
        self._thread = threading.Thread(target=self._run, name="layer-sink", daemon=True)
        self._thread.start()

    def add(self, data: bytes) -> None:
        self._parts.append(data)
        self._buffered += len(data)
        if self._buffered >= _FLUSH:
            self._flush()

    def _flush(self) -> None:
        if not self._parts:
            return
        chunk = self._parts[0] if len(self._parts) == 1 else b"".join(self._parts)
        self._parts = []
        self.size += self._buffered
        self._buffered = 0
        if self._error is not None:
            raise self._error
        self._queue.put(chunk)

    def _run(self) -> None:
        # Always consume up to the end marker (None), even after an error, so the producer never blocks.
        while (chunk := self._queue.get()) is not None:
            if self._error is not None:
                continue
            try:
                self._sha.update(chunk)
                if self._writer is not None:
                    self._writer.write(chunk)
            except BaseException as exc:  # handed to the producer
                self._error = exc
        if self._error is None and self._writer is not None:
            try:
                self._writer.flush(zstandard.FLUSH_FRAME)
            except BaseException as exc:
                self._error = exc

    def finish(self) -> str:
        """End the archive (two zero blocks, padded to a record); returns the sha256 hex digest."""
        total = self.size + self._buffered + 1024
        self.add(_ZEROS[:1024 + (-total % _RECORD)])
        self._flush()
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._sha.hexdigest()

    def abort(self) -> None:
        self._parts = []
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


@dataclass
class _Walk:
    """One serialization of a tree: walks ``src`` in canonical order, feeds the sink, optionally copies to ``dst``.

    Used for capture/import_dir (copy into a staging dir), import_tar (serialize the staged tree in place)
    and verify (hash only).
    """

    sink: _Sink
    dst_root: int | None
    exclude: frozenset[str]
    owner: bool                      # chown the copies (only root can)
    shift: int = 0                   # host ids of a machine's range: base..base+65535 are recorded as 0..65535
    entries: int = 0
    links: dict[tuple[int, int], str] = field(default_factory=dict)

    def _ids(self, st: os.stat_result) -> tuple[int, int]:
        """The ids a layer records: a machine's range mapped back to the image's own ids (others as they are)."""
        if not self.shift:
            return st.st_uid, st.st_gid
        top = self.shift + 65536
        return (st.st_uid - self.shift if self.shift <= st.st_uid < top else st.st_uid,
                st.st_gid - self.shift if self.shift <= st.st_gid < top else st.st_gid)

    def tree(self, src_root: int) -> None:
        opaque = self._opaque(src_root, ".")
        if self.dst_root is not None and opaque:
            os.setxattr(self.dst_root, OPAQUE_XATTR, b"y")
        self._dir(src_root, self.dst_root, "", opaque, 0)

    def _opaque(self, fd: int, rel: str) -> bool:
        try:
            names = os.listxattr(fd)
        except OSError as exc:  # filesystems without xattrs have no opaque dirs
            if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
                return False
            raise
        if not names:
            return False
        if _REDIRECT_XATTR in names:
            raise LayerError(f"directory {rel!r} is a renamed lower directory (overlay redirect_dir): "
                             "the upper alone is not a layer; mount overlays with redirect_dir=off")
        return OPAQUE_XATTR in names and os.getxattr(fd, OPAQUE_XATTR) == b"y"

    def _dir(self, sfd: int, dfd: int | None, prefix: str, opaque: bool, depth: int) -> None:
        if depth > _MAX_DEPTH:
            raise LayerError(f"directory {prefix!r} is nested more than {_MAX_DEPTH} levels deep")
        # (name in the tar, kind, name on disk); kind: d=dir f=file l=symlink w=whiteout o=opaque marker.
        # Sorting str names sorts their UTF-8 bytes (UTF-8 preserves code point order).
        items: list[tuple[str, str, str]] = []
        with os.scandir(sfd) as it:
            for entry in it:
                name = entry.name
                rel = prefix + name
                if rel in self.exclude:
                    continue
                try:
                    name.encode()
                except UnicodeEncodeError:
                    raise LayerError(f"path {os.fsencode(rel)!r} is not valid UTF-8") from None
                if name.startswith(WHITEOUT_PREFIX):
                    raise LayerError(f"path {rel!r} uses the reserved whiteout prefix {WHITEOUT_PREFIX!r}")
                if len(rel) * 4 > _MAX_PATH and len(rel.encode()) + 13 > _MAX_PATH:  # 13: room for ".wh..wh..opq"
                    raise LayerError(f"path {rel[:200]!r}... is longer than {_MAX_PATH} bytes")
                if entry.is_file(follow_symlinks=False):
                    items.append((name, "f", name))
                elif entry.is_dir(follow_symlinks=False):
                    items.append((name, "d", name))
                elif entry.is_symlink():
                    items.append((name, "l", name))
                else:
                    try:
                        st = os.stat(name, dir_fd=sfd, follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                        items.append((WHITEOUT_PREFIX + name, "w", name))
                    # other devices, fifos and sockets are not part of a layer
        if opaque:
            items.append((OPAQUE_MARKER, "o", ""))
        items.sort()
        for tarname, kind, name in items:
            rel = prefix + tarname
            if kind == "f":
                self._file(sfd, dfd, name, rel)
            elif kind == "d":
                self._subdir(sfd, dfd, name, rel, depth)
            elif kind == "l":
                self._symlink(sfd, dfd, name, rel)
            elif kind == "w":
                self._marker(rel)
                if dfd is not None:
                    os.mknod(name, stat.S_IFCHR, os.makedev(0, 0), dir_fd=dfd)
                    os.utime(name, ns=(0, 0), dir_fd=dfd, follow_symlinks=False)
            else:
                self._marker(rel)

    def _marker(self, rel: str) -> None:
        self.entries += 1
        self.sink.add(tar_header(rel.encode(), 0, 0, 0, 0, 0, b"0"))

    def _subdir(self, sfd: int, dfd: int | None, name: str, rel: str, depth: int) -> None:
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=sfd)
        except FileNotFoundError:
            return  # removed while we walk: crash-consistent is enough
        except OSError as exc:
            if exc.errno in (errno.ENOTDIR, errno.ELOOP):
                self._other(sfd, dfd, name, rel)
                return
            raise
        cfd: int | None = None
        try:
            st = os.fstat(fd)
            opaque = self._opaque(fd, rel)
            mtime = st.st_mtime_ns // 1_000_000_000
            self.entries += 1
            self.sink.add(tar_header(rel.encode() + b"/", stat.S_IMODE(st.st_mode), *self._ids(st), 0,
                                     mtime, b"5"))
            if dfd is not None:
                os.mkdir(name, 0o700, dir_fd=dfd)
                cfd = os.open(name, _DIR_FLAGS, dir_fd=dfd)
                if opaque:
                    os.setxattr(cfd, OPAQUE_XATTR, b"y")
            self._dir(fd, cfd, rel + "/", opaque, depth + 1)
            if cfd is not None:  # after the contents: creating them changes the directory's mtime
                if self.owner:
                    os.fchown(cfd, *self._ids(st))
                os.fchmod(cfd, stat.S_IMODE(st.st_mode))
                os.utime(cfd, ns=(mtime * 1_000_000_000, mtime * 1_000_000_000))
        finally:
            os.close(fd)
            if cfd is not None:
                os.close(cfd)

    def _file(self, sfd: int, dfd: int | None, name: str, rel: str) -> None:
        try:
            fd = os.open(name, _READ_FLAGS, dir_fd=sfd)
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                self._other(sfd, dfd, name, rel)
                return
            raise
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                self._other(sfd, dfd, name, rel)
                return
            mode = stat.S_IMODE(st.st_mode)
            mtime = st.st_mtime_ns // 1_000_000_000
            size = st.st_size
            if st.st_nlink > 1:
                key = (st.st_dev, st.st_ino)
                first = self.links.get(key)
                if first is not None:
                    self.entries += 1
                    self.sink.add(tar_header(rel.encode(), mode, *self._ids(st), 0, mtime, b"1",
                                             first.encode()))
                    if dfd is not None and self.dst_root is not None:
                        os.link(first, name, src_dir_fd=self.dst_root, dst_dir_fd=dfd, follow_symlinks=False)
                    return
                self.links[key] = rel
            if size and st.st_blocks == 0:
                with contextlib.suppress(OSError):
                    if os.getxattr(fd, _METACOPY_XATTR) is not None:
                        raise LayerError(f"file {rel!r} is a metadata-only copy-up (overlay metacopy): its data "
                                         "is in a lower layer; mount overlays with metacopy=off")
            self.entries += 1
            self.sink.add(tar_header(rel.encode(), mode, *self._ids(st), size, mtime, b"0"))
            ofd = os.open(name, _CREATE_FLAGS, 0o600, dir_fd=dfd) if dfd is not None else -1
            try:
                left = size
                while left:
                    data = os.read(fd, min(left, _READ))
                    if not data:  # shrank while we read: keep the declared size (crash-consistent)
                        data = bytes(left)
                    left -= len(data)
                    self.sink.add(data)
                    if ofd >= 0:
                        _write_all(ofd, data)
                if size % 512:
                    self.sink.add(_ZEROS[: 512 - size % 512])
                if ofd >= 0:
                    if self.owner:
                        os.fchown(ofd, *self._ids(st))
                    os.fchmod(ofd, mode)
                    os.utime(ofd, ns=(mtime * 1_000_000_000, mtime * 1_000_000_000))
            finally:
                if ofd >= 0:
                    os.close(ofd)
        finally:
            os.close(fd)

    def _symlink(self, sfd: int, dfd: int | None, name: str, rel: str) -> None:
        try:
            st = os.stat(name, dir_fd=sfd, follow_symlinks=False)
            target = os.readlink(name, dir_fd=sfd)
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno == errno.EINVAL:  # not a symlink any more
                self._other(sfd, dfd, name, rel)
                return
            raise
        try:
            encoded = target.encode()
        except UnicodeEncodeError:
            raise LayerError(f"symlink {rel!r} has a target that is not valid UTF-8: "
                             f"{os.fsencode(target)!r}") from None
        if len(encoded) > _MAX_PATH:
            raise LayerError(f"symlink {rel!r} has a target longer than {_MAX_PATH} bytes")
        mtime = st.st_mtime_ns // 1_000_000_000
        self.entries += 1
        self.sink.add(tar_header(rel.encode(), 0o777, *self._ids(st), 0, mtime, b"2", encoded))
        if dfd is not None:
            os.symlink(target, name, dir_fd=dfd)
            if self.owner:
                os.chown(name, *self._ids(st), dir_fd=dfd, follow_symlinks=False)
            os.utime(name, ns=(mtime * 1_000_000_000, mtime * 1_000_000_000), dir_fd=dfd, follow_symlinks=False)

    def _other(self, sfd: int, dfd: int | None, name: str, rel: str) -> None:
        """An entry whose type changed between listing and reading (live upper): dispatch on a fresh lstat."""
        try:
            st = os.stat(name, dir_fd=sfd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISLNK(st.st_mode):
            self._symlink(sfd, dfd, name, rel)
        # A changing file that became a directory or a device is skipped: its sort position is gone, and a
        # capture of a changing tree only has to be crash-consistent.


# --------------------------------------------------------------------------------------------------------------
# input handling for import_tar

class _HashingReader(io.RawIOBase):
    """Passes reads through and hashes everything read (the input's own uncompressed digest)."""

    def __init__(self, inner: BinaryIO) -> None:
        self._inner = inner
        self.sha = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._inner.read(size)
        self.sha.update(data)
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


class _Prefixed(io.RawIOBase):
    """A stream whose first bytes were already read (to sniff the compression)."""

    def __init__(self, head: bytes, inner: BinaryIO) -> None:
        self._head = head
        self._inner = inner

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self._head:
            if size < 0:
                data, self._head = self._head + self._inner.read(), b""
                return data
            data, self._head = self._head[:size], self._head[size:]
            return data
        return self._inner.read(size)

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


@contextlib.contextmanager
def _open_source(source: Path | BinaryIO) -> Iterator[BinaryIO]:
    if isinstance(source, (str, os.PathLike)):
        try:
            fh = open(source, "rb")  # noqa: SIM115 - closed by the with below
        except OSError as exc:
            raise LayerError(f"cannot read {source}: {exc.strerror}") from exc
        with fh:
            yield fh
    else:
        yield source


def _decompressed(raw: BinaryIO) -> BinaryIO:
    head = raw.read(6)
    stream = cast(BinaryIO, _Prefixed(head, raw))
    if head.startswith(b"\x1f\x8b"):
        return cast(BinaryIO, gzip.GzipFile(fileobj=stream, mode="rb"))
    if head.startswith(b"\xfd7zXZ\x00"):
        return cast(BinaryIO, lzma.LZMAFile(stream, mode="rb"))
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return cast(BinaryIO, zstandard.ZstdDecompressor().stream_reader(stream, read_across_frames=True))
    return stream


def _member_path(name: str, what: str = "member") -> str:
    """Normalized relative path of a tar member name ("" = the root); LayerError if it is not acceptable."""
    if not name:
        raise LayerError(f"{what} has an empty name")
    if "\x00" in name:
        raise LayerError(f"{what} {name!r}: name contains a NUL byte")
    try:
        name.encode()
    except UnicodeEncodeError:
        raise LayerError(f"{what} {os.fsencode(name)!r}: name is not valid UTF-8") from None
    if name.startswith("/"):
        raise LayerError(f"{what} {name!r}: absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    for part in parts:
        if part == "..":
            raise LayerError(f"{what} {name!r}: path contains '..'")
        if len(part.encode()) > 255:
            raise LayerError(f"{what} {name!r}: a path component is longer than 255 bytes")
    rel = "/".join(parts)
    if len(rel.encode()) > _MAX_PATH:
        raise LayerError(f"{what} {name!r}: path is longer than {_MAX_PATH} bytes")
    return rel


def _check_symlink(member: str, rel: str, target: str) -> None:
    if not target or "\x00" in target or len(target.encode(errors="surrogateescape")) > _MAX_PATH:
        raise LayerError(f"member {member!r}: invalid symlink target {target[:200]!r}")
    try:
        target.encode()
    except UnicodeEncodeError:
        raise LayerError(f"member {member!r}: symlink target is not valid UTF-8") from None
    if target.startswith("/"):
        return  # resolved against the machine's root at run time; the store itself never follows links
    depth = rel.count("/")  # depth of the directory holding the link
    for part in target.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                raise LayerError(f"member {member!r}: symlink target {target!r} escapes the layer root")
        elif part not in ("", "."):
            depth += 1


class _Extractor:
    """Applies validated tar members to a private staging directory in overlayfs-native form."""

    def __init__(self, root_fd: int, owner: bool, skip_special: bool) -> None:
        self.root = root_fd
        self.owner = owner
        self.skip_special = skip_special
        self.kinds: dict[str, str] = {"": "d"}        # d dir, f file, l symlink, w whiteout
        self.dir_meta: dict[str, tuple[int, int, int, int]] = {}
        self.opaque: set[str] = set()

    def member(self, tf: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        name = m.name
        rel = _member_path(name)
        if m.ischr() or m.isblk():
            if self.skip_special:
                return
            raise LayerError(f"member {name!r}: device files are not allowed in a layer")
        if m.isfifo():
            if self.skip_special:
                return
            raise LayerError(f"member {name!r}: fifos are not allowed in a layer")
        if not (m.isreg() or m.isdir() or m.issym() or m.islnk()):
            raise LayerError(f"member {name!r}: unsupported member type {m.type!r}")
        if rel == "":
            if not m.isdir():
                raise LayerError(f"member {name!r}: the layer root must be a directory")
            return  # the root's own attributes are not part of a layer
        parent, _, base = rel.rpartition("/")
        for part in rel.split("/")[:-1]:
            if part.startswith(WHITEOUT_PREFIX):
                raise LayerError(f"member {name!r}: a whiteout cannot be a directory")
        if base.startswith(WHITEOUT_PREFIX):
            if not m.isreg():
                raise LayerError(f"member {name!r}: a whiteout must be a regular file")
            self._parents(name, rel)
            if base == OPAQUE_MARKER:
                self.opaque.add(parent)
                return
            target = base[len(WHITEOUT_PREFIX):]
            if target in ("", ".", "..") or target.startswith(WHITEOUT_PREFIX):
                raise LayerError(f"member {name!r}: invalid whiteout name")
            self._whiteout(parent + "/" + target if parent else target)
            return
        self._parents(name, rel)
        mtime = math.floor(m.mtime)
        mode = m.mode & 0o7777
        if m.isdir():
            kind = self.kinds.get(rel)
            if kind != "d":
                self._clear(rel, name)
                os.mkdir(rel, 0o700, dir_fd=self.root)
                self.kinds[rel] = "d"
            self.dir_meta[rel] = (mode, m.uid, m.gid, mtime)
            return
        self._clear(rel, name)
        if m.islnk():
            target = _member_path(m.linkname, what=f"member {name!r}: hardlink target")
            if self.kinds.get(target) != "f":
                raise LayerError(f"member {name!r}: hardlink target {m.linkname!r} is not a regular file earlier "
                                 "in the layer")
            os.link(target, rel, src_dir_fd=self.root, dst_dir_fd=self.root, follow_symlinks=False)
            self.kinds[rel] = "f"
            return
        if m.issym():
            _check_symlink(name, rel, m.linkname)
            os.symlink(m.linkname, rel, dir_fd=self.root)
            if self.owner:
                os.chown(rel, m.uid, m.gid, dir_fd=self.root, follow_symlinks=False)
            os.utime(rel, ns=(mtime * 1_000_000_000,) * 2, dir_fd=self.root, follow_symlinks=False)
            self.kinds[rel] = "l"
            return
        fd = os.open(rel, _CREATE_FLAGS, 0o600, dir_fd=self.root)
        try:
            self.kinds[rel] = "f"
            src = tf.extractfile(m)
            left = m.size
            if src is not None:
                while left > 0:
                    data = src.read(min(left, _READ))
                    if not data:
                        raise LayerError(f"member {name!r}: archive is truncated")
                    _write_all(fd, data)
                    left -= len(data)
            if self.owner:
                os.fchown(fd, m.uid, m.gid)
            os.fchmod(fd, mode)
            os.utime(fd, ns=(mtime * 1_000_000_000,) * 2)
        finally:
            os.close(fd)

    def _parents(self, name: str, rel: str) -> None:
        """Make sure every parent of ``rel`` is a real directory we created (never a symlink: no escapes)."""
        path = ""
        for part in rel.split("/")[:-1]:
            path = f"{path}/{part}" if path else part
            kind = self.kinds.get(path)
            if kind == "d":
                continue
            if kind == "w":  # deleted below, re-created here: the new directory hides the lower one
                os.unlink(path, dir_fd=self.root)
                self.opaque.add(path)
            elif kind is not None:
                raise LayerError(f"member {name!r}: parent {path!r} is not a directory (a link or file)")
            os.mkdir(path, 0o700, dir_fd=self.root)
            self.kinds[path] = "d"
            self.dir_meta.setdefault(path, (0o755, 0, 0, 0))

    def _clear(self, rel: str, name: str) -> None:
        kind = self.kinds.get(rel)
        if kind is None:
            return
        if kind == "d":
            raise LayerError(f"member {name!r}: conflicts with a directory of the same name earlier in the layer")
        os.unlink(rel, dir_fd=self.root)
        del self.kinds[rel]
        if kind == "w":
            # OCI: a whiteout only hides LOWER layers; an entry of this layer with the same name replaces it.
            # For a directory that means "opaque" (done by the caller through self.opaque).
            self.opaque.add(rel)

    def _whiteout(self, target: str) -> None:
        kind = self.kinds.get(target)
        if kind == "d":
            self.opaque.add(target)  # same-layer directory + whiteout: lower content hidden
        elif kind is None:
            os.mknod(target, stat.S_IFCHR, os.makedev(0, 0), dir_fd=self.root)
            os.utime(target, ns=(0, 0), dir_fd=self.root, follow_symlinks=False)
            self.kinds[target] = "w"
        # a file or link of this layer already hides the lower entry

    def finish(self) -> None:
        """Directory attributes last (deepest first: filling a directory changes its mtime)."""
        for rel in sorted(self.opaque, key=lambda p: p.count("/"), reverse=True):
            if self.kinds.get(rel) != "d":
                self.opaque.discard(rel)  # a non-directory replaced a whiteout: nothing to mark
        for rel in sorted(self.kinds, key=lambda p: -p.count("/") if p else 1):
            if self.kinds[rel] != "d":
                continue
            fd = os.open(rel or ".", _DIR_FLAGS, dir_fd=self.root)
            try:
                if rel in self.opaque:
                    os.setxattr(fd, OPAQUE_XATTR, b"y")
                if rel == "":
                    continue
                mode, uid, gid, mtime = self.dir_meta.get(rel, (0o755, 0, 0, 0))
                if self.owner:
                    os.fchown(fd, uid, gid)
                os.fchmod(fd, mode)
                os.utime(fd, ns=(mtime * 1_000_000_000,) * 2)
            finally:
                os.close(fd)


# --------------------------------------------------------------------------------------------------------------
# helpers for materialize / gc

def _sync_path(path: Path, *, syncfs: bool = False) -> None:
    """fsync a directory, or syncfs its whole filesystem (cheaper than an fsync per file of a layer)."""
    fd = os.open(path, _DIR_FLAGS)
    try:
        if syncfs:
            try:
                if ctypes.CDLL(None, use_errno=True).syncfs(fd) == 0:
                    return
            except (OSError, AttributeError):
                pass
        os.fsync(fd)
        if syncfs:
            os.sync()
    finally:
        os.close(fd)


def _rmtree(path: Path) -> None:
    def fix(func: object, p: str, exc: object) -> None:
        # Read-only directories (possible when the store does not run as root): make writable and retry.
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(p), 0o700)
            if os.path.isdir(p) and not os.path.islink(p):
                os.chmod(p, 0o700)
                shutil.rmtree(p, ignore_errors=True)
            else:
                os.unlink(p)

    if path.is_symlink() or not path.exists():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return
    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=fix)
    else:
        shutil.rmtree(path, onerror=fix)


def _remove_at(dfd: int, name: str) -> None:
    try:
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=dfd)
    else:
        os.unlink(name, dir_fd=dfd)


def _copy_data(src: int, dst: int, size: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.ioctl(dst, _FICLONE, src)  # reflink on xfs/btrfs: instant, shares blocks copy-on-write
        return
    offset = 0
    while offset < size:
        try:
            n = os.copy_file_range(src, dst, size - offset, offset, offset)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                raise
            break
        if n == 0:
            return
        offset += n
    while offset < size:  # plain copy
        data = os.pread(src, min(_READ, size - offset), offset)
        if not data:
            return
        os.pwrite(dst, data, offset)
        offset += len(data)


# --------------------------------------------------------------------------------------------------------------

class LayerStore:
    """The layers of one store directory (safe for concurrent use by threads and processes)."""

    def __init__(self, root: Path, *, compression_level: int = 3, threads: int = -1, durable: bool = True) -> None:
        """``threads``: zstd worker threads (-1 = one per CPU); ``durable``: syncfs before publishing a layer."""
        self.root = Path(root)
        self.compression_level = compression_level
        self.threads = threads
        self.durable = durable
        self._blobs = self.root / "blobs"
        self._unpacked = self.root / "unpacked"
        self._tmp = self.root / "tmp"
        for d in (self._blobs, self._unpacked, self._tmp):
            d.mkdir(parents=True, exist_ok=True)
        self._owner = os.geteuid() == 0
        self.clean_staging()

    # ---- lookups ---------------------------------------------------------------------------------------------

    def has(self, digest: str) -> bool:
        """Blob and unpacked copy both present."""
        return (bool(_DIGEST_RE.match(digest)) and (self._blobs / f"{digest}.tar.zst").is_file()
                and (self._unpacked / digest).is_dir())

    def unpacked(self, digest: str) -> Path:
        """The overlay lowerdir of a layer; KeyError if the layer is not in the store."""
        if not self.has(digest):
            raise KeyError(digest)
        return self._unpacked / digest

    def blob(self, digest: str) -> Path:
        """The canonical ``.tar.zst``; KeyError if absent."""
        path = self._blobs / f"{digest}.tar.zst"
        if not _DIGEST_RE.match(digest) or not path.is_file():
            raise KeyError(digest)
        return path

    def export(self, digest: str) -> Path:
        """Path of the canonical ``.tar.zst`` to hand out (importing it elsewhere gives the same digest)."""
        return self.blob(digest)

    def digests(self) -> set[str]:
        """Digests of the complete layers."""
        blobs = {p.name[:-8] for p in self._blobs.iterdir() if p.name.endswith(".tar.zst")}
        return {d for d in blobs if _DIGEST_RE.match(d) and (self._unpacked / d).is_dir()}

    def disk_usage(self) -> int:
        """Bytes allocated under the store root (blobs, unpacked copies, staging; hard links counted once)."""
        seen: set[tuple[int, int]] = set()
        total = 0
        for dirpath, dirnames, filenames in os.walk(self.root):
            for name in dirnames + filenames:
                try:
                    st = os.lstat(os.path.join(dirpath, name))
                except FileNotFoundError:
                    continue
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
        return total

    # ---- creating layers --------------------------------------------------------------------------------------

    def capture(self, upper: Path, *, exclude: Sequence[str] = ("tmp", "run", "var/tmp"),
                id_shift: int = 0) -> LayerInfo:
        """Turn an overlay upper dir into a layer (see the module docstring for the conversion rules).

        ``exclude``: paths relative to ``upper`` left out with everything below them. ``id_shift``: the upper
        belongs to a machine whose ids start there on the host (a user namespace); they are recorded as the
        image's own (0-based) ids. Idempotent by digest.
        """
        return self._from_tree(Path(upper), frozenset(p.strip("/") for p in exclude if p.strip("/")), id_shift)

    def import_dir(self, tree: Path) -> LayerInfo:
        """A plain directory tree (e.g. debootstrap output) as a layer. The tree is copied, not consumed.

        Device nodes other than char 0/0 whiteouts, fifos and sockets are left out (machines get their own
        /dev); char 0/0 devices and opaque xattrs keep their overlay meaning.
        """
        return self._from_tree(Path(tree), frozenset())

    def _from_tree(self, tree: Path, exclude: frozenset[str], id_shift: int = 0) -> LayerInfo:
        src = os.open(tree, _DIR_FLAGS)
        try:
            with self._staging() as staging:
                (staging / "tree").mkdir(mode=0o755)
                dst = os.open(staging / "tree", _DIR_FLAGS)
                try:
                    info = self._serialize(src, dst, staging / "blob.tar.zst", exclude, id_shift)
                finally:
                    os.close(dst)
                return self._publish(staging, info)
        finally:
            os.close(src)

    def import_tar(self, source: Path | BinaryIO, *, expected_digest: str | None = None,
                   skip_special: bool = False) -> LayerInfo:
        """Import a layer or root filesystem tarball (plain, gzip, xz or zstd, detected by magic bytes).

        Each member is validated before it is written, and everything is written only below a private staging
        directory in ``tmp/`` that is removed on error: absolute paths, ``..``, parents that are links,
        symlink targets climbing above the layer root, hard links to anything that is not a regular file
        earlier in the layer, device files and fifos (unless ``skip_special``, which drops them instead) and
        invalid names raise LayerError naming the member. OCI whiteouts become overlay whiteouts. The layer is
        re-serialized in canonical form; ``expected_digest`` may be the canonical digest or the sha256 of the
        uncompressed input tar, anything else raises LayerError and nothing is stored.
        """
        if expected_digest is not None and not _DIGEST_RE.match(expected_digest):
            raise LayerError(f"expected digest {expected_digest!r} is not a lowercase hex sha256")
        with _open_source(source) as raw, self._staging() as staging:
            tree = staging / "tree"
            tree.mkdir(mode=0o755)
            root_fd = os.open(tree, _DIR_FLAGS)
            try:
                reader = _HashingReader(_decompressed(raw))
                extractor = _Extractor(root_fd, self._owner, skip_special)
                try:
                    with tarfile.open(fileobj=cast(BinaryIO, reader), mode="r|", bufsize=1 << 20) as tf:
                        for m in tf:
                            extractor.member(tf, m)
                    reader.drain()
                except (tarfile.TarError, zstandard.ZstdError, lzma.LZMAError, zlib.error, EOFError,
                        gzip.BadGzipFile) as exc:
                    raise LayerError(f"not a valid (compressed) tar archive: {exc}") from exc
                extractor.finish()
                info = self._serialize(root_fd, None, staging / "blob.tar.zst", frozenset())
            finally:
                os.close(root_fd)
            if expected_digest is not None and expected_digest not in (info.digest, reader.sha.hexdigest()):
                raise LayerError(f"integrity check failed: expected {expected_digest}, the archive has "
                                 f"{reader.sha.hexdigest()} (canonical form {info.digest})")
            return self._publish(staging, info)

    def _serialize(self, src: int, dst: int | None, blob: Path | None, exclude: frozenset[str],
                   id_shift: int = 0) -> LayerInfo:
        with contextlib.ExitStack() as stack:
            out = stack.enter_context(open(blob, "wb", buffering=0)) if blob is not None else None
            sink = _Sink(out, self.compression_level, self.threads)
            walk = _Walk(sink, dst, exclude, self._owner, id_shift)
            try:
                walk.tree(src)
                digest = sink.finish()
            except BaseException:
                sink.abort()
                raise
        return LayerInfo(digest, sink.size, walk.entries)

    @contextlib.contextmanager
    def _staging(self) -> Iterator[Path]:
        path = self._tmp / f"{os.getpid()}-{secrets.token_hex(8)}"
        path.mkdir(mode=0o700)
        try:
            yield path
        finally:
            _rmtree(path)

    def _publish(self, staging: Path, info: LayerInfo) -> LayerInfo:
        """Rename a finished layer into place. The unpacked dir goes first: ``has`` needs both, and a
        concurrent identical capture that finds the layer there just drops its own copy."""
        digest = info.digest
        if self.durable:  # one syncfs instead of an fsync per file: the data is on disk before it is published
            _sync_path(staging, syncfs=True)
        renamed = False
        with self._lock():
            target = self._unpacked / digest
            if not target.is_dir():
                os.chmod(staging / "tree", 0o755)
                os.rename(staging / "tree", target)
                renamed = True
            blob = self._blobs / f"{digest}.tar.zst"
            if not blob.is_file():
                os.rename(staging / "blob.tar.zst", blob)
                renamed = True
        if self.durable and renamed:
            _sync_path(self._unpacked)
            _sync_path(self._blobs)
        return info

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # ---- checking, removing -------------------------------------------------------------------------------

    def verify(self, digest: str, *, unpacked: bool = False) -> bool:
        """Recompute the digest from the blob (False if missing or corrupt). ``unpacked=True`` also re-serializes
        the unpacked copy and checks that it still describes the same tar."""
        try:
            path = self.blob(digest)
        except KeyError:
            return False
        sha = hashlib.sha256()
        try:
            with open(path, "rb") as fh, zstandard.ZstdDecompressor().stream_reader(fh) as reader:
                while chunk := reader.read(_READ):
                    sha.update(chunk)
        except (zstandard.ZstdError, OSError):
            return False
        if sha.hexdigest() != digest:
            return False
        if unpacked:
            try:
                fd = os.open(self._unpacked / digest, _DIR_FLAGS)
            except OSError:
                return False
            try:
                return self._serialize(fd, None, None, frozenset()).digest == digest
            except (OSError, LayerError):
                return False
            finally:
                os.close(fd)
        return True

    def gc(self, referenced: set[str]) -> list[str]:
        """Mark & sweep: delete every layer (complete or partial) whose digest is not in ``referenced``.

        Returns the deleted digests (sorted). Also removes staging dirs left by dead processes. The caller must
        make sure nothing that is about to be referenced (a capture in flight) is swept.
        """
        removed: list[str] = []
        trash: list[Path] = []
        with self._lock():
            present = {p.name[:-8] for p in self._blobs.iterdir() if p.name.endswith(".tar.zst")}
            present |= {p.name for p in self._unpacked.iterdir()}
            for digest in sorted(present - set(referenced)):
                (self._blobs / f"{digest}.tar.zst").unlink(missing_ok=True)  # first: has() turns False at once
                udir = self._unpacked / digest
                if udir.exists() or udir.is_symlink():
                    dead = self._tmp / f"gc-{os.getpid()}-{secrets.token_hex(8)}"
                    os.rename(udir, dead)
                    trash.append(dead)
                removed.append(digest)
        for dead in trash:
            _rmtree(dead)
        self.clean_staging()
        return removed

    def clean_staging(self) -> list[str]:
        """Remove staging dirs of processes that no longer exist (crashed captures/imports)."""
        removed = []
        for entry in self._tmp.iterdir():
            m = _STAGING_RE.match(entry.name)
            if m is None:
                continue
            pid = int(m.group(1))
            if pid == os.getpid():
                continue
            try:
                os.kill(pid, 0)
                continue
            except ProcessLookupError:
                pass
            except PermissionError:
                continue
            _rmtree(entry)
            removed.append(entry.name)
        return removed

    # ---- fallback runtime ---------------------------------------------------------------------------------

    def materialize(self, digests_bottom_to_top: Sequence[str], dest: Path) -> None:
        """Apply layers (whiteouts delete, opaque dirs replace) into the plain directory ``dest``.

        ``dest`` is created if missing; existing content is treated as the layer below the first one. Used when
        overlayfs is not available. The result contains no whiteouts and no overlay xattrs.
        """
        sources = [self.unpacked(d) for d in digests_bottom_to_top]  # KeyError before touching dest
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        dfd = os.open(dest, _DIR_FLAGS)
        try:
            for src in sources:
                sfd = os.open(src, _DIR_FLAGS)
                try:
                    if _is_opaque(sfd):
                        for name in os.listdir(dfd):
                            _remove_at(dfd, name)
                    _Apply(dfd, self._owner).dir(sfd, dfd, "")
                finally:
                    os.close(sfd)
        finally:
            os.close(dfd)


def _is_opaque(fd: int) -> bool:
    try:
        return OPAQUE_XATTR in os.listxattr(fd) and os.getxattr(fd, OPAQUE_XATTR) == b"y"
    except OSError:
        return False


@dataclass
class _Apply:
    """Applies one unpacked layer onto a plain directory (the fallback runtime's merged root)."""

    root: int
    owner: bool
    links: dict[tuple[int, int], str] = field(default_factory=dict)   # inode in the layer -> path in dest

    def dir(self, sfd: int, dfd: int, prefix: str) -> None:
        with os.scandir(sfd) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            name = entry.name
            st = entry.stat(follow_symlinks=False)
            mode = st.st_mode
            ns = (st.st_mtime_ns // 1_000_000_000) * 1_000_000_000
            if stat.S_ISCHR(mode) and st.st_rdev == 0:
                _remove_at(dfd, name)
            elif stat.S_ISDIR(mode):
                self._subdir(sfd, dfd, name, prefix, st, ns)
            elif stat.S_ISREG(mode):
                _remove_at(dfd, name)
                key = (st.st_dev, st.st_ino)
                first = self.links.get(key) if st.st_nlink > 1 else None
                if first is not None:
                    os.link(first, name, src_dir_fd=self.root, dst_dir_fd=dfd, follow_symlinks=False)
                    continue
                ifd = os.open(name, _READ_FLAGS, dir_fd=sfd)
                try:
                    ofd = os.open(name, _CREATE_FLAGS, 0o600, dir_fd=dfd)
                    try:
                        _copy_data(ifd, ofd, st.st_size)
                        self._attrs(ofd, st, ns)
                    finally:
                        os.close(ofd)
                finally:
                    os.close(ifd)
                if st.st_nlink > 1:
                    self.links[key] = prefix + name
            elif stat.S_ISLNK(mode):
                _remove_at(dfd, name)
                os.symlink(os.readlink(name, dir_fd=sfd), name, dir_fd=dfd)
                if self.owner:
                    os.chown(name, st.st_uid, st.st_gid, dir_fd=dfd, follow_symlinks=False)
                os.utime(name, ns=(ns, ns), dir_fd=dfd, follow_symlinks=False)

    def _subdir(self, sfd: int, dfd: int, name: str, prefix: str, st: os.stat_result, ns: int) -> None:
        cfd = os.open(name, _DIR_FLAGS, dir_fd=sfd)
        try:
            try:
                existing: os.stat_result | None = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            except FileNotFoundError:
                existing = None
            if existing is not None and not stat.S_ISDIR(existing.st_mode):
                os.unlink(name, dir_fd=dfd)
                existing = None
            if existing is None:
                os.mkdir(name, 0o700, dir_fd=dfd)
            ofd = os.open(name, _DIR_FLAGS, dir_fd=dfd)
            try:
                if existing is not None and _is_opaque(cfd):
                    for child in os.listdir(ofd):
                        _remove_at(ofd, child)
                self.dir(cfd, ofd, prefix + name + "/")
                self._attrs(ofd, st, ns)
            finally:
                os.close(ofd)
        finally:
            os.close(cfd)

    def _attrs(self, fd: int, st: os.stat_result, ns: int) -> None:
        if self.owner:
            os.fchown(fd, st.st_uid, st.st_gid)
        os.fchmod(fd, stat.S_IMODE(st.st_mode))
        os.utime(fd, ns=(ns, ns))
