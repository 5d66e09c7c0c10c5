"""A real ``shoal serve`` process for tests and benchmarks: free port, own state directory, HTTPS."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def parent_pid(pid: int | str) -> int:
    """The parent of a host process, from /proc (OSError or ValueError: it is gone, or it is not a process)."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[1])


def scratch_root() -> Path:
    """Where tests put state directories (tmpfs when available: the root filesystem is slow)."""
    root = Path(os.environ.get("SHOAL_TEST_TMP") or ("/dev/shm" if Path("/dev/shm").is_dir() else
                                                     tempfile.gettempdir()))
    root.mkdir(parents=True, exist_ok=True)
    return root


def node_address_space() -> str:
    """A private /14 for one test server's machines: servers of one host must not share an address space
    (the second is refused), so each picks its own (10.64.0.0/14 .. 10.248.0.0/14), at random among those no
    running server holds (a session's shared servers live through the whole run)."""
    from shoal.runtime.nodenet import space_in_use

    spaces = [f"10.{4 * i}.0.0/14" for i in range(16, 63)]
    random.shuffle(spaces)
    return next((space for space in spaces if not space_in_use(space)), spaces[0])


def fresh_postgres_url(admin_url: str) -> str:
    """Create an empty database next to ``admin_url`` and return its URL."""
    import psycopg

    name = "shoal_t_" + uuid.uuid4().hex[:12]
    plain = admin_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = admin_url.rpartition("/")
    return f"{base}/{name}"


@contextlib.contextmanager
def scratch_database(database_url: str | None) -> Iterator[Any]:
    """A migrated database of a test's own: a fresh PostgreSQL database beside the session's, or SQLite in the
    scratch directory (removed afterwards)."""
    from shoal.store.db import Database

    scratch = Path(tempfile.mkdtemp(dir=scratch_root()))
    database = Database(database_of_its_own(database_url) or f"sqlite:///{scratch / 'shoal.db'}")
    database.migrate()
    try:
        yield database
    finally:
        database.dispose()
        shutil.rmtree(scratch, ignore_errors=True)


def database_of_its_own(database_url: str | None) -> str | None:
    """A fresh database beside the session's for a second server (None: SQLite, each server has its own file).

    Two servers must never share one database: each would take the other's VMs and operations for its own
    and act on them with its own host store (boot their machines again, capture empty disks)."""
    return fresh_postgres_url(database_url.rsplit("/", 1)[0] + "/postgres") if database_url else None


class AddressSpaceTaken(RuntimeError):
    """Another server of this host has the node address space this one picked."""


class ShoalServer:
    def __init__(self, database_url: str | None = None, extra_args: list[str] | None = None) -> None:
        self.state_dir = Path(tempfile.mkdtemp(prefix="shoal-", dir=scratch_root()))
        self.port = free_port()
        self.database_url = database_url
        self.extra_args = extra_args or []
        self.space = node_address_space()
        self.proc: subprocess.Popen[bytes] | None = None
        self.env: dict[str, Any] = {}
        self.log = self.state_dir / "server.log"
        # Where disk files to import go: the only local files this server's disk imports may read.
        self.import_dir = Path(tempfile.mkdtemp(prefix="imports-", dir=scratch_root()))

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca(self) -> str:
        return str(self.state_dir / "tls" / "ca.pem")

    def _args(self, command: str) -> list[str]:
        args = [sys.executable, "-m", "shoal", command, "--state-dir", str(self.state_dir)]
        if self.database_url:
            args += ["--database-url", self.database_url]
        return args

    def start(self, timeout: float = 60) -> ShoalServer:
        for _ in range(5):
            try:
                return self._start(timeout)
            except AddressSpaceTaken:
                self.space = node_address_space()
        return self._start(timeout)

    def _start(self, timeout: float) -> ShoalServer:
        args = [*self._args("serve"), "--port", str(self.port), "--log-level", "warning",
                "--import-dir", str(self.import_dir), *self.extra_args]
        if "--node-address-space" not in self.extra_args:
            args += ["--node-address-space", self.space]
        env = {**os.environ, "COLUMNS": "200"}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = self.log.read_text()
                if "uses the node address space" in log:
                    self.log.write_text("")
                    raise AddressSpaceTaken(log)
                raise RuntimeError(f"shoal serve exited with {self.proc.returncode}:\n{log}")
            try:
                if Path(self.ca).exists() and requests.get(f"{self.base_url}/healthz", verify=self.ca,
                                                           timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.1)
        else:
            raise RuntimeError(f"shoal serve did not become healthy:\n{self.log.read_text()}")
        self.env = self.cli_json("env", "--json")
        return self

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "shoal", *args, "--state-dir", str(self.state_dir)]
        if self.database_url and args[0] not in ("machines", "marketplace", "faults"):
            cmd += ["--database-url", self.database_url]
        return subprocess.run(cmd, check=check, capture_output=True, text=True, env={**os.environ, "COLUMNS": "250"})

    def cli_json(self, *args: str) -> Any:
        return json.loads(self.cli(*args).stdout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        rc = self.proc.returncode
        self.proc = None
        return rc

    def kill(self) -> None:
        """kill -9 the whole process group (a crash, not a shutdown)."""
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self.proc = None

    def restart(self) -> ShoalServer:
        self.stop()
        return self.start()

    def cleanup(self) -> None:
        """Stop the server and tear down its machines (they deliberately outlive the server process)."""
        self.stop()
        if (self.state_dir / "store").exists():
            self.cli("machines", "destroy", "--all", check=False)
        shutil.rmtree(self.state_dir, ignore_errors=True)
        shutil.rmtree(self.import_dir, ignore_errors=True)
