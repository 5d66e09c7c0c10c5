"""az batch job/task commands against Shoal."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from batch_fixtures import NODE_AGENT, prepare_image
from conftest import AzCli
from shoal.azure import Shoal

pytestmark = pytest.mark.az


def test_az_job_task_create_show_download(az: AzCli, shoal: Shoal, tmp_path: Path) -> None:
    image = prepare_image(shoal)
    name = f"azt{uuid.uuid4().hex[:10]}"
    az.json("batch", "account", "create", "-g", image.group, "-n", name, "-l", "westus")
    az.run("batch", "account", "login", "-g", image.group, "-n", name)
    az.run("batch", "pool", "create", "--id", "p", "--vm-size", "STANDARD_D2S_V3", "--image", image.version_id,
           "--node-agent-sku-id", NODE_AGENT, "--target-dedicated-nodes", "1")
    az.run("batch", "job", "create", "--id", "j", "--pool-id", "p")
    task = az.json("batch", "task", "create", "--job-id", "j", "--task-id", "t1", "--command-line",
                   "/bin/sh -c 'echo hello from $AZ_BATCH_TASK_ID; /opt/shoal-app/run'")
    assert task["id"] == "t1"
    deadline = time.monotonic() + 120
    while (shown := az.json("batch", "task", "show", "--job-id", "j", "--task-id", "t1"))["state"] != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert shown["executionInfo"]["exitCode"] == 0
    target = tmp_path / "stdout.txt"
    az.run("batch", "task", "file", "download", "--job-id", "j", "--task-id", "t1", "--file-path", "stdout.txt",
           "--destination", str(target))
    assert target.read_text() == "hello from t1\nshoal-app-1.0\n"
