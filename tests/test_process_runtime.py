"""The `process` runtime isolates nothing, so it must not touch the host either: the quickstart completes there,
its commands run as an unprivileged user, and nothing outside the state directory changes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import ShoalServer, scratch_root

# Where a command run as the host's root would leave traces (package database, programs, configuration).
WATCHED = ("/usr", "/etc", "/opt", "/var/lib/dpkg", "/var/lib/apt", "/root", "/home", "/srv")


def snapshot() -> dict[str, tuple[int, int, int, int]]:
    """(mode, uid, size, mtime) of everything under the watched directories."""
    seen: dict[str, tuple[int, int, int, int]] = {}
    for top in WATCHED:
        for root, dirs, files in os.walk(top):
            dirs[:] = [d for d in dirs if not (root == "/root" and d in (".cache", ".pyenv"))]
            for name in [*dirs, *files]:
                path = os.path.join(root, name)
                try:
                    st = os.lstat(path)
                except OSError:
                    continue
                seen[path] = (st.st_mode, st.st_uid, st.st_size, st.st_mtime_ns)
    return seen


@pytest.fixture
def process_server() -> Iterator[ShoalServer]:
    srv = ShoalServer(extra_args=["--runtime", "process"]).start()
    yield srv
    srv.cleanup()


@pytest.mark.skipif(os.geteuid() != 0, reason="the point is a server that runs as root")
def test_the_quickstart_completes_in_the_process_runtime_and_leaves_the_host_alone(
        process_server: ShoalServer) -> None:
    assert str(process_server.env["isolation"]).startswith("process")
    before = snapshot()
    done = subprocess.run([sys.executable, "-m", "shoal", "quickstart", "--state-dir", str(process_server.state_dir),
                           "--tasks", "20", "--nodes", "2"], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "20/20" in done.stdout and "task 7 | 8" in done.stdout, done.stdout
    after = snapshot()
    changed = sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))
    assert changed == [], changed[:20]
    assert not Path("/usr/local/bin/hello").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="the point is a server that runs as root")
def test_process_machines_run_commands_as_an_unprivileged_user() -> None:
    from shoal.runtime.machines import DiskMount, MachineError, MachineSpec, ProcessRuntime

    closed = Path(tempfile.mkdtemp(dir=scratch_root()))  # 0700: the unprivileged user cannot pass
    with pytest.raises(MachineError, match="cannot reach"):
        ProcessRuntime(closed / "state" / "store").create(MachineSpec(
            machine_id="m0", hostname="m0", base="host", os_disk=DiskMount([], str(closed / "u"), str(closed / "w")),
            data_disks={}, temp_dir=str(closed / "t")))
    shutil.rmtree(closed)
    tmp_path = Path(tempfile.mkdtemp(dir=scratch_root()))
    os.chmod(tmp_path, 0o711)
    runtime = ProcessRuntime(tmp_path / "store")
    spec = MachineSpec(machine_id="m1", hostname="m1", base="host",
                       os_disk=DiskMount([], str(tmp_path / "os" / "upper"), str(tmp_path / "os" / "work")),
                       data_disks={0: DiskMount([], str(tmp_path / "d" / "upper"), str(tmp_path / "d" / "work"))},
                       temp_dir=str(tmp_path / "temp"))
    runtime.create(spec)
    result = runtime.run("m1", ["sh", "-c", "id -u; touch \"$SHOAL_DATADISK_LUN0/f\"; touch /etc/shoal-x || echo no"],
                         env={"PATH": "/usr/bin:/bin"}, user="0")
    assert result["exitCode"] == 0, result
    uid, last = result["stdout"].split()
    assert uid != b"0" and last == b"no"
    assert (tmp_path / "d" / "upper" / "f").stat().st_uid == int(uid)
    assert not Path("/etc/shoal-x").exists()
    runtime.destroy("m1")
    shutil.rmtree(tmp_path)
