"""The isolation floor benchmark's nodes are what it says they are.

bench_isolation_floor.py prints what the kernel alone takes for the isolation the issue requires of a hardened
node, and compares it with the target's budget. That figure is only worth something if its `required` nodes
really have every piece (and its `base` nodes none of them): these tests build two of each with
bench/isolation_floor.c and look at them from the host's /proc while they run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import scratch_root

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

from bench_isolation_floor import node_dirs  # noqa: E402

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not (shutil.which("cc") or shutil.which("gcc")),
                                reason="builds namespaces and a veth pair: needs root and a C compiler")

CAP_SYS_MODULE, CAP_SYS_RAWIO, CAP_SYS_ADMIN, CAP_NET_ADMIN = 16, 17, 21, 12


@pytest.fixture(scope="module")
def floor(tmp_path_factory: pytest.TempPathFactory) -> Path:
    binary = tmp_path_factory.mktemp("floor") / "isolation_floor"
    subprocess.run([shutil.which("cc") or "gcc", "-O2", "-o", str(binary), str(BENCH / "isolation_floor.c")],
                   check=True)
    return binary


@contextlib.contextmanager
def nodes(binary: Path, mode: str, count: int, scratch: Path) -> Iterator[list[int]]:
    """The pids of `count` running nodes built in `mode`; they end when the block does."""
    proc = subprocess.Popen([str(binary), mode, str(count), str(node_dirs(scratch, count))], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdin is not None
    try:
        assert proc.stdout.readline().strip() == str(count)
        yield [int(p) for p in proc.stdout.readline().split()]
    finally:
        proc.stdin.close()  # the program ends its nodes
        assert proc.wait(timeout=30) == 0
        shutil.rmtree(scratch, ignore_errors=True)


def ns(pid: int | str, kind: str) -> str:
    return os.readlink(f"/proc/{pid}/ns/{kind}")


def mounts(pid: int) -> dict[str, tuple[str, str]]:
    """mount point -> (its options, its file system type), as the node sees them."""
    found = {}
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        fields = line.split()
        fs_type = fields[fields.index("-") + 1]
        found[fields[4]] = (fields[5], fs_type)
    return found


def bounding_set(pid: int) -> int:
    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("CapBnd:"))
    return int(line.split()[1], 16)


def test_a_required_node_has_every_piece_the_issue_requires(floor: Path) -> None:
    with nodes(floor, "required", 2, scratch_root() / f"floor-req-{os.getpid()}") as pids:
        for i, pid in enumerate(pids):
            required_node(i, pid)


def required_node(i: int, pid: int) -> None:
    base = 1000000 + i * 65536
    # Its own user namespace, root mapped to its own range; its own mount, uts, IPC and network namespaces.
    assert Path(f"/proc/{pid}/uid_map").read_text().split() == ["0", str(base), "65536"]
    for kind in ("user", "mnt", "uts", "ipc", "net"):
        assert ns(pid, kind) != ns("self", kind), kind
    # Its address and default route through the gateway, in its own network namespace; the host's /32 route.
    routes = Path(f"/proc/{pid}/net/route").read_text().splitlines()[1:]
    assert any(r.split()[0] == "eth0" and r.split()[1] == "00000000" for r in routes)
    assert f"10.59.1.{i}" in Path(f"/proc/{pid}/net/fib_trie").read_text()
    assert Path(f"/proc/sys/net/ipv4/conf/flr{i}/proxy_arp").read_text().strip() == "1"
    assert Path(f"/proc/sys/net/ipv4/conf/flr{i}/rp_filter").read_text().strip() == "1"
    # Its root an overlay of the id-mapped layer; the masks and read-only paths in place.
    seen = mounts(pid)
    assert seen["/"][1] == "overlay"
    # A file of the image layer (the host root's) shows as the node's root: the host sees it as the range's.
    assert os.stat(f"/proc/{pid}/root/etc/hostname").st_uid == base
    for path in ("/proc/sys", "/proc/irq", "/proc/bus"):
        if Path(f"/proc/{pid}/root{path}").exists():
            assert seen[path][0].split(",")[0] == "ro", path
    assert seen["/sys/firmware"][1] == "tmpfs"
    assert "/proc/keys" in seen
    # Root inside keeps what a node's root needs and nothing the issue forbids.
    caps = bounding_set(pid)
    assert caps & (1 << CAP_SYS_ADMIN) and caps & (1 << CAP_NET_ADMIN)
    assert not caps & (1 << CAP_SYS_MODULE) and not caps & (1 << CAP_SYS_RAWIO)


def test_a_base_node_has_none_of_them(floor: Path) -> None:
    with nodes(floor, "base", 2, scratch_root() / f"floor-base-{os.getpid()}") as pids:
        for pid in pids:
            base_node(pid)


def base_node(pid: int) -> None:
    assert ns(pid, "mnt") != ns("self", "mnt") and ns(pid, "uts") != ns("self", "uts")
    for kind in ("user", "ipc", "net"):
        assert ns(pid, kind) == ns("self", kind), kind
    seen = mounts(pid)
    assert seen["/"][1] == "overlay" and "/proc" in seen and "/sys" in seen
    assert "/proc/keys" not in seen and "/sys/firmware" not in seen
    assert bounding_set(pid) & (1 << CAP_SYS_MODULE)
    assert os.stat(f"/proc/{pid}/root/etc/hostname").st_uid == 0
