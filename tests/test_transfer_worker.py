"""The node agent's HTTP client: every hop of a transfer goes to an address checked first, so a server the
task may reach cannot redirect it to loopback or a cloud metadata service."""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from shoal.runtime import transfer_worker


@pytest.fixture
def redirector() -> Iterator[tuple[str, int]]:
    """A web server that answers every GET with a redirect to the metadata address."""

    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/metadata/instance?api-version=2021-02-01")
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield "127.0.0.1", httpd.server_address[1]
    httpd.shutdown()


def test_loopback_and_link_local_are_refused_even_through_a_redirect(redirector: tuple[str, int]) -> None:
    host, port = redirector
    with pytest.raises(PermissionError, match="loopback"):
        transfer_worker.Client(None, []).request("GET", f"http://{host}:{port}/x")
    allowed = transfer_worker.Client(None, [f"{host}:{port}"])  # Shoal's own endpoint is allowed by name
    with pytest.raises(PermissionError, match=r"169\.254\.169\.254"):
        allowed.request("GET", f"http://{host}:{port}/x")  # ... but not where it redirects to
    with pytest.raises(ValueError):
        allowed.request("GET", "ftp://example.com/x")


def test_resource_file_paths_stay_below_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for bad in ("../x", "/etc/passwd", "a/../../x", ""):
        with pytest.raises(transfer_worker.Failure):
            transfer_worker.inside(bad)
    assert transfer_worker.inside("a/b/c.txt") == "a/b/c.txt" and (tmp_path / "a" / "b").is_dir()


def test_serve_refuses_to_share_the_state_directory_with_nodes(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    run = subprocess.run([sys.executable, "-m", "shoal", "serve", "--state-dir", str(state), "--share-host-dir",
                          str(tmp_path), "--port", "1"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "holds the state directory" in run.stdout, (run.stdout, run.stderr)
