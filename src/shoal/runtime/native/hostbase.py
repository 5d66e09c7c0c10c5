"""The host's root filesystem as a read-only base layer, with private directories masked.

``hostbase = overlay(ro, lowerdir=<mask>:/)``, where the mask is a small tmpfs of opaque directories: through
it ``/tmp``, ``/root``, ``/home``... look empty (and stay writable inside each machine, in its own upper dir).
Two kernel facts shape this:

- overlayfs does not follow submounts of a lower layer, so ``lowerdir=/`` shows the root filesystem only:
  ``/proc``, ``/dev``, ``/dev/shm`` (where tests keep the store) are empty directories. Only what lives on
  the root filesystem itself needs masking.
- A lower layer inside ``/`` on the same filesystem makes the kernel refuse a mount that also has ``/`` as a
  lower (ELOOP, "overlapping lowerdir path"). Machines therefore never use ``/`` directly: they stack their
  layers on ``hostbase``, a separate superblock. The mask is on its own tmpfs for the same reason.

Both are mounted once per host (in the server's mount namespace), named by a hash of the mask, and re-used by
every store and every later server. They live outside the store on purpose (default ``/run/shoal``, or
``SHOAL_HOSTBASE_DIR``): an ``rm -rf`` of a state directory must never walk into a view of the whole host
root, nor empty the mask under running machines. Machines copy the mount when they are created and keep
using it even if it is later detached.
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import os
import re
import stat
import threading
from collections.abc import Sequence
from pathlib import Path

from shoal.runtime.native import MachineError

HOST_MASKED = ("tmp", "var/tmp", "run", "root", "home", "work", "mnt", "media", "srv")
"""Host directories hidden (shown empty) in the host base."""

DEFAULT_DIR = "/run/shoal"

_libc = ctypes.CDLL(None, use_errno=True)
MS_RDONLY = 1
MNT_DETACH = 2


def mount(source: str, target: str, fstype: str, flags: int, data: str) -> None:
    if _libc.mount(source.encode(), target.encode(), fstype.encode(), ctypes.c_ulong(flags), data.encode()):
        err = ctypes.get_errno()
        raise OSError(err, f"mount {fstype} on {target} ({data}): {os.strerror(err)}")


def umount(target: str) -> None:
    if _libc.umount2(target.encode(), MNT_DETACH):
        err = ctypes.get_errno()
        raise OSError(err, f"umount {target}: {os.strerror(err)}")


def mount_points(under: Path | None = None) -> list[str]:
    """Mount points of the calling process's mount namespace (optionally only those at or below ``under``)."""
    with open("/proc/self/mountinfo") as f:
        points = [re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4]) for line in f]
    if under is None:
        return points
    prefix = str(under).rstrip("/")
    return [p for p in points if p == prefix or p.startswith(prefix + "/")]


def default_dir() -> Path:
    return Path(os.environ.get("SHOAL_HOSTBASE_DIR") or DEFAULT_DIR)


class HostBase:
    """The ``hostbase`` mount for one mask. Both mounts are named by a hash of the mask, so a different mask
    (another ``hide`` list) gets its own pair instead of changing a lower layer under running machines."""

    def __init__(self, bases_dir: Path | None = None, hide: Sequence[str] = ()) -> None:
        bases_dir = bases_dir or default_dir()
        root_dev = os.stat("/").st_dev
        masked = set(HOST_MASKED)
        for path in hide:
            p = Path(path).resolve()
            # Only what lowerdir=/ can show needs a mask: things on the root filesystem itself.
            if p != Path("/") and p.exists() and os.stat(p).st_dev == root_dev:
                masked.add(str(p.relative_to("/")))
        present = {m for m in masked if (Path("/") / m).is_dir() and not (Path("/") / m).is_symlink()}
        # Inside an already masked directory a path is hidden anyway; masking it again would even leave its
        # name visible in the (otherwise empty) masked parent.
        self.masked = sorted(m for m in present if not any(str(a) in present for a in Path(m).parents))
        key = hashlib.sha256("\n".join(self.masked).encode()).hexdigest()[:12]
        self.bases_dir = bases_dir
        self.mask = bases_dir / f"hostmask-{key}"
        self.path = bases_dir / f"hostbase-{key}"
        self._lock = threading.Lock()

    def ensure(self) -> str:
        """Mount the host base if needed (idempotent, safe across threads and processes); return its path."""
        with self._lock:
            # Every machine start asks: a mount-point test is two stats, reading the mount table is not.
            if os.path.ismount(self.path) and os.path.ismount(self.mask) and self._mask_intact():
                return str(self.path)
            if any(c in str(self.bases_dir) for c in ",:\\"):
                raise MachineError(f"the host base path {self.bases_dir} must not contain ',', ':' or '\\'")
            self.bases_dir.mkdir(parents=True, exist_ok=True)
            with open(self.bases_dir / ".hostbase.lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)  # another server process may be doing the same right now
                points = mount_points(self.bases_dir)
                if str(self.path) in points and self._mask_intact():
                    return str(self.path)
                try:
                    # A damaged mask (someone emptied it) must not go on hiding nothing: mount a fresh pair.
                    # Running machines keep the one they have.
                    for target in (self.path, self.mask):
                        if str(target) in points:
                            umount(str(target))
                    self.mask.mkdir(exist_ok=True)
                    self.path.mkdir(exist_ok=True)
                    mount("tmpfs", str(self.mask), "tmpfs", 0, "mode=755,size=1m")
                    self._fill_mask()
                    mount("overlay", str(self.path), "overlay", MS_RDONLY, f"lowerdir={self.mask}:/")
                except OSError as exc:
                    raise MachineError(f"cannot mount the host base: {exc}") from exc
        return str(self.path)

    def _mask_intact(self) -> bool:
        try:
            return all(os.getxattr(self.mask / rel, "trusted.overlay.opaque") == b"y" for rel in self.masked)
        except OSError:
            return False

    def _fill_mask(self) -> None:
        for rel in self.masked:
            parts = Path(rel).parts
            for depth in range(1, len(parts) + 1):
                sub = Path(*parts[:depth])
                host, mine = Path("/") / sub, self.mask / sub
                mine.mkdir(exist_ok=True)
                st = os.stat(host)  # same owner and mode as on the host: /tmp stays 1777, /root 0700
                os.chown(mine, st.st_uid, st.st_gid)
                os.chmod(mine, stat.S_IMODE(st.st_mode))
            os.setxattr(self.mask / rel, "trusted.overlay.opaque", b"y")

    def unmount(self) -> None:
        """Detach the host base (running machines keep their own reference to it)."""
        with self._lock:
            points = mount_points(self.bases_dir)
            for target in (self.path, self.mask):
                if str(target) in points:
                    umount(str(target))
