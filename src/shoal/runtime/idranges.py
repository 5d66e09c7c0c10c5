"""Host uid/gid ranges for machines with a user namespace of their own.

Root inside a hardened machine is an unprivileged host uid: the first of a range of ``RANGE_SIZE`` ids that is
the machine's alone (ids 0..65535 inside map to BASE..BASE+65535 on the host), allocated as ``newuidmap`` would
from subordinate ids: from the ``shoal`` entry of ``/etc/subuid`` when the operator made one, else from
``DEFAULT_FIRST`` on. Slots are files under ``<store>/idranges/`` created with ``O_EXCL``, so two threads or two
processes never get one range, and a restart finds the allocations where it left them.

What a machine writes keeps the host ids of its range: its disks' upper directories and its temporary drive.
Each such directory records the range it is owned by (``.shoal-range`` beside it); when a disk moves to a
machine with another range (a VM that restarts in another slot, a data disk attached elsewhere) its files are
shifted to the new range before the machine boots. Snapshots map a range back to the image's own ids
(``LayerStore.capture(..., id_shift=BASE)``), so layers stay shareable between machines and images.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
from dataclasses import dataclass
from pathlib import Path

RANGE_SIZE = 65536
DEFAULT_FIRST = 1 << 20  # above the ids of ordinary host users and of rootless container tools' defaults
# 16,384 ranges (ids 2^20 .. 2^30 + 2^20): room for many more machines than a host holds (a simulated cluster's one
# host may hold 10,000 nodes), and every id stays below 2^31, which some tools read as a signed number.
DEFAULT_SLOTS = 16384
MARKER = ".shoal-range"


class IdRangeError(Exception):
    """No range is free (or the configured ids are unusable)."""


@dataclass(frozen=True)
class IdRange:
    base: int
    size: int = RANGE_SIZE

    def host(self, inside: int) -> int:
        """The host id of an id inside the machine."""
        if not 0 <= inside < self.size:
            raise IdRangeError(f"id {inside} is outside the machine's {self.size} ids")
        return self.base + inside

    def to_dict(self) -> dict[str, int]:
        return {"base": self.base, "size": self.size}


def subordinate_ids(path: Path = Path("/etc/subuid"), user: str = "shoal") -> tuple[int, int] | None:
    """(first id, count) of the operator's ``shoal:FIRST:COUNT`` entry, if any."""
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            name, _, rest = line.partition(":")
            first, _, count = rest.partition(":")
            if name.strip() == user and first.isdigit() and count.isdigit():
                return int(first), int(count)
    return None


class IdRanges:
    """The slots of one store."""

    def __init__(self, root: Path, *, first: int | None = None, slots: int | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._dir = str(self.root)
        configured = subordinate_ids()
        if first is None:
            first = configured[0] if configured else DEFAULT_FIRST
        if slots is None:
            slots = configured[1] // RANGE_SIZE if configured else DEFAULT_SLOTS
        if first <= 0 or slots <= 0 or first + slots * RANGE_SIZE > 2**32 - 2:
            raise IdRangeError(f"no room for {slots} ranges of {RANGE_SIZE} ids from {first}")
        self.first, self.slots = first, slots
        self._lock = threading.Lock()
        self._hint = 0
        # Which machine holds which slot (from the slot files: a restart finds them again).
        self._held: dict[str, int] = {}
        for path in self.root.iterdir():
            if path.name.isdigit() and (owner := self.owner(int(path.name))) is not None:
                self._held[owner] = int(path.name)

    def _slot_file(self, slot: int) -> Path:
        return self.root / str(slot)

    def range_of(self, slot: int) -> IdRange:
        return IdRange(self.first + slot * RANGE_SIZE)

    def slot_of(self, base: int) -> int | None:
        slot, rest = divmod(base - self.first, RANGE_SIZE)
        return slot if rest == 0 and 0 <= slot < self.slots else None

    def owner(self, slot: int) -> str | None:
        held = _read_file(os.path.join(self._dir, str(slot)))
        return held.decode() if held is not None else None

    def allocate(self, machine_id: str, prefer: int | None = None) -> IdRange:
        """A free range for ``machine_id`` (``prefer``: the base its disks are owned by, if it is free)."""
        wanted = self.slot_of(prefer) if prefer is not None else None
        with self._lock:
            held = self._held.get(machine_id)
            if held is not None and self.owner(held) == machine_id:
                return self.range_of(held)  # asked again (a create that is retried): the same range
            # Lazily: the first free slot after the hint is usually the next one.
            order = itertools.chain([wanted] if wanted is not None else [],
                                    ((self._hint + i) % self.slots for i in range(self.slots)))
            for slot in order:
                try:
                    fd = os.open(self._slot_file(slot), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                except FileExistsError:
                    continue
                with os.fdopen(fd, "w") as f:
                    f.write(machine_id)
                self._hint = slot + 1
                self._held[machine_id] = slot
                return self.range_of(slot)
        raise IdRangeError(f"all {self.slots} id ranges of this host are in use")

    def transfer(self, base: int, holder: str, machine_id: str) -> IdRange:
        """Give the range ``holder`` has (a reserve shell's) to ``machine_id``: its slot file names the machine
        from then on (replaced whole, so a crash leaves one owner or the other)."""
        slot = self.slot_of(base)
        with self._lock:
            if slot is None or self.owner(slot) != holder:
                raise IdRangeError(f"the id range at {base} is not {holder!r}'s")
            _replace_file(os.path.join(self._dir, str(slot)), machine_id, 0o600)
            self._held.pop(holder, None)
            self._held[machine_id] = slot
        return self.range_of(slot)

    def release(self, base: int, machine_id: str) -> None:
        slot = self.slot_of(base)
        if slot is not None and self.owner(slot) == machine_id:
            self._slot_file(slot).unlink(missing_ok=True)
            with self._lock:
                self._hint = min(self._hint, slot)
                if self._held.get(machine_id) == slot:
                    del self._held[machine_id]

    def retain_only(self, machine_ids: set[str]) -> None:
        """At start-up: free the slots of machines that no longer exist."""
        for path in self.root.iterdir():
            if path.name.isdigit() and self.owner(int(path.name)) not in machine_ids:
                path.unlink(missing_ok=True)
        with self._lock:
            self._held = {m: slot for m, slot in self._held.items() if m in machine_ids}
            self._hint = 0


# ---------------------------------------------------------------------------------------------- ownership


# (Plain os calls on strings here, not pathlib: these run for every machine a host boots, on the boot's path.)


def _marker(directory: str | os.PathLike[str]) -> str:
    head, name = os.path.split(os.path.normpath(os.fspath(directory)))
    return os.path.join(head, f"{MARKER}-{name}")


def recorded_base(directory: str | os.PathLike[str]) -> int | None:
    """The range base a machine directory (disk upper, temporary drive) is owned by; None: host ids."""
    recorded = _read_file(_marker(directory), os.O_NOFOLLOW)
    try:
        return int(recorded) if recorded is not None else None
    except ValueError:
        return None


def forget(directory: str | os.PathLike[str]) -> None:
    """The directory is gone (a machine's temporary drive): drop what recorded its owner."""
    _record(directory, None)


def _record(directory: str | os.PathLike[str], base: int | None) -> None:
    marker = _marker(directory)
    if base is None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(marker)
        return
    _replace_file(marker, str(base), 0o644)


def _read_file(path: str, flags: int = 0) -> bytes | None:
    """A small file's content (None: it cannot be read)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | flags)
    except OSError:
        return None
    try:
        return os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)


def _replace_file(path: str, text: str, mode: int) -> None:
    """Write ``path`` whole through a temporary file beside it: a crash leaves the old content or the new."""
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def own(directory: str | os.PathLike[str], target: IdRange | None) -> None:
    """Make ``directory`` (and everything in it) belong to ``target`` (None: back to plain host ids).

    A fresh directory only needs its root chowned; one owned by another range (or by host ids) has every
    entry's ids shifted, without following links. Ids outside the source range are kept as they are."""
    directory = os.fspath(directory)
    current = recorded_base(directory)
    new = target.base if target is not None else None
    if current == new:
        return
    old_base = current if current is not None else 0
    new_base = new if new is not None else 0
    size = target.size if target is not None else RANGE_SIZE

    def shift(path: str) -> None:
        st = os.lstat(path)
        uid = st.st_uid - old_base + new_base if old_base <= st.st_uid < old_base + size else st.st_uid
        gid = st.st_gid - old_base + new_base if old_base <= st.st_gid < old_base + size else st.st_gid
        if (uid, gid) != (st.st_uid, st.st_gid):
            mode = st.st_mode
            os.lchown(path, uid, gid)
            if not os.path.islink(path) and mode & 0o6000:
                os.chmod(path, mode & 0o7777)  # chown clears setuid/setgid bits: keep them

    shift(directory)
    with os.scandir(directory) as entries:
        fresh = next(entries, None) is None  # (an empty directory: nothing to walk)
    if not fresh:
        for top, dirs, files in os.walk(directory):
            for name in dirs + files:
                shift(os.path.join(top, name))
    _record(directory, new)
