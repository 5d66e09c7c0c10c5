"""Fast unit tests of the pieces behind hardened machines: addresses, id ranges, paths beneath a machine's
directory, the sandbox checks."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from shoal.config import DEFAULT_NODE_RESERVE, node_reserve
from shoal.core import errors
from shoal.domain import network
from shoal.runtime import cgroups, idranges, safepath
from shoal.runtime.idranges import RANGE_SIZE, IdRange, IdRangeError, IdRanges
from shoal.runtime.reserve import NodeReserve
from shoal.runtime.sandbox import SandboxOptions, checks, nameservers

SPACE = "10.224.0.0/12"


# --- addresses ---------------------------------------------------------------------------------------------------

def test_pools_get_distinct_subnets_and_the_first_and_last_are_kept_for_vms_and_public_addresses() -> None:
    assert network.gateway(SPACE) == "10.224.0.1" and network.vm_subnet(SPACE) == "10.224.0.0/20"
    first = network.allocate_subnet(SPACE, [])
    assert first == "10.224.16.0/20"
    second = network.allocate_subnet(SPACE, [first, None])
    assert second == "10.224.32.0/20"
    every = [str(n) for n in list(__import__("ipaddress").ip_network(SPACE).subnets(new_prefix=20))[1:-1]]
    with pytest.raises(errors.AzureError) as exc:
        network.allocate_subnet(SPACE, every)
    assert exc.value.status == 409 and "--node-address-space" in exc.value.message
    assert network.public_address(SPACE, first) == "10.239.240.5"  # the last /20, one address per pool subnet
    assert network.public_address(SPACE, second) == "10.239.240.6"


def test_machine_addresses_start_after_azures_reserved_ones_and_are_never_given_twice() -> None:
    subnet = "10.224.16.0/20"
    assert network.allocate_addresses(subnet, [], 3) == ["10.224.16.4", "10.224.16.5", "10.224.16.6"]
    assert network.allocate_addresses(subnet, ["10.224.16.4", "10.224.16.6"], 2) == ["10.224.16.5", "10.224.16.7"]
    assert len(network.allocate_addresses(subnet, [], 4091)) == 4091  # a /20 holds a 2,500-node pool
    with pytest.raises(errors.AzureError):
        network.allocate_addresses(subnet, [], 4092)
    assert network.machine_network("10.224.16.4", subnet, SPACE) == {"address": "10.224.16.4", "prefix": 20,
                                                                     "gateway": "10.224.0.1"}
    with pytest.raises(ValueError):
        network.allocate_subnet("10.0.0.0/24", [])  # smaller than one pool subnet


# --- id ranges ---------------------------------------------------------------------------------------------------

def test_id_ranges_are_unique_reusable_and_preferred_for_a_machines_own_disks(tmp_path: Path) -> None:
    ranges = IdRanges(tmp_path / "ids", first=1 << 20, slots=3)
    a, b = ranges.allocate("a"), ranges.allocate("b")
    assert a.base == 1 << 20 and b.base == a.base + 65536 and a.host(1000) == a.base + 1000
    assert ranges.allocate("a") == a  # asked again: the same
    ranges.release(a.base, "a")
    ranges.release(b.base, "not-b")  # only its owner gives a range back
    assert ranges.owner(1) == "b"
    c = ranges.allocate("c", prefer=b.base)  # b's range is taken: another one
    assert c.base not in (b.base,)
    ranges.allocate("d")
    with pytest.raises(IdRangeError):
        ranges.allocate("e")
    ranges.retain_only({"b"})
    assert ranges.allocate("a", prefer=a.base) == a
    with pytest.raises(IdRangeError):
        IdRange(5).host(70000)


def test_a_reserve_shells_range_goes_to_the_machine_that_takes_it_and_only_from_its_holder(tmp_path: Path) -> None:
    ranges = IdRanges(tmp_path / "ids", first=1 << 20, slots=4)
    shell = ranges.allocate("reserve sr1")
    with pytest.raises(IdRangeError):
        ranges.transfer(shell.base, "reserve sr2", "m1")  # not that holder's
    assert ranges.transfer(shell.base, "reserve sr1", "m1") == shell
    assert ranges.owner(0) == "m1" and ranges.allocate("m1") == shell  # the machine's now, as if allocated
    with pytest.raises(IdRangeError):
        ranges.transfer(shell.base, "reserve sr1", "m2")  # used once
    ranges.release(shell.base, "m1")
    assert ranges.owner(0) is None
    # A restart frees what shells held (their keeper went with the last server), never a machine's.
    ranges.allocate("reserve sr3")
    kept = ranges.allocate("m3")
    IdRanges(tmp_path / "ids", first=1 << 20, slots=4).retain_only({"m3"})
    assert [p.name for p in (tmp_path / "ids").iterdir()] == [str(ranges.slot_of(kept.base))]


def test_the_node_reserve_is_on_by_default_only_where_machines_are_hardened_and_refused_elsewhere() -> None:
    hardened = {"user_namespaces": True, "node_network": "isolated", "runtime": None}
    assert node_reserve(None, **hardened) == DEFAULT_NODE_RESERVE
    assert node_reserve(0, **hardened) == 0 and node_reserve(12, **hardened) == 12
    for less in ({"user_namespaces": False}, {"node_network": "host"}, {"runtime": "process"}):
        assert node_reserve(None, **{**hardened, **less}) == 0
        assert node_reserve(0, **{**hardened, **less}) == 0
        with pytest.raises(ValueError, match="--node-reserve"):
            node_reserve(8, **{**hardened, **less})


def test_a_host_has_ranges_for_ten_thousand_machines_and_every_id_stays_below_two_to_the_31(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One simulated host of a cluster on one machine may hold 10,000 nodes (bench_cluster's 1-host run)."""
    monkeypatch.setattr(idranges, "subordinate_ids", lambda *a, **k: None)  # the default, whatever /etc/subuid says
    ranges = IdRanges(tmp_path / "ids")
    assert ranges.slots >= 10_000
    last = ranges.range_of(ranges.slots - 1)
    assert last.host(RANGE_SIZE - 1) < 2**31


def test_a_disk_moved_to_another_range_is_shifted_without_following_links(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("chown needs root")
    upper = tmp_path / "disk" / "upper"
    (upper / "etc").mkdir(parents=True)
    (upper / "etc" / "file").write_text("x")
    os.chown(upper / "etc" / "file", 1000, 1000)
    tool = upper / "tool"
    tool.write_text("#!/bin/sh\n")
    os.chmod(tool, 0o4755)  # a setuid file keeps its bit through the shift
    (upper / "link").symlink_to("/etc/passwd")
    first, second = IdRange(1 << 20), IdRange((1 << 20) + 65536)
    idranges.own(upper, first)
    assert (upper / "etc" / "file").stat().st_uid == first.base + 1000
    assert upper.stat().st_uid == first.base and idranges.recorded_base(upper) == first.base
    assert os.lstat(upper / "link").st_uid == first.base and Path("/etc/passwd").stat().st_uid == 0
    idranges.own(upper, second)
    assert (upper / "etc" / "file").stat().st_uid == second.base + 1000
    assert tool.stat().st_mode & 0o4000 and tool.stat().st_uid == second.base
    idranges.own(upper, None)  # back to plain host ids
    assert (upper / "etc" / "file").stat().st_uid == 1000 and idranges.recorded_base(upper) is None


# --- paths beneath a machine's directory -------------------------------------------------------------------------

def test_a_task_directory_is_made_in_one_walk_with_its_parents_the_nodes_and_its_tail_the_tasks(
        tmp_path: Path) -> None:
    root = tmp_path / "temp"
    root.mkdir()
    (root / "jobs" / "t1").mkdir(parents=True)  # an earlier attempt's directory, the node root's
    task, node = (60001, 60002), (60003, 60004)
    safepath.makedirs_beneath(root, "jobs/t1/wd", task, own_existing=True, tail=2, parents_owner=node)
    safepath.makedirs_beneath(root, "jobs/new/deeper/t2/wd", task, own_existing=True, tail=2, parents_owner=node)
    owners = {str(p.relative_to(root)): (p.stat().st_uid, p.stat().st_gid) for p in root.rglob("*")}
    assert owners["jobs"] == (os.getuid(), os.getgid())  # there already, not in the tail: left alone
    assert owners["jobs/t1"] == owners["jobs/t1/wd"] == task  # the tail, even where it was there already
    assert owners["jobs/new"] == owners["jobs/new/deeper"] == node
    assert owners["jobs/new/deeper/t2"] == owners["jobs/new/deeper/t2/wd"] == task
    (root / "jobs" / "t3").symlink_to(tmp_path)
    with pytest.raises(safepath.UnsafePath):
        safepath.makedirs_beneath(root, "jobs/t3/wd", task, own_existing=True, tail=2, parents_owner=node)
    assert tmp_path.stat().st_uid == os.getuid()


def test_host_side_file_operations_never_follow_a_machines_links(tmp_path: Path) -> None:
    root = tmp_path / "temp"
    (root / "batch").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("host secret")
    (root / "batch" / "evil").symlink_to(outside)
    (root / "batch" / "file-link").symlink_to(outside / "secret")
    with pytest.raises(safepath.UnsafePath):
        safepath.makedirs_beneath(root, "batch/evil/made")
    with pytest.raises(safepath.UnsafePath):
        safepath.write_beneath(root, "batch/file-link", b"overwritten")
    with pytest.raises(safepath.UnsafePath):
        safepath.open_beneath(root, "batch/evil/secret")
    with pytest.raises(safepath.UnsafePath):
        safepath.open_beneath(root, "../outside/secret")
    safepath.remove_beneath(root, "batch/evil")  # removes the link, never what it points at
    assert (outside / "secret").read_text() == "host secret" and not (outside / "made").exists()
    assert not (root / "batch" / "evil").exists()
    safepath.makedirs_beneath(root, "batch/tasks/wd")
    safepath.write_beneath(root, "batch/tasks/wd/out.txt", b"ok")
    fd = safepath.open_beneath(root, "batch/tasks/wd/out.txt")
    try:
        assert os.read(fd, 10) == b"ok"
    finally:
        os.close(fd)
    safepath.remove_beneath(root, "batch/tasks")
    assert not (root / "batch" / "tasks").exists()


# --- checks ------------------------------------------------------------------------------------------------------

def test_doctor_checks_name_the_flag_that_accepts_less(tmp_path: Path) -> None:
    names = {c.name: c for c in checks(SandboxOptions())}
    for name in ("user namespaces", "seccomp", "node networks", "node DNS", "cgroups"):
        assert name in names and names[name].flag.startswith("--")
    fewer = {c.name for c in checks(SandboxOptions.legacy())}
    assert not fewer & {"user namespaces", "node networks", "cgroups"}
    conf = tmp_path / "resolv.conf"
    conf.write_text("# comment\nnameserver 127.0.0.53\nnameserver fe80::1%eth0\nsearch example\n")
    assert nameservers(str(conf)) == ["127.0.0.53", "fe80::1"]


def test_each_store_sweeps_only_the_cgroups_of_its_own_machines(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    for controller in cgroups.V1_CONTROLLERS:
        (root / controller).mkdir(parents=True)
    mine = cgroups.Cgroups("v1", root, group=cgroups.store_group(tmp_path / "store-a"))
    other = cgroups.Cgroups("v1", root, group=cgroups.store_group(tmp_path / "store-b"))
    assert mine.group != other.group and mine.group.startswith("shoal/")
    dirs = mine.create("m-a", cgroups.Limits(2, 1 << 30, 100))
    assert dirs == [str(root / c / mine.group / "m-a") for c in cgroups.V1_CONTROLLERS]
    assert (root / "memory" / mine.group / "m-a" / "memory.limit_in_bytes").read_text() == str(1 << 30)
    assert (root / "cpu" / mine.group / "m-a" / "cpu.cfs_quota_us").read_text() == "200000"
    # Another server's machine, booting right now: its group holds an (empty) cgroup this store never had.
    other._prepare()
    booting = root / "memory" / other.group / "m-b"
    booting.mkdir()
    stray = root / "memory" / mine.group / "gone"
    stray.mkdir()
    mine.sweep(keep={"m-a"})
    assert booting.is_dir() and not stray.exists()
    # The group itself comes back when something removed it meanwhile.
    for controller in cgroups.V1_CONTROLLERS:
        shutil.rmtree(root / controller / "shoal")
    assert mine.create("m-c", cgroups.Limits(1, 1 << 20)) == [str(root / c / mine.group / "m-c")
                                                            for c in cgroups.V1_CONTROLLERS]


def test_a_reserve_whose_keeper_fails_backs_off_and_keeps_no_range(tmp_path: Path) -> None:
    """A keeper that cannot make shells (here: not a helper at all) stops the reserve for a while, longer each
    time, and leaves no id range taken; machines meanwhile boot without it."""
    ids = IdRanges(tmp_path / "ids", first=1 << 20, slots=8)
    reserve = NodeReserve(lambda: "/bin/false", ids, "10.0.0.0/16", 4)
    try:
        assert [reserve._step() for _ in range(4)] == [5.0, 10.0, 20.0, 40.0]
        assert reserve.ready() == 0 and reserve.take("m1") is None
        assert [p for p in (tmp_path / "ids").iterdir() if p.name.isdigit()] == []
    finally:
        reserve.stop()
