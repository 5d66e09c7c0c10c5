"""What a new user meets first: the banner's commands run as pasted, the server says when it is ready and when it
stops, `shoal env` does not invent a second state directory, and piped output is plain and whole."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import ShoalServer, scratch_root


@pytest.fixture(scope="module")
def plain_server() -> Iterator[ShoalServer]:
    srv = ShoalServer().start()
    yield srv
    srv.cleanup()


def _shoal(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI with its output piped (not a terminal), as in a script or a log."""
    clean = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "SHOAL_STATE_DIR")}
    return subprocess.run([sys.executable, "-m", "shoal", *args], capture_output=True, text=True,
                          env={**clean, **(env or {})}, timeout=120)


def _section(text: str, title: str) -> list[str]:
    lines = text.splitlines()
    start = lines.index(title) + 1
    end = next((i for i in range(start, len(lines)) if not lines[i].strip()), len(lines))
    return lines[start:end]


def test_banner_python_runs_as_pasted_and_az_lines_are_whole(plain_server: ShoalServer) -> None:
    out = _shoal("env", "--state-dir", str(plain_server.state_dir))
    assert out.returncode == 0, out.stderr
    assert "╭" not in out.stdout and "│" not in out.stdout  # no panel when piped
    secret = plain_server.env["clientSecret"]
    login = [line for line in _section(out.stdout, "Shell (az):") if line.startswith("az login")]
    assert login and secret in login[0] and plain_server.env["tenantId"] in login[0]  # not wrapped at 80 columns

    python = "\n".join(_section(out.stdout, "Python:"))
    # Pasted into a fresh interpreter with no environment prepared: no REQUESTS_CA_BUNDLE, nothing exported.
    env = {k: v for k, v in os.environ.items() if k not in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE")}
    ran = subprocess.run([sys.executable, "-c", python], capture_output=True, text=True, env=env, timeout=120)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip().startswith("[") and ran.stdout.strip().endswith("]")


def test_serve_says_when_it_is_ready_and_when_it_stopped() -> None:
    srv = ShoalServer().start()
    try:
        log = srv.log.read_text()
        assert f"Shoal is ready at {srv.base_url}" in log
        assert srv.stop(signal.SIGTERM) == 0
        log = srv.log.read_text()
        assert "Shoal is stopping" in log and log.rstrip().endswith("Shoal stopped.")
        assert "Tenant id" in log and "╭" not in log  # the banner, plain in a log file
    finally:
        srv.cleanup()


def test_env_refuses_a_directory_no_server_has_used() -> None:
    empty = Path(tempfile.mkdtemp(prefix="no-shoal-", dir=scratch_root()))
    target = empty / "state"
    try:
        out = _shoal("env", "--state-dir", str(target))
        assert out.returncode == 2
        assert "holds no Shoal state" in out.stderr and "--create" in out.stderr
        assert not target.exists()  # nothing was created behind the user's back
        made = _shoal("env", "--state-dir", str(target), "--create")
        assert made.returncode == 0, made.stderr
        assert (target / "shoal.db").exists()
    finally:
        import shutil

        shutil.rmtree(empty, ignore_errors=True)


def test_piped_principal_list_keeps_whole_ids(plain_server: ShoalServer) -> None:
    out = _shoal("principal", "list", "--state-dir", str(plain_server.state_dir))
    assert out.returncode == 0, out.stderr
    rows = [line.split("\t") for line in out.stdout.splitlines()]
    assert any(row[1] == plain_server.env["clientId"] for row in rows if len(row) == 3)
