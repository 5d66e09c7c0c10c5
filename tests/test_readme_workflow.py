"""The README's seed workflow with az runs as written: the block under "The seed's workflow with `az`" is taken
from the README and run with bash against a fresh server, with the official az CLI logged in as the README's
"Connecting" section says. A README that drifts from what works fails here."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import AzCli, az_executable
from harness import REPO, ShoalServer


def readme_block(heading: str) -> str:
    text = (REPO / "README.md").read_text()
    section = text[text.index(heading):]
    match = re.search(r"```bash\n(.*?)```", section, re.S)
    assert match, f"no bash block under {heading!r}"
    return match.group(1)


@pytest.fixture
def logged_in(tmp_path: Path) -> Iterator[tuple[ShoalServer, AzCli]]:
    exe = az_executable()
    if exe is None:
        pytest.skip("az CLI not installed (make test installs it into .venv-az)")
    srv = ShoalServer().start()
    try:
        cli = AzCli(exe, tmp_path / "az", srv.ca)
        env = srv.env
        cli.run("cloud", "register", "-n", "Shoal", "--endpoint-resource-manager", env["resourceManagerUrl"])
        cli.run("cloud", "set", "-n", "Shoal")
        cli.run("login", "--service-principal", "-u", env["clientId"], f"--password={env['clientSecret']}",
                "--tenant", env["tenantId"])
        cli.run("group", "create", "-n", "rg", "-l", "westus")
        yield srv, cli
    finally:
        srv.cleanup()


@pytest.mark.az
def test_the_readme_seed_workflow_with_az_runs_as_written(logged_in: tuple[ShoalServer, AzCli],
                                                          tmp_path: Path) -> None:
    srv, cli = logged_in
    script = readme_block("### The seed's workflow with `az`")
    assert "az batch pool create" in script and "az sig image-version show" in script
    env = cli.env()
    az_bin = str(Path(cli.exe).parent)
    env.update({"PATH": f"{Path(sys.executable).parent}:{az_bin}:{env.get('PATH', '')}",
                "SHOAL_STATE_DIR": str(srv.state_dir)})
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=1200)
    assert done.returncode == 0, f"{done.stderr[-4000:]}\n{done.stdout[-2000:]}"
    assert (tmp_path / "t1-stdout.txt").read_text() == "Hello, world!\n100\n"
