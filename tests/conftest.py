"""Fixtures: a real Shoal server per database backend, official clients, and the az CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import REPO, ShoalServer, database_of_its_own, fresh_postgres_url, scratch_root
from shoal.azure import Shoal

POSTGRES_URL = os.environ.get("SHOAL_TEST_POSTGRES_URL")
# Every test server builds marketplace bases (Debian with debootstrap) once for the whole run, and later runs on
# this machine reuse the build: it is kept in the scratch directory (see the README, "Tests").
os.environ.setdefault("SHOAL_BASE_CACHE_DIR", str(scratch_root() / "shoal-base-cache"))
os.environ.setdefault("SHOAL_HELPER_CACHE_DIR", str(scratch_root() / "shoal-base-cache" / "bin"))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        backends = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
        metafunc.parametrize("backend", backends, scope="session")


@pytest.fixture(scope="session")
def database_url(backend: str) -> str | None:
    if backend == "sqlite":
        return None
    if not POSTGRES_URL:
        if os.environ.get("CI"):
            pytest.fail("CI must run the PostgreSQL tests: set SHOAL_TEST_POSTGRES_URL (see .ci/run).")
        pytest.skip("PostgreSQL tests need SHOAL_TEST_POSTGRES_URL (.ci/run starts PostgreSQL and sets it).")
    return fresh_postgres_url(POSTGRES_URL)


@pytest.fixture(scope="session")
def server(database_url: str | None) -> Iterator[ShoalServer]:
    srv = ShoalServer(database_url).start()
    yield srv
    if os.environ.get("SHOAL_TEST_LOGS"):  # show what the server logged (debugging a failing run)
        print(srv.log.read_text()[-20000:])
    srv.cleanup()


@pytest.fixture
def own_server(database_url: str | None) -> Iterator[ShoalServer]:
    """A server of the test's own, on a fresh database, that it may stop, kill and restart."""
    srv = ShoalServer(database_of_its_own(database_url)).start()
    yield srv
    srv.cleanup()


@pytest.fixture(scope="session")
def shoal(server: ShoalServer) -> Shoal:
    return Shoal.from_env_json(server.env)


class AzCli:
    """The official az CLI in an isolated config directory, logged in to one Shoal."""

    def __init__(self, exe: str, config_dir: Path, ca: str) -> None:
        self.exe, self.config_dir, self.ca = exe, config_dir, ca

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AZURE_")}
        env.update({"AZURE_CONFIG_DIR": str(self.config_dir), "REQUESTS_CA_BUNDLE": self.ca,
                    "AZURE_CORE_INSTANCE_DISCOVERY": "false", "AZURE_CORE_COLLECT_TELEMETRY": "false",
                    "AZURE_CORE_ONLY_SHOW_ERRORS": "true", "AZURE_CORE_NO_COLOR": "true"})
        return env

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([self.exe, *args], capture_output=True, text=True, env=self.env(), timeout=300)
        if check and proc.returncode != 0:
            raise AssertionError(f"az {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}\n{proc.stdout}")
        return proc

    def json(self, *args: str) -> Any:
        out = self.run(*args, "-o", "json").stdout
        return json.loads(out) if out.strip() else None


def az_executable() -> str | None:
    candidates = [os.environ.get("SHOAL_AZ"), str(REPO / ".venv-az" / "bin" / "az"), shutil.which("az")]
    return next((c for c in candidates if c and Path(c).exists()), None)


@pytest.fixture(scope="session")
def az(server: ShoalServer, tmp_path_factory: pytest.TempPathFactory) -> AzCli:
    exe = az_executable()
    if exe is None:
        if os.environ.get("CI") or os.environ.get("SHOAL_REQUIRE_AZ"):
            pytest.fail("The az CLI is required: `make test` installs it into .venv-az.")
        pytest.skip("az CLI not installed (make test installs it into .venv-az)")
    cli = AzCli(exe, tmp_path_factory.mktemp("azconfig", numbered=True), server.ca)
    env = server.env
    cli.run("cloud", "register", "-n", "Shoal", "--endpoint-resource-manager", env["resourceManagerUrl"])
    cli.run("cloud", "set", "-n", "Shoal")
    cli.run("login", "--service-principal", "-u", env["clientId"], f"--password={env['clientSecret']}",
            "--tenant", env["tenantId"])
    return cli


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    return tmp_path


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [f"shoal scratch: {scratch_root()}", f"postgres: {'yes' if POSTGRES_URL else 'no (sqlite only)'}",
            f"az: {az_executable() or 'missing'}"]


KEPT_CACHES = ("shoal-base-cache", "shoal-debian-cache")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say what the run keeps on purpose (the Debian base builds later runs reuse), how big, and how to free it."""
    kept = [(path, _size(path)) for name in KEPT_CACHES if (path := scratch_root() / name).is_dir()]
    if kept:
        listing = ", ".join(f"{path} ({size / 1e6:.0f} MB)" for path, size in kept)
        terminalreporter.write_line(f"shoal: kept build caches for later runs: {listing}; free them with "
                                    "`make clean-test-cache`.")


def _size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                continue
    return total


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """When a test that used a server fails, attach the server's thread stacks and log tail to the report."""
    report = yield
    if report.when == "call" and report.failed and "server" in getattr(item, "fixturenames", ()):
        srv = item.funcargs.get("server") if hasattr(item, "funcargs") else None
        if isinstance(srv, ShoalServer) and srv.proc is not None:
            import signal
            import time

            srv.proc.send_signal(signal.SIGUSR1)  # faulthandler: every thread's stack into the log
            time.sleep(0.5)
            report.sections.append(("shoal serve log (tail)", srv.log.read_text()[-15000:]))
    return report
