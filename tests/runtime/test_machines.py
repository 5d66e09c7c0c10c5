"""Machines: both runtimes for what any machine must do, the namespace runtime for isolation and lifetime."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import REPO, node_address_space, parent_pid, scratch_root
from shoal.runtime.cgroups import Cgroups, store_group
from shoal.runtime.cgroups import detect as detect_cgroups
from shoal.runtime.layers import LayerStore
from shoal.runtime.machines import (
    DiskMount,
    Hardening,
    MachineError,
    MachineSpec,
    NamespaceRuntime,
    ProcessRuntime,
    detect_runtime,
    mount_points,
    probe_namespaces,
)
from shoal.runtime.nodenet import NetworkError, NodeNetwork

PATH = {"PATH": "/usr/local/bin:/usr/bin:/bin"}
_ns_problem: list[str | None] = []


def namespaces_problem() -> str | None:
    """Why namespace machines cannot run here (probed once), or None."""
    if not _ns_problem:
        probe_store = Path(tempfile.mkdtemp(prefix="shoal-probe-", dir=scratch_root()))
        try:
            _ns_problem.append(probe_namespaces(probe_store / "store", host_base_dir=probe_store / "hostbase"))
        finally:
            NamespaceRuntime(probe_store / "store", host_base_dir=probe_store / "hostbase").unmount_host_base()
            shutil.rmtree(probe_store, ignore_errors=True)
    return _ns_problem[0]


@pytest.fixture
def store() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="shoal-machines-", dir=scratch_root()))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def namespace_runtime(store: Path) -> NamespaceRuntime:
    # A private host base (the default is shared by the whole host under /run/shoal) so that the test can
    # unmount it and prove that nothing is left. The project checkout is hidden the way an operator hides any
    # extra host path (the server hides its state directory the same way): wherever CI clones it, it may lie
    # outside the directories masked by default.
    return NamespaceRuntime(store / "store", hide=[str(REPO)], host_base_dir=store / "hostbase")


def _teardown(runtime: Any, store: Path) -> None:
    """Leave nothing behind, even when the test failed half-way: machines, inits, mounts."""
    for machine_id in runtime.list():
        runtime.destroy(machine_id)
    for key in runtime.provisioners():
        runtime.stop_provisioner(key)
    if isinstance(runtime, NamespaceRuntime):
        runtime.adopt()  # also kills inits whose create() was interrupted
        runtime.unmount_host_base()
        assert mount_points(store) == []


@pytest.fixture
def ns(store: Path) -> Iterator[NamespaceRuntime]:
    problem = namespaces_problem()
    if problem:
        pytest.skip(f"namespace machines unavailable here: {problem}")
    runtime = namespace_runtime(store)
    yield runtime
    _teardown(runtime, store)


@pytest.fixture(scope="session")
def hardening() -> Iterator[Hardening]:
    """What `shoal serve` uses by default: user namespaces, networks of their own (machines here get no
    address: loopback only), cgroup limits."""
    version, why = detect_cgroups()
    if version is None or os.geteuid() != 0:
        pytest.skip(f"hardened machines need root and cgroups ({why})")
    network = claim_network()
    # A group of this test process's own: a server's start-up sweep elsewhere on the host never touches it.
    cgroups = Cgroups(version, group=store_group(Path(f"/run/shoal-tests-{os.getpid()}")))
    yield Hardening(True, network, cgroups)
    network.down()
    cgroups.remove_group()


def claim_network() -> NodeNetwork:
    """A node network on an address space no other server of this host uses (several test runs may share it)."""
    for _ in range(20):
        network = NodeNetwork(node_address_space(), [])
        try:
            network.up()
        except NetworkError:
            continue
        return network
    raise AssertionError("no free node address space")


@pytest.fixture(params=["namespaces", "hardened", "process"])
def runtime(request: pytest.FixtureRequest, store: Path) -> Iterator[Any]:
    if request.param in ("namespaces", "hardened"):
        problem = namespaces_problem()
        if problem:
            pytest.skip(f"namespace machines unavailable here: {problem}")
        hardened = request.getfixturevalue("hardening") if request.param == "hardened" else None
        rt: Any = NamespaceRuntime(store / "store", hide=[str(REPO)], host_base_dir=store / "hostbase",
                                   hardening=hardened)
    else:
        rt = ProcessRuntime(store / "store")
    yield rt
    _teardown(rt, store)


def hand_made_layer(store: Path, name: str = "tools", files: dict[str, str] | None = None) -> str:
    """A lower layer made by hand: a directory with a file in it."""
    layer = store / "hand-layers" / name
    for rel, text in (files or {"opt/shoal-test/hello.txt": "hello from a layer\n"}).items():
        (layer / rel).parent.mkdir(parents=True, exist_ok=True)
        (layer / rel).write_text(text)
    return str(layer)


def disk(store: Path, name: str, layers: list[str] | None = None) -> DiskMount:
    root = store / "disks" / name
    return DiskMount(lower=layers or [], upper=str(root / "upper"), work=str(root / "work"))


def spec(store: Path, machine_id: str, *, layers: list[str] | None = None, data: dict[int, DiskMount] | None = None,
         hostname: str | None = None, base: str = "host") -> MachineSpec:
    return MachineSpec(machine_id=machine_id, hostname=hostname or machine_id, base=base,
                       os_disk=disk(store, f"os-{machine_id}", layers),
                       data_disks=data if data is not None else {0: disk(store, f"data-{machine_id}")},
                       temp_dir=str(store / "temp" / machine_id),
                       limits={"cores": 1, "memoryBytes": 1 << 30, "pids": 4096})


def host_processes_with(marker: str) -> list[int]:
    """Live host processes whose command line contains ``marker``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if marker in cmdline:
                found.append(int(entry))
    return found


def test_detect_runtime_honours_preference_and_environment(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHOAL_RUNTIME", raising=False)
    assert detect_runtime(store / "store", prefer="process").isolation == "process"
    monkeypatch.setenv("SHOAL_RUNTIME", "process")
    assert detect_runtime(store / "store").isolation == "process"
    monkeypatch.setenv("SHOAL_RUNTIME", "bogus")
    with pytest.raises(ValueError):
        detect_runtime(store / "store")
    monkeypatch.delenv("SHOAL_RUNTIME")
    if namespaces_problem() is None:
        found = detect_runtime(store / "store", host_base_dir=store / "hostbase")
        assert isinstance(found, NamespaceRuntime)
        found.unmount_host_base()
        assert mount_points(store) == [] and found.list() == []


# --------------------------------------------------------------------------------------- both runtimes


def test_command_output_and_exit_code_come_back(runtime: Any, store: Path) -> None:
    runtime.create(spec(store, "m1"))
    result = runtime.run("m1", ["sh", "-c", "echo hi; echo oops >&2; exit 3"], env=PATH)
    assert result == {"exitCode": 3, "signal": None, "timedOut": False, "stdout": b"hi\n", "stderr": b"oops\n"}


def test_output_goes_to_the_files_given_inside_the_machine(runtime: Any, store: Path) -> None:
    machine = spec(store, "m1")
    runtime.create(machine)
    result = runtime.run("m1", ["sh", "-c", "echo to-out; echo to-err >&2"], env=PATH, stdout="/mnt/stdout.txt",
                         stderr="/mnt/stderr.txt")
    assert result == {"exitCode": 0, "signal": None, "timedOut": False}
    temp = Path(machine.temp_dir)  # the temporary drive (/mnt inside)
    assert (temp / "stdout.txt").read_text() == "to-out\n" and (temp / "stderr.txt").read_text() == "to-err\n"


def test_a_spawned_command_in_a_directory_to_be_made(runtime: Any, store: Path) -> None:
    machine = spec(store, "m1")
    runtime.create(machine)
    started = runtime.spawn("m1", ["sh", "-c", "echo here > out.txt"], env=PATH, cwd="/mnt/tasks/t1/wd", make_cwd=2)
    assert runtime.wait(started["pid"], timeout=30)["exitCode"] == 0
    assert (Path(machine.temp_dir) / "tasks" / "t1" / "wd" / "out.txt").read_text() == "here\n"


def test_software_from_an_os_layer_is_visible(runtime: Any, store: Path) -> None:
    runtime.create(spec(store, "m1", layers=[hand_made_layer(store)]))
    result = runtime.run("m1", ["cat", "hello.txt"], env=PATH, cwd="/opt/shoal-test")
    assert result["stdout"] == b"hello from a layer\n"


def test_a_captured_os_disk_boots_as_a_layer_of_the_store(runtime: Any, store: Path) -> None:
    # The image pipeline in miniature: a VM changes its OS disk, the upper becomes a store layer, and a new
    # machine from that layer sees the change.
    layers = LayerStore(store / "store" / "layers")
    base_layer = layers.import_dir(Path(hand_made_layer(store, "app-v1", {"opt/app/version": "1\n",
                                                                          "opt/app/old": "x\n"})))
    vm = spec(store, "vm", layers=[str(layers.unpacked(base_layer.digest))])
    runtime.create(vm)
    result = runtime.run("vm", ["sh", "-c", "echo 2 > version && rm old"], env=PATH, cwd="/opt/app")
    assert result["exitCode"] == 0, result
    runtime.destroy("vm")
    captured = layers.capture(Path(vm.os_disk.upper))
    stack = [str(layers.unpacked(captured.digest)), str(layers.unpacked(base_layer.digest))]
    runtime.create(spec(store, "node", layers=stack))
    result = runtime.run("node", ["sh", "-c", "cat version; ls"], env=PATH, cwd="/opt/app")
    if runtime.isolation == "namespaces":
        assert result["stdout"] == b"2\nversion\n"  # the deletion travelled as a whiteout
    else:
        assert result["stdout"].startswith(b"2\n")  # plain directories record no deletions (documented)


def test_data_disk_writes_land_in_its_upper_and_outlive_the_machine(runtime: Any, store: Path) -> None:
    lun0 = disk(store, "shared-data")
    runtime.create(spec(store, "writer", data={0: lun0}))
    result = runtime.run("writer", ["sh", "-c", "echo persisted > result.txt"], env=PATH, cwd="/datadisks/lun0")
    assert result["exitCode"] == 0
    assert (Path(lun0.upper) / "result.txt").read_text() == "persisted\n"

    runtime.destroy("writer")
    assert runtime.status("writer") == "missing"
    assert (Path(lun0.upper) / "result.txt").exists()  # destroy never touches disk uppers

    runtime.create(spec(store, "reader", data={0: lun0}))
    result = runtime.run("reader", ["cat", "result.txt"], env=PATH, cwd="/datadisks/lun0")
    assert result["stdout"] == b"persisted\n"


def test_environment_is_exactly_what_is_given(runtime: Any, store: Path) -> None:
    runtime.create(spec(store, "m1"))
    env = {**PATH, "FOO": "bar baz", "EMPTY": ""}
    result = runtime.run("m1", ["env"], env=env)
    seen = result["stdout"].decode().splitlines()
    if runtime.isolation == "process":
        # The fallback adds where the machine's places are (absolute paths are not remapped there).
        extra = sorted(line.split("=", 1)[0] for line in seen if line.startswith("SHOAL_"))
        assert extra == ["SHOAL_DATADISK_LUN0", "SHOAL_MACHINE_ROOT", "SHOAL_TEMP_DIR"]
        seen = [line for line in seen if not line.startswith("SHOAL_")]
    assert sorted(seen) == sorted(f"{k}={v}" for k, v in env.items())


def test_working_directory_is_honoured(runtime: Any, store: Path) -> None:
    machine = spec(store, "m1")
    runtime.create(machine)
    result = runtime.run("m1", ["sh", "-c", "echo here > where.txt"], env=PATH, cwd="/mnt/resource")
    assert result["exitCode"] == 0
    assert (Path(machine.temp_dir) / "where.txt").read_text() == "here\n"  # the temporary drive


def test_timeout_kills_the_whole_process_tree(runtime: Any, store: Path) -> None:
    runtime.create(spec(store, "m1"))
    marker = str(random.randint(100_000, 999_999))  # unique sleep durations to find the processes again
    script = f"(sleep {marker}1 &); sleep {marker}2 & sleep {marker}3"
    if runtime.isolation == "namespaces":
        script = f"setsid sleep {marker}4 & " + script  # a daemon in a session of its own: still killed
    started = time.monotonic()
    result = runtime.run("m1", ["sh", "-c", script], env=PATH, timeout=0.5)
    assert time.monotonic() - started < 10
    assert result["timedOut"] is True and result["signal"] == signal.SIGKILL and result["exitCode"] == 137
    assert host_processes_with(f"sleep {marker}") == []
    assert runtime.run("m1", ["true"], env=PATH)["exitCode"] == 0  # the machine itself is untouched


def test_a_missing_program_is_reported(runtime: Any, store: Path) -> None:
    runtime.create(spec(store, "m1"))
    result = runtime.run("m1", ["no-such-program-here"], env=PATH)
    assert result["exitCode"] == 127 and "No such file" in result["error"]


def test_stdin_is_fed(runtime: Any, store: Path) -> None:
    runtime.create(spec(store, "m1"))
    data = os.urandom(300_000)  # more than a pipe buffer: must be written while reading the output
    result = runtime.run("m1", ["cat"], env=PATH, stdin=data)
    assert result["stdout"] == data


def test_spawned_command_can_be_waited_for_and_killed(runtime: Any, store: Path) -> None:
    runtime.create(spec(store, "m1"))
    quick = runtime.spawn("m1", ["sh", "-c", "echo spawned; exit 4"], env=PATH)
    slow = runtime.spawn("m1", ["sleep", "1000"], env=PATH)
    assert runtime.wait(quick["pid"], timeout=30) == {"exitCode": 4, "signal": None, "timedOut": False,
                                                       "stdout": b"spawned\n", "stderr": b""}
    assert runtime.wait(slow["pid"], timeout=0.05) is None
    runtime.kill(slow["pid"])
    result = runtime.wait(slow["pid"], timeout=30)
    assert result is not None and result["signal"] == signal.SIGKILL


def test_create_is_idempotent_and_destroy_too(runtime: Any, store: Path) -> None:
    machine = spec(store, "m1")
    first = runtime.create(machine)
    assert runtime.create(machine) == first
    assert runtime.status("m1") == "running" and runtime.list() == ["m1"]
    runtime.destroy("m1")
    runtime.destroy("m1")
    assert runtime.status("m1") == "missing" and runtime.list() == []
    assert not Path(machine.temp_dir).exists()  # the temporary drive goes with the machine


def test_a_volatile_os_disk_can_be_mounted_again(runtime: Any, store: Path) -> None:
    # Pool nodes run without fsync; the kernel marks such an upper dir and refuses the next mount unless the
    # runtime clears the mark (a "reboot" of a node re-creates it on the same OS disk).
    machine = spec(store, "node")
    machine = MachineSpec(**{**machine.__dict__, "volatile": True})
    runtime.create(machine)
    runtime.run("node", ["sh", "-c", "echo kept > state.txt"], env=PATH, cwd="/mnt/resource")
    # (the process runtime does not rewrite absolute paths: its machine's root is SHOAL_MACHINE_ROOT)
    runtime.run("node", ["sh", "-c", 'mkdir -p "$SHOAL_MACHINE_ROOT/var/lib/app" && '
                                     'echo v1 > "$SHOAL_MACHINE_ROOT/var/lib/app/version"'], env=PATH)
    runtime.destroy("node", keep_temp=True)
    runtime.create(machine)
    result = runtime.run("node", ["cat", "state.txt", "version"], env=PATH, cwd="/mnt/resource")
    assert result["stdout"] == b"kept\n" or runtime.isolation == "process"
    assert runtime.run("node", ["cat", "version"], env=PATH, cwd="/var/lib/app")["stdout"] == b"v1\n"


def test_host_path_reaches_files_inside(runtime: Any, store: Path) -> None:
    runtime.create(spec(store, "m1"))
    runtime.run("m1", ["sh", "-c", "echo report > out.txt"], env=PATH, cwd="/datadisks/lun0")
    assert Path(runtime.host_path("m1", "/datadisks/lun0/out.txt")).read_text() == "report\n"


# --------------------------------------------------------------------------------------- namespaces only


def test_destroying_a_machine_ends_its_running_commands(ns: NamespaceRuntime, store: Path) -> None:
    machine = spec(store, "m1")
    ns.create(machine)
    job = ns.spawn("m1", ["sh", "-c", "touch /datadisks/lun0/started; sleep 1000"], env=PATH)
    deadline = time.monotonic() + 30
    while not (Path(machine.data_disks[0].upper) / "started").exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    ns.destroy("m1")
    result = ns.wait(job["pid"], timeout=30)
    assert result is not None and result["signal"] == signal.SIGKILL


def test_the_host_base_is_mounted_once_and_shared(ns: NamespaceRuntime, store: Path) -> None:
    ns.create(spec(store, "m1"))
    again = namespace_runtime(store)  # e.g. a restarted server
    assert again.host_base.ensure() == ns.host_base.ensure()
    assert mount_points(ns.host_base.bases_dir) == [str(ns.host_base.mask), str(ns.host_base.path)]


def test_a_damaged_host_mask_is_replaced(ns: NamespaceRuntime, store: Path) -> None:
    ns.host_base.ensure()
    for rel in sorted(ns.host_base.masked, reverse=True):
        shutil.rmtree(ns.host_base.mask / rel)  # e.g. an rm -rf that went too far
    ns.create(spec(store, "m1"))
    assert ns.run("m1", ["ls", "-A", "/work", "/root"], env=PATH)["stdout"] == b"/root:\n\n/work:\n"
    assert mount_points(ns.host_base.bases_dir) == [str(ns.host_base.mask), str(ns.host_base.path)]


def test_machine_cannot_see_host_private_dirs_the_store_or_other_machines(ns: NamespaceRuntime, store: Path) -> None:
    secret = f"shoal-secret-{uuid.uuid4().hex[:8]}"
    host_files = [Path("/tmp") / secret, Path("/root") / f".{secret}"]
    try:
        for path in host_files:
            path.write_text("host only")
        ns.create(spec(store, "other"))
        ns.run("other", ["sh", "-c", f"echo mine > /tmp/{secret}-other; echo mine > /datadisks/lun0/{secret}"],
               env=PATH)
        ns.create(spec(store, "m1"))
        checks = [*map(str, host_files), f"/tmp/{secret}-other", f"/datadisks/lun0/{secret}", str(ns.store_dir),
                  str(store), str(REPO / "pyproject.toml")]
        script = "; ".join(f"test -e {p} && echo visible: {p}" for p in checks) + "; ls -A /root /home /work /tmp"
        result = ns.run("m1", ["sh", "-c", script + "; true"], env=PATH)
        assert b"visible" not in result["stdout"]
        listing = [line for line in result["stdout"].decode().splitlines() if line and not line.endswith(":")]
        assert listing == []  # /root /home /work /tmp all empty
    finally:
        for path in host_files:
            path.unlink(missing_ok=True)


def test_deleting_system_files_inside_leaves_the_host_alone(ns: NamespaceRuntime, store: Path) -> None:
    before = sorted(os.listdir("/usr/share/doc"))
    machine = spec(store, "m1")
    ns.create(machine)
    result = ns.run("m1", ["sh", "-c", "rm -rf /usr/share/doc && test ! -e /usr/share/doc"], env=PATH)
    assert result["exitCode"] == 0, result
    assert sorted(os.listdir("/usr/share/doc")) == before
    whiteout = os.lstat(Path(machine.os_disk.upper) / "usr/share/doc")  # the deletion lives in the OS disk
    assert (whiteout.st_mode & 0o170000) == 0o020000 and whiteout.st_rdev == 0


def test_hostname_and_pid_namespace_are_the_machines(ns: NamespaceRuntime, store: Path) -> None:
    ns.create(spec(store, "m1", hostname="batch-node-7"))
    result = ns.run("m1", ["sh", "-c", "hostname; cat /etc/hostname; cat /proc/1/comm; echo $$"], env=PATH)
    lines = result["stdout"].decode().split()
    assert lines[:3] == ["batch-node-7", "batch-node-7", "shoal-init"]
    assert 1 < int(lines[3]) < 1000  # a small pid of the machine's own pid namespace
    assert os.uname().nodename != "batch-node-7"


def test_runs_as_a_user_of_the_machine(ns: NamespaceRuntime, store: Path) -> None:
    ns.create(spec(store, "m1"))
    assert ns.run("m1", ["id", "-u"], env=PATH, user="nobody")["stdout"] == b"65534\n"
    assert ns.run("m1", ["id", "-u"], env=PATH, user="no-such-user")["exitCode"] == 125


def test_layers_stack_in_order_even_beyond_the_mount_option_limit(ns: NamespaceRuntime, store: Path) -> None:
    # 60 layers of store-like paths exceed the one-page mount(2) option string: the helper must switch to
    # the new mount API. The top layer (first in the list) wins.
    layers = [hand_made_layer(store, f"layer-{i:02d}-" + "x" * 60, {"etc/which": f"{i}\n", f"opt/l{i}": "x"})
              for i in range(60)]
    ns.create(spec(store, "m1", layers=layers))
    result = ns.run("m1", ["sh", "-c", "cat /etc/which; ls /opt | grep -c '^l[0-9]'"], env=PATH)
    assert result["stdout"].decode().split() == ["0", "60"]


def test_rootfs_base_and_data_disk_layers(ns: NamespaceRuntime, store: Path) -> None:
    # A root filesystem from a directory (as imported from a tarball) needs nothing of the host: the helper is
    # static and runs from outside. This tiny one is merged-/usr with the host's /usr bound in read-only.
    rootfs = Path(hand_made_layer(store, "rootfs", {"etc/os-release": "ID=handmade\n"}))
    for name in ("bin", "lib", "lib64", "sbin"):
        (rootfs / name).symlink_to(f"usr/{name}")
    data_layer = hand_made_layer(store, "data-layer", {"input.csv": "a,b\n"})
    machine = MachineSpec(machine_id="m1", hostname="m1", base=str(rootfs), os_disk=disk(store, "os"),
                          data_disks={1: disk(store, "d1", [data_layer])}, temp_dir=str(store / "temp"),
                          binds=[("/usr", "/usr", True)])
    ns.create(machine)
    result = ns.run("m1", ["sh", "-c", "cat /etc/os-release /datadisks/lun1/input.csv; touch /usr/x"], env=PATH)
    assert result["stdout"] == b"ID=handmade\na,b\n"
    assert result["exitCode"] != 0 and b"Read-only" in result["stderr"]


def test_machine_survives_the_process_that_created_it(ns: NamespaceRuntime, store: Path) -> None:
    machine = spec(store, "survivor")
    creator = """
import json, os, signal, sys
from pathlib import Path
from shoal.runtime.machines import MachineSpec, NamespaceRuntime
runtime = NamespaceRuntime(Path(sys.argv[1]), hide=[sys.argv[4]], host_base_dir=Path(sys.argv[3]))
info = runtime.create(MachineSpec.from_dict(json.loads(sys.argv[2])))
print(json.dumps(info), flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # a crash, not a clean exit
"""
    proc = subprocess.run([sys.executable, "-c", creator, str(ns.store_dir), json.dumps(machine.to_dict()),
                           str(ns.host_base.bases_dir), str(REPO)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    init_pid = json.loads(proc.stdout)["initPid"]

    assert ns.adopt() == {"survivor": "running"}
    result = ns.run("survivor", ["sh", "-c", "echo alive > /datadisks/lun0/alive; hostname"], env=PATH)
    assert result["stdout"] == b"survivor\n"

    ns.destroy("survivor")
    assert ns.status("survivor") == "missing"
    state = Path(f"/proc/{init_pid}/stat")
    assert not state.exists() or state.read_text().split(") ")[1][0] in "ZX"  # dead (maybe not yet reaped)
    assert mount_points(ns.store_dir / "machines") == []
    assert not (ns.store_dir / "machines" / "survivor").exists()
    assert (Path(machine.data_disks[0].upper) / "alive").exists()


def test_adopt_cleans_up_machines_whose_init_died(ns: NamespaceRuntime, store: Path) -> None:
    info = ns.create(spec(store, "m1"))
    os.kill(info["initPid"], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while ns.status("m1") == "running" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ns.status("m1") == "stopped"
    with pytest.raises(MachineError, match="not running"):
        namespace_runtime(store).run("m1", ["true"], env=PATH)
    assert ns.adopt() == {"m1": "stopped"}
    assert ns.status("m1") == "missing" and not (ns.store_dir / "machines" / "m1").exists()


def test_a_bad_mount_fails_create_cleanly(ns: NamespaceRuntime, store: Path) -> None:
    broken = spec(store, "m1", layers=[str(store / "does-not-exist")])
    with pytest.raises(MachineError, match="overlay"):
        ns.create(broken)
    assert ns.status("m1") == "missing" and not (ns.store_dir / "machines" / "m1").exists()
    assert [pid for _, pid, _ in ns._scan_inits()] == []


# --- resident provisioners (the nodes of a gallery replica are built by one) ---------------------------------

def provisioner_pid(ns: NamespaceRuntime, key: str) -> int:
    return int(ns.start_provisioner(key)._proc.pid)


def test_a_provisioner_builds_the_same_machine_a_launched_helper_builds(ns: NamespaceRuntime, store: Path) -> None:
    layer = hand_made_layer(store)
    ns.create(spec(store, "launched", layers=[layer]))
    ns.create(spec(store, "built", layers=[layer]), provisioner="replica-a")
    server = provisioner_pid(ns, "replica-a")
    ns.create(spec(store, "built2", layers=[layer]), provisioner="replica-a")
    assert provisioner_pid(ns, "replica-a") == server  # one resident process builds them all
    script = "hostname; cat /proc/1/comm; echo $$; cat /opt/shoal-test/hello.txt; ls /datadisks; ls -d /mnt/resource"
    seen = {m: ns.run(m, ["sh", "-c", script], env=PATH)["stdout"].decode().split() for m in ("launched", "built")}
    assert seen["built"][0] == "built" and seen["launched"][0] == "launched"
    assert seen["built"][1:2] == seen["launched"][1:2] == ["shoal-init"]
    assert seen["built"][3:] == seen["launched"][3:] == ["hello", "from", "a", "layer", "lun0", "/mnt/resource"]
    assert 1 < int(seen["built"][2]) < 1000
    # The init shows the command line a launched one has: a restarted server finds it by that.
    assert sorted(m for m, _, _ in ns._scan_inits()) == ["built", "built2", "launched"]
    with open(f"/proc/{ns.init_pid('built')}/cmdline", "rb") as f:
        args = [a for a in f.read().split(b"\0") if a]
    assert args[1:4] == [b"init", b"--id", b"built"] and args[-1].endswith(b"/machines/built/root")
    # The inits are the provisioner's children while it runs: those that end leave no zombies behind.
    ns.destroy("built")
    ns.destroy("built2")
    assert children_of(server) == []


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            ppid = parent_pid(entry.name)
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            found.append(int(entry.name))
    return found


def test_machines_outlive_their_provisioner_and_a_new_one_takes_over(ns: NamespaceRuntime, store: Path) -> None:
    ns.create(spec(store, "m1"), provisioner="replica-a")
    os.kill(provisioner_pid(ns, "replica-a"), signal.SIGKILL)  # it crashed (or the server did)
    assert ns.run("m1", ["hostname"], env=PATH)["stdout"] == b"m1\n"
    assert namespace_runtime(store).adopt() == {"m1": "running"}  # a restarted server finds the machine
    ns.create(spec(store, "m2"), provisioner="replica-a")  # a fresh provisioner, nothing else to do
    assert ns.run("m2", ["hostname"], env=PATH)["stdout"] == b"m2\n"
    ns.stop_provisioner("replica-a")
    assert ns.provisioners() == [] and ns.status("m1") == ns.status("m2") == "running"


def test_a_failed_build_through_a_provisioner_leaves_nothing_and_the_next_one_works(ns: NamespaceRuntime,
                                                                                   store: Path) -> None:
    with pytest.raises(MachineError, match="overlay"):
        ns.create(spec(store, "m1", layers=[str(store / "does-not-exist")]), provisioner="replica-a")
    assert ns.status("m1") == "missing" and not (ns.store_dir / "machines" / "m1").exists()
    assert ns._scan_inits() == []
    ns.create(spec(store, "m2"), provisioner="replica-a")
    assert ns.run("m2", ["hostname"], env=PATH)["stdout"] == b"m2\n"


# --- hardened machines -------------------------------------------------------------------------------------------

@pytest.fixture
def hardened(store: Path, hardening: Hardening) -> Iterator[NamespaceRuntime]:
    problem = namespaces_problem()
    if problem:
        pytest.skip(f"namespace machines unavailable here: {problem}")
    rt = NamespaceRuntime(store / "store", hide=[str(REPO)], host_base_dir=store / "hostbase", hardening=hardening)
    yield rt
    _teardown(rt, store)


def test_root_in_a_hardened_machine_owns_its_files_under_its_own_host_ids(hardened: NamespaceRuntime,
                                                                           store: Path) -> None:
    machine = spec(store, "m1")
    hardened.create(machine)
    result = hardened.run("m1", ["sh", "-c", "id -u; touch /etc/new-file /mnt/scratch /datadisks/lun0/data; "
                                 "chown 1000:1000 /datadisks/lun0/data; cat /proc/self/uid_map"], env=PATH)
    assert result["exitCode"] == 0, result
    assert result["stdout"].split()[0] == b"0"
    ids = hardened.id_range("m1")
    assert ids is not None and ids.base >= 1 << 20
    assert result["stdout"].split()[1:4] == [b"0", str(ids.base).encode(), b"65536"]
    assert (Path(machine.os_disk.upper) / "etc" / "new-file").stat().st_uid == ids.base
    assert (Path(machine.temp_dir) / "scratch").stat().st_uid == ids.base
    assert (Path(machine.data_disks[0].upper) / "data").stat().st_uid == ids.base + 1000
    # A snapshot records the image's own ids, so the layer is shareable between machines.
    layers = LayerStore(store / "store" / "layers")
    captured = layers.capture(Path(machine.data_disks[0].upper), id_shift=ids.base)
    assert (layers.unpacked(captured.digest) / "data").stat().st_uid == 1000


def test_two_hardened_machines_get_distinct_ranges_and_a_reboot_keeps_its_own(hardened: NamespaceRuntime,
                                                                             store: Path) -> None:
    hardened.create(spec(store, "m1"))
    hardened.create(spec(store, "m2"))
    first, second = hardened.id_range("m1"), hardened.id_range("m2")
    assert first is not None and second is not None and first.base != second.base
    hardened.destroy("m1", keep_temp=True)
    hardened.create(spec(store, "m1"))
    assert hardened.id_range("m1") == first


def test_a_command_beyond_the_memory_limit_is_killed_and_the_machine_stays(hardened: NamespaceRuntime,
                                                                          store: Path) -> None:
    hardened.create(spec(store, "m1"))  # 1 GiB
    result = hardened.run("m1", ["python3", "-c", "x = bytearray(1536 << 20); x[::4096] = b'x' * (384 << 8)"],
                          env=PATH)
    assert result["exitCode"] == 137 and result["signal"] == 9, result
    assert hardened.status("m1") == "running"
    burn = hardened.run("m1", ["sh", "-c", "timeout 1 sh -c 'while :; do :; done'; echo ok"], env=PATH)
    assert burn["stdout"] == b"ok\n"
    usage = hardened.usage("m1")
    assert usage is not None and usage["cpuSeconds"] > 0.3 and usage["memoryBytes"] > 0


def test_a_hardened_command_has_the_sandbox(hardened: NamespaceRuntime, store: Path) -> None:
    hardened.create(spec(store, "m1"))
    result = hardened.run("m1", ["sh", "-c", "grep -E '^(CapBnd|Seccomp|NoNewPrivs)' /proc/self/status; "
                                 "cat /proc/sys/kernel/core_pattern > /dev/null; "
                                 "echo x > /proc/sys/kernel/core_pattern || echo read-only; "
                                 "umount /proc || echo locked"],
                          env=PATH)
    status = dict(line.split(":\t") for line in result["stdout"].decode().splitlines() if ":\t" in line)
    bounding = int(status["CapBnd"], 16)
    for cap in (16, 17, 2, 25, 22):  # SYS_MODULE, SYS_RAWIO, DAC_READ_SEARCH, SYS_TIME, SYS_BOOT
        assert not bounding & (1 << cap), cap
    assert bounding & (1 << 21) and bounding & (1 << 12)  # SYS_ADMIN, NET_ADMIN (in its own namespaces)
    assert status["Seccomp"] == "2" and status["NoNewPrivs"] == "0"
    assert b"read-only" in result["stdout"] and b"locked" in result["stdout"]
    nonadmin = hardened.run("m1", ["grep", "NoNewPrivs", "/proc/self/status"], env=PATH, user="65534")
    assert nonadmin["stdout"].split()[-1] == b"1"


def test_masked_directories_are_empty_and_read_only_and_dev_shm_is_everyones(hardened: NamespaceRuntime,
                                                                            store: Path) -> None:
    hardened.create(spec(store, "m1"))
    script = ("for d in /sys/firmware /proc/acpi; do test -d $d || continue; echo $d $(ls -A $d | wc -l); "
              "touch $d/x 2>/dev/null && echo $d writable; mount -o remount,rw $d 2>/dev/null && echo $d rw; done; "
              "stat -c '%a %U' /dev/shm")
    result = hardened.run("m1", ["sh", "-c", script], env=PATH)
    lines = result["stdout"].decode().splitlines()
    assert "/sys/firmware 0" in lines and not any("writable" in x or " rw" in x for x in lines), lines
    assert lines[-1] == "1777 root"
    nonadmin = hardened.run("m1", ["sh", "-c", "echo shared > /dev/shm/mine && cat /dev/shm/mine"], env=PATH,
                            user="65534")
    assert nonadmin["stdout"] == b"shared\n", nonadmin


def test_a_hardened_machine_holds_only_its_own_mounts_and_its_init_nothing_of_the_host(hardened: NamespaceRuntime,
                                                                                         store: Path) -> None:
    """The id-mapped layers an init builds the machine from, and the host's tree it started in, are gone once the
    machine is up: every mount point inside is one the machine is built with, once, the host's root file system
    is mounted nowhere whole, and the init keeps no descriptor of them."""
    hardened.create(spec(store, "m1"))
    result = hardened.run("m1", ["cat", "/proc/self/mountinfo"], env=PATH)
    mounts = [line.split(" - ")[0].split() + line.split(" - ")[1].split()[:1]
              for line in result["stdout"].decode().splitlines()]
    points = [m[4] for m in mounts]
    assert len(points) == len(set(points)), points
    own = {"/", "/mnt", "/run", "/etc/resolv.conf", "/etc/hosts", "/etc/hostname", "/dev", "/proc", "/sys"}
    assert all(p in own or p.startswith(("/dev/", "/proc/", "/sys/", "/datadisks/")) for p in points), points
    host_root = os.stat("/").st_dev
    whole = [m for m in mounts if m[3] == "/" and m[2] == f"{os.major(host_root)}:{os.minor(host_root)}"]
    assert whole == [], whole
    pid = hardened._inits["m1"][0]
    held = sorted(os.readlink(fd).split("[")[0] for fd in Path(f"/proc/{pid}/fd").iterdir())
    assert held == ["/dev/null"] * 3 + ["anon_inode:", "socket:"], held  # stdio, its signals, its control socket


def spawned(runtime: NamespaceRuntime, argv: list[str], **kwargs: Any) -> dict[str, Any]:
    started = runtime.spawn("m1", argv, env=PATH, **kwargs)
    result = runtime.wait(started["pid"], timeout=30)
    assert result is not None
    return result


def test_spawned_commands_come_from_the_machines_init_with_the_same_sandbox(hardened: NamespaceRuntime,
                                                                            store: Path) -> None:
    hardened.create(spec(store, "m1"))
    script = "grep -E '^(CapBnd|Seccomp|NoNewPrivs|PPid)' /proc/self/status /proc/$PPID/status"
    result = spawned(hardened, ["sh", "-c", script])
    lines = result["stdout"].decode().splitlines()
    mine = dict(line.split(":", 1)[1].split(":\t") for line in lines if line.startswith("/proc/self/"))
    shim = dict(line.split(":", 1)[1].split(":\t") for line in lines if not line.startswith("/proc/self/"))
    assert shim["PPid"] == "1"  # the command's shim was forked by the machine's init: no helper joined in
    bounding = int(mine["CapBnd"], 16)
    for cap in (16, 17, 2, 25, 22):
        assert not bounding & (1 << cap), cap
    assert mine["Seccomp"] == "2" and mine["NoNewPrivs"] == "0"
    nonadmin = spawned(hardened, ["grep", "NoNewPrivs", "/proc/self/status"], user="65534")
    assert nonadmin["stdout"].split()[-1] == b"1"
    # The starter's socket is the host root's alone, and out of the machine's sight.
    control = store / "store" / "machines" / "m1" / "control"
    st = control.lstat()
    assert st.st_uid == 0 and st.st_mode & 0o077 == 0
    assert spawned(hardened, ["sh", "-c", f"test -e {control}"])["exitCode"] == 1
    probe = ("import os, socket\nos.setgroups([]); os.setgid(65534); os.setuid(65534)\n"
             "s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)\n"
             f"try:\n    s.connect({str(control)!r})\nexcept PermissionError:\n    print('refused')\n")
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout == "refused\n"


def test_a_spawned_command_can_have_its_working_directory_made_in_the_machine(hardened: NamespaceRuntime,
                                                                              store: Path) -> None:
    """make_cwd: the machine's root makes the missing directories, the last N the user's, following no link."""
    machine = spec(store, "m1")
    hardened.create(machine)
    ids = hardened.id_range("m1")
    assert ids is not None
    result = spawned(hardened, ["pwd"], cwd="/mnt/tasks/job/t1/wd", make_cwd=2, user="65534")
    assert result["exitCode"] == 0 and result["stdout"] == b"/mnt/tasks/job/t1/wd\n", result
    temp = Path(machine.temp_dir)
    assert [(temp / rel).stat().st_uid - ids.base for rel in ("tasks", "tasks/job", "tasks/job/t1",
                                                              "tasks/job/t1/wd")] == [0, 0, 65534, 65534]
    # A link the user planted in its own directory is refused, not followed (root would chown /etc for it).
    planted = spawned(hardened, ["sh", "-c", "ln -s /etc /mnt/tasks/job/t1/wd2"], user="65534")
    assert planted["exitCode"] == 0, planted
    with pytest.raises(MachineError, match="make /mnt/tasks/job/t1/wd2/x in the machine: Too many levels of sym"):
        spawned(hardened, ["pwd"], cwd="/mnt/tasks/job/t1/wd2/x", make_cwd=2, user="65534")
    assert spawned(hardened, ["stat", "-c", "%u", "/etc"])["stdout"] == b"0\n"
    # An output file the user replaced with a link is made anew, not opened through the link.
    spawned(hardened, ["sh", "-c", "ln -s /etc/passwd /mnt/tasks/job/t1/out"], user="65534")
    spawned(hardened, ["echo", "mine"], stdout="/mnt/tasks/job/t1/out", user="65534")
    assert spawned(hardened, ["sh", "-c", "cat /mnt/tasks/job/t1/out; grep -c ^root: /etc/passwd"])["stdout"] == \
        b"mine\n1\n"


def test_a_machine_whose_init_is_another_build_starts_its_commands_with_join(hardened: NamespaceRuntime,
                                                                           store: Path) -> None:
    """A machine from before an upgrade: its init may not know this build's requests, so join (this build) runs
    its commands."""
    hardened.create(spec(store, "m1"))
    other = store / "shoal-machine-next-build"
    shutil.copy2(hardened.helper(), other)
    hardened._helper = str(other)  # this process now runs another build than the machine's init
    result = spawned(hardened, ["sh", "-c", "grep PPid /proc/$PPID/status; pwd"], cwd="/mnt/j/wd", make_cwd=1)
    assert result["exitCode"] == 0, result
    assert result["stdout"].split()[1:] == [b"0", b"/mnt/j/wd"]  # the shim's parent is join, outside the machine


def test_a_bad_request_to_the_starter_fails_alone(hardened: NamespaceRuntime, store: Path) -> None:
    import array
    import socket

    hardened.create(spec(store, "m1"))
    control = str(store / "store" / "machines" / "m1" / "control")
    for payload in (b"--bogus\0x\0--\0true\0", b"--env\0" + b"9" * 30 + b"\0--\0true\0", b"\xff" * 70,
                    b"--cwd\0/\0--stdout-fd\0" + b"7\0--\0true\0"):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as conn:
            conn.connect(control)
            conn.sendmsg([payload], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [theirs.fileno()]))])
        theirs.close()
        ours.settimeout(30)
        assert ours.recv(100) == b"S"
        line = ours.recv(4096)
        assert line.startswith(b"R 125 0 0 helper "), (payload, line)
        ours.close()
    assert spawned(hardened, ["echo", "still", "here"])["stdout"] == b"still here\n"


def test_a_starter_with_no_room_for_a_connection_leaves_its_commands_to_join(hardened: NamespaceRuntime,
                                                                             store: Path) -> None:
    import socket

    hardened.create(spec(store, "m1"))
    control = str(store / "store" / "machines" / "m1" / "control")
    held = []
    for _ in range(32):  # every connection the init accepts, taken before the runtime's own
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        conn.connect(control)
        held.append(conn)
    try:
        result = spawned(hardened, ["sh", "-c", "echo joined; exit 5"])
        assert result["exitCode"] == 5 and result["stdout"] == b"joined\n"
    finally:
        for conn in held:
            conn.close()
    assert spawned(hardened, ["echo", "starter"])["stdout"] == b"starter\n"  # a connection is free again


def test_a_spawned_command_outlives_its_caller_and_leaves_its_result(hardened: NamespaceRuntime, store: Path) -> None:
    hardened.create(spec(store, "m1"))
    exit_file = store / "exit-status"
    started = hardened.spawn("m1", ["sh", "-c", "sleep 0.5; exit 3"], env=PATH, exit_file=str(exit_file))
    with hardened._jobs_lock:  # the caller goes away (a server that died): its end of the status socket closes
        _, job, _ = hardened._jobs.pop(started["pid"])
    job.close()  # type: ignore[union-attr]
    deadline = time.monotonic() + 30
    while not exit_file.read_bytes() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert exit_file.read_bytes().split()[:4] == [b"R", b"3", b"0", b"0"]


def test_machines_resolve_names_through_the_gateway_when_the_host_resolver_is_local(store: Path) -> None:
    """A host whose resolver is on its loopback (systemd-resolved): its gateway relays DNS for the machines."""
    from shoal.runtime.sandbox import nameservers

    problem = namespaces_problem()
    version, _ = detect_cgroups()
    if problem or version is None:
        pytest.skip(f"namespace machines unavailable here: {problem}")
    servers = nameservers()
    if not servers:
        pytest.skip("this host has no resolver")
    network = claim_network()
    try:
        network.relay_dns(servers[0])  # here the upstream need not be local: what matters is the relay
        rt = NamespaceRuntime(store / "store", hide=[str(REPO)], host_base_dir=store / "hostbase",
                              hardening=Hardening(True, network, Cgroups(
                                  version, group=store_group(store / "store"))))
        machine = spec(store, "m1")
        address = str(network.net.network_address + 16 * 256 + 4)
        rt.create(MachineSpec(**{**machine.__dict__, "network": {"address": address, "prefix": 20,
                                                                  "gateway": network.gateway}}))
        result = rt.run("m1", ["sh", "-c", "cat /etc/resolv.conf; getent hosts deb.debian.org | head -n 1"], env=PATH)
        assert f"nameserver {network.gateway}".encode() in result["stdout"], result
        assert len(result["stdout"].decode().strip().splitlines()) >= 3, result  # an address came back
        _teardown(rt, store)
    finally:
        network.down()


def test_a_network_mount_is_made_by_the_host_inside_the_machine_and_never_through_a_link(
        hardened: NamespaceRuntime, store: Path) -> None:
    """The host's root enters a hardened machine's mount and network namespaces to mount NFS (a user-namespaced
    root cannot). This kernel has no NFS client, so the mount itself fails with ENODEV: that is as far as the
    path can be followed here. A link the machine made in the mount path is not followed."""
    hardened.create(spec(store, "m1"))
    hardened.run("m1", ["sh", "-c", "mkdir -p /mnt/fsmounts/n && ln -s /etc /mnt/fsmounts/l"], env={})
    nfs = "nfs" in Path("/proc/filesystems").read_text()
    if not nfs:
        with pytest.raises(MachineError, match="No such device"):
            hardened.netmount("m1", "nfs", "127.0.0.1:/x", "/mnt/fsmounts/n", "vers=4.1,addr=127.0.0.1")
    with pytest.raises(MachineError, match="a link or not a directory"):
        hardened.netmount("m1", "nfs", "127.0.0.1:/x", "/mnt/fsmounts/l", "vers=4.1,addr=127.0.0.1")


# --- the reserve of hardened machines' namespaces (runtime/reserve.py) ---------------------------------------

def on_network(machine: MachineSpec, network: NodeNetwork, host: int) -> MachineSpec:
    """The machine with an address of the network's first pool subnet."""
    address = str(network.net.network_address + 16 * 256 + host)
    return dataclasses.replace(machine, network={"address": address, "prefix": 20, "gateway": network.gateway})


def host_interfaces(prefix: str) -> set[str]:
    return {name for name in os.listdir("/sys/class/net") if name.startswith(prefix)}


def route_device(address: str) -> str:
    words = subprocess.run(["ip", "-o", "route", "show", f"{address}/32"], capture_output=True, text=True,
                           check=True).stdout.split()
    return words[words.index("dev") + 1]


def wait_for(condition: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def reserved(store: Path, hardening: Hardening) -> Iterator[NamespaceRuntime]:
    """A hardened runtime that keeps two machines' namespaces made ahead, filled."""
    problem = namespaces_problem()
    if problem:
        pytest.skip(f"namespace machines unavailable here: {problem}")
    rt = NamespaceRuntime(store / "store", hide=[str(REPO)], host_base_dir=store / "hostbase",
                          hardening=dataclasses.replace(hardening, reserve=2))
    rt.adopt()  # (start-up: the reserve fills once the clean-up is done)
    assert rt.reserve is not None
    wait_for(lambda: rt.reserve is not None and rt.reserve.ready() == 2, "the reserve to fill")
    yield rt
    rt.reserve.stop()
    _teardown(rt, store)


def test_machines_from_the_reserve_get_its_namespaces_and_the_host_side_a_cold_boot_makes(
        reserved: NamespaceRuntime, hardening: Hardening, store: Path) -> None:
    network = hardening.network
    assert network is not None and reserved.reserve is not None and reserved.ids is not None
    shells = host_interfaces("sr")
    before = {name for name in shells if name in {s.veth for s in reserved.reserve._ready}}
    assert len(before) == 2  # the shells' host ends exist, up but without a route, before any machine
    routed = {line.split()[0] for line in Path("/proc/net/route").read_text().splitlines()[1:]}
    for name in before:
        assert Path(f"/sys/class/net/{name}/operstate").read_text().strip() == "up"
        assert name not in routed
        assert Path(f"/proc/sys/net/ipv4/conf/{name}/rp_filter").read_text().strip() == "1"
    machines = [on_network(spec(store, f"m{i}"), network, 4 + i) for i in range(3)]
    for machine in machines:
        reserved.create(machine)
    # Two came from the reserve (their host ends are the shells'), the third found it empty and made its own.
    devices = [route_device(str(m.network["address"])) for m in machines if m.network]
    assert sorted(devices[:2]) == sorted(before)
    assert devices[2] == network.veth("m2")
    for machine in machines:
        ids = reserved.id_range(machine.machine_id)
        assert ids is not None and reserved.ids.owner(reserved.ids.slot_of(ids.base) or 0) == machine.machine_id
        script = ("id -u; cat /proc/self/uid_map; ip -o -4 addr show eth0; "
                  "cat /proc/sys/net/ipv6/conf/eth0/disable_ipv6; ls /sys/class/net")
        result = reserved.run(machine.machine_id, ["sh", "-c", script], env=PATH)
        assert result["exitCode"] == 0, result
        out = result["stdout"].decode().split()
        assert out[:4] == ["0", "0", str(ids.base), "65536"]  # the machine's root is its range's first id
        assert f"{machine.network['address']}/20" in out if machine.network else False
        # IPv6 is off on eth0 (the host's end has none), and nothing else is in its network namespace.
        assert out[-3:-2] == ["1"] and sorted(out[-2:]) == ["eth0", "lo"]
        # Its own user and network namespaces, neither the host's nor another machine's.
        init = reserved.init_pid(machine.machine_id)
        assert os.stat(f"/proc/{init}/ns/net").st_ino != os.stat("/proc/self/ns/net").st_ino
    for kind in ("user", "net", "ipc", "uts"):  # each machine's own, none the host's
        inodes = {os.stat(f"/proc/{reserved.init_pid(m.machine_id)}/ns/{kind}").st_ino for m in machines}
        assert len(inodes) == 3 and os.stat(f"/proc/self/ns/{kind}").st_ino not in inodes
    names = [reserved.run(m.machine_id, ["hostname"], env=PATH)["stdout"] for m in machines]
    assert names == [b"m0\n", b"m1\n", b"m2\n"]
    # The reserve fills again once machines are no longer being made; a machine's end frees its shell's veth.
    wait_for(lambda: reserved.reserve is not None and reserved.reserve.ready() == 2, "the reserve to refill")
    reserved.adopt()  # adopting again (as a cluster's control plane does) keeps the ranges the shells hold
    holders = reserved.reserve.holders()
    assert len(holders) == 2 and holders <= {reserved.ids.owner(slot) for slot in range(64)}
    reserved.destroy("m0")
    wait_for(lambda: devices[0] not in host_interfaces("sr"), "the first machine's veth to go")


def test_shells_of_a_runtime_that_ended_leave_no_id_range_and_no_interface(
        reserved: NamespaceRuntime, hardening: Hardening, store: Path) -> None:
    assert reserved.reserve is not None and reserved.ids is not None
    shells = [s.veth for s in reserved.reserve._ready]
    keeper = reserved.reserve._ready[0].keeper
    holders = {reserved.ids.owner(slot) for slot in range(64)} - {None}
    assert holders == {f"reserve {veth}" for veth in shells}
    # The server ended without a word: its keeper goes with its pipe, and its hold on the store with it.
    os.kill(keeper.pid, signal.SIGKILL)
    assert reserved._store_lock is not None
    reserved._store_lock.close()
    wait_for(lambda: not host_interfaces("sr") & set(shells), "the shells' interfaces to go")
    later = NamespaceRuntime(store / "store", hide=[str(REPO)], host_base_dir=store / "hostbase",
                             hardening=hardening)
    later.adopt()  # the next start frees their ranges
    assert [p.name for p in (store / "store" / "idranges").iterdir() if p.name.isdigit()] == []
    # A machine asked for meanwhile boots cold instead of failing.
    network = hardening.network
    assert network is not None
    reserved.create(on_network(spec(store, "m1"), network, 4))
    assert reserved.run("m1", ["hostname"], env=PATH)["stdout"] == b"m1\n"


def test_an_init_refuses_a_shell_that_is_not_a_machines_own_namespaces(ns: NamespaceRuntime, store: Path) -> None:
    """--shell names namespaces made ahead for the machine (user, network, IPC, UTS): the host's own, another
    user namespace's, ones of the wrong kind, or ones that map other ids are refused."""
    machine = spec(store, "m1")
    for sub in ("root", "upper", "work"):
        (store / "bad" / sub).mkdir(parents=True)
    base = ["init", "--id", "m1", "--root", str(store / "bad" / "root"), "--overlay", "/", "--lower",
            str(store / "bad" / "root"), "--upper", str(store / "bad" / "upper"), "--work", str(store / "bad" / "work"),
            "--userns", "1048576:65536", "--netns", "--empty", str(store / "bad" / "upper")]
    kinds = ("user", "net", "ipc", "uts")
    other = subprocess.Popen(["unshare", "--user", "--net", "--ipc", "--uts", "sleep", "30"])
    # Namespaces that pass for a shell (a user namespace of the host's, owning the others) but map other ids:
    # what a path of a keeper that has gone could name.
    mapped = subprocess.Popen(["unshare", "--user", "--map-root-user", "--net", "--ipc", "--uts", "sleep", "30"])

    def of(pid: int | str, *swap: tuple[int, str]) -> list[str]:
        paths = [f"/proc/{pid}/ns/{kind}" for kind in kinds]
        for index, path in swap:
            paths[index] = path
        return paths

    try:
        for pid in (other.pid, mapped.pid):
            wait_for(lambda p=pid: os.stat(f"/proc/{p}/ns/ipc").st_ino != os.stat("/proc/self/ns/ipc").st_ino,
                     "the namespaces")
        for paths, why in [(of(mapped.pid), "does not map"),
                           (of("self"), "the host's own"),
                           (of(other.pid, (1, "/proc/self/ns/net")), "not a namespace of the user namespace"),
                           (of(other.pid, (2, "/proc/self/ns/ipc")), "not a namespace of the user namespace"),
                           (of(other.pid, (3, "/proc/self/ns/uts")), "not a namespace of the user namespace"),
                           (of(other.pid, (2, f"/proc/{other.pid}/ns/uts")), "not the namespace expected"),
                           (of(other.pid, (0, f"/proc/{other.pid}/ns/net")), "not the namespace expected"),
                           (of(other.pid, (0, str(store / "none"))), "No such file")]:
            done = subprocess.run([ns.helper(), *base, "--shell", *paths], capture_output=True, text=True,
                                  timeout=30)
            assert done.returncode != 0 and why in done.stderr, (paths, done.stderr)
    finally:
        for process in (other, mapped):
            process.kill()
            process.wait()
    assert machine.machine_id not in ns.list()


def test_a_keeper_closes_only_its_shells_descriptors(reserved: NamespaceRuntime, hardening: Hardening,
                                                     store: Path) -> None:
    """`drop` names descriptors by number: the keeper's own pipes and anything that is not a shell stay open."""
    assert reserved.reserve is not None and hardening.network is not None
    keeper = reserved.reserve._ready[0].keeper
    keeper.drop([0, 1, 2, 9999, -1, 1 << 40])
    assert keeper.alive  # it still reads requests and answers them
    reserved.create(on_network(spec(store, "m1"), hardening.network, 4))  # from a shell it still holds
    assert route_device(str(on_network(spec(store, "m1"), hardening.network, 4).network["address"])).startswith("sr")
