"""kill -9 the server while 200 tasks are running and queued; after a restart every task ends completed
exactly once, with its output intact."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections import Counter

import requests
from azure.batch import models as bm

from batch_fixtures import NODE_AGENT, create_account, prepare_image
from harness import ShoalServer
from shoal.azure import Shoal


def test_tasks_survive_a_crash_and_run_exactly_once(own_server: ShoalServer) -> None:
    shoal = Shoal.from_env_json(own_server.env)
    image = prepare_image(shoal)
    outputs = own_server.cli("container", "url", "crash-outputs", "--create").stdout.strip()
    account = create_account(shoal, image.group)
    client = shoal.batch_client(account.account_endpoint)
    client.create_pool(bm.BatchPoolCreateOptions(
        id="crashpool", vm_size="standard_d2s_v3", target_dedicated_nodes=4, task_slots_per_node=8,
        virtual_machine_configuration=bm.VirtualMachineConfiguration(
            image_reference=bm.BatchVmImageReference(virtual_machine_image_id=image.version_id),
            node_agent_sku_id=NODE_AGENT)))
    client.create_job(bm.BatchJobCreateOptions(id="crashjob", pool_info=bm.BatchPoolInfo(pool_id="crashpool")))
    client.create_tasks("crashjob", [bm.BatchTaskCreateOptions(
        id=f"t{i}", command_line="/bin/sh -c 'echo $AZ_BATCH_TASK_ID >> $AZ_BATCH_NODE_SHARED_DIR/runs; "
                                 "sleep 0.4; echo done-$AZ_BATCH_TASK_ID'",
        # Output files of attempts that end while the server is down are uploaded after the restart.
        output_files=[bm.OutputFile(file_pattern="../stdout.txt", destination=bm.OutputFileDestination(
            container=bm.OutputFileBlobContainerDestination(container_url=outputs, path=f"t{i}.txt")),
            upload_options=bm.OutputFileUploadConfiguration(upload_condition="tasksuccess"))])
        for i in range(200)])
    deadline = time.monotonic() + 120
    while client.get_job_task_counts("crashjob").task_counts.running < 8:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    own_server.kill()
    own_server.start()
    shoal = Shoal.from_env_json(own_server.env)
    client = shoal.batch_client(account.account_endpoint)
    deadline = time.monotonic() + 300
    while True:
        counts = client.get_job_task_counts("crashjob").task_counts
        if counts.completed == 200:
            break
        assert time.monotonic() < deadline, counts
        time.sleep(0.5)
    assert counts.succeeded == 200
    runs: Counter[str] = Counter()
    for node in client.list_nodes("crashpool"):
        data = b"".join(client.download_node_file("crashpool", node.id, "shared/runs")).decode()
        runs.update(data.split())
    assert set(runs) == {f"t{i}" for i in range(200)}
    twice = [t for t, n in runs.items() if n > 1]
    details = {t: (client.get_task("crashjob", t).execution_info.as_dict()) for t in twice}
    assert not twice, details
    for i in (0, 100, 199):
        out = b"".join(client.download_task_file("crashjob", f"t{i}", "stdout.txt")).decode()
        assert out.strip() == f"done-t{i}"
    base, _, query = outputs.partition("?")
    listing = requests.get(f"{outputs}&restype=container&comp=list", verify=own_server.ca, timeout=30)
    names = [el.text or "" for el in ET.fromstring(listing.content).iter("Name")]
    assert sorted(names) == sorted(f"t{i}.txt" for i in range(200))
    for i in (0, 99, 199):
        blob = requests.get(f"{base}/t{i}.txt?{query}", verify=own_server.ca, timeout=30)
        assert blob.content == f"done-t{i}\n".encode()
