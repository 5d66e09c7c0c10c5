"""Two API replicas on one PostgreSQL: real `shoal serve` processes, the official SDKs.

How the two replicas are deployed here (one host), as `shoal serve --help` describes it:

- one PostgreSQL database (`--database-url`); SQLite serves one replica (test_server_process.py);
- one `--state-dir`: they share the TLS CA and certificate, the credentials, the token signing key, the blob
  containers and the machine store (the machines a pool boots on one replica are the other's once it takes the
  pool over); each keeps its own replica id (`replica-id-<port>`), the prefix of the claims it takes;
- one `--public-url`, the address of a load balancer in front of them (here a small TCP forwarder of the test's
  own): tokens name it as their issuer, so a token one replica issued is good on the other, and long-running
  operations are polled there, so that whichever replica answers, the poll works;
- `--node-network host`: the machines' networks are per server address space, and one host's address space has
  one owner (runtime/nodenet.py); with the host's network the nodes of both replicas are alike;
- a short `--lease-seconds`, so that a replica killed with kill -9 has its claims taken over within a test's
  patience (the default is 120 s).

No timed assertions: generous deadlines only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from azure.batch import models as bm
from sqlalchemy import select

from batch_fixtures import NODE_AGENT, create_account, prepare_image, wait_for
from harness import ShoalServer, fresh_postgres_url
from shoal.azure import Shoal
from shoal.store import models
from shoal.store.db import Database

POSTGRES_URL = os.environ.get("SHOAL_TEST_POSTGRES_URL")
LEASE_SECONDS = 6

pytestmark = pytest.mark.postgres


class Forwarder:
    """The load balancer in front of the replicas: a TCP forwarder (TLS passes through) to the first of
    ``targets`` that accepts the connection, so a dead replica is skipped."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.targets: list[int] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        for port in list(self.targets):
            try:
                upstream = socket.create_connection(("127.0.0.1", port), timeout=5)
                break
            except OSError:
                continue
        else:
            client.close()
            return
        upstream.settimeout(None)
        threading.Thread(target=_pipe, args=(upstream, client), daemon=True).start()
        _pipe(client, upstream)

    def close(self) -> None:
        self._closed = True
        self.sock.close()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


@dataclass
class Replicas:
    a: ShoalServer
    b: ShoalServer
    lb: Forwarder
    db: Database
    shoal: Shoal  # connection details (the authority is the load balancer)

    def on(self, server: ShoalServer) -> Shoal:
        """The official clients, talking to this replica only."""
        return dataclasses.replace(self.shoal, authority=server.base_url)

    def batch(self, server: ShoalServer, account: Any) -> Any:
        endpoint = str(account.account_endpoint).replace(f"127.0.0.1:{self.lb.port}", f"127.0.0.1:{server.port}")
        assert endpoint != account.account_endpoint, account.account_endpoint
        return self.on(server).batch_client(endpoint)

    def replica_id(self, server: ShoalServer) -> str:
        return (server.state_dir / f"replica-id-{server.port}").read_text().strip()


@pytest.fixture
def replicas() -> Iterator[Replicas]:
    if not POSTGRES_URL:
        if os.environ.get("CI"):
            pytest.fail("CI must run the PostgreSQL tests: set SHOAL_TEST_POSTGRES_URL (see .ci/run).")
        pytest.skip("API replicas need PostgreSQL: set SHOAL_TEST_POSTGRES_URL (.ci/run starts it and sets it).")
    url = fresh_postgres_url(POSTGRES_URL)
    lb = Forwarder()
    args = ["--public-url", lb.url, "--lease-seconds", str(LEASE_SECONDS), "--node-network", "host"]
    a = ShoalServer(url, extra_args=args)
    b = ShoalServer(url, extra_args=args)
    shutil.rmtree(b.state_dir)  # b shares a's state directory
    b.state_dir, b.log = a.state_dir, a.state_dir / "server-b.log"
    db = Database(url)
    try:
        a.start()  # first alone: it makes the CA, the credentials and the signing key b then reads
        b.start()
        lb.targets = [a.port, b.port]
        yield Replicas(a, b, lb, db, Shoal.from_env_json(a.env))
    finally:
        for server in (b, a):
            if server.proc is not None and os.environ.get("SHOAL_TEST_LOGS"):
                print(server.log.read_text()[-20000:])
        b.stop()
        a.cleanup()
        lb.close()
        db.dispose()


def _pool_spec(pool_id: str, image: Any, target: int) -> Any:
    return bm.BatchPoolCreateOptions(
        id=pool_id, vm_size="standard_d2s_v3", target_dedicated_nodes=target,
        virtual_machine_configuration=bm.VirtualMachineConfiguration(
            image_reference=bm.BatchVmImageReference(virtual_machine_image_id=image.version_id),
            node_agent_sku_id=NODE_AGENT))


def _steady_with(client: Any, pool_id: str, target: int) -> bool:
    pool = client.get_pool(pool_id)
    nodes = list(client.list_nodes(pool_id))
    return bool(pool.allocation_state == "steady" and pool.current_dedicated_nodes == target
                and len(nodes) == target and all(n.state == "idle" for n in nodes))


def test_a_pool_created_on_one_replica_is_resized_and_polled_on_the_other(replicas: Replicas) -> None:
    """Requests go to replica A; what they started is observed on replica B: the long-running operations' polls
    (the load balancer sends them to B), the pool's resize, the nodes, and an ARM operation continued on B."""
    a, b = replicas.a, replicas.b
    replicas.lb.targets = [b.port]  # every poll of a long-running operation goes to B
    on_a = replicas.on(a)
    image = prepare_image(on_a)  # VM, run command, snapshots, image, gallery: operations started on A
    account = create_account(on_a, image.group)
    client_a, client_b = replicas.batch(a, account), replicas.batch(b, account)

    client_a.create_pool(_pool_spec("shared", image, 2))
    wait_for(lambda: _steady_with(client_b, "shared", 2), "the pool created on A, steady with 2 nodes on B", 300)
    client_a.begin_resize_pool("shared", bm.BatchPoolResizeOptions(target_dedicated_nodes=3))  # (polled on B)
    wait_for(lambda: _steady_with(client_b, "shared", 3), "the resize asked on A, done as seen on B", 300)
    assert client_a.get_pool("shared").current_dedicated_nodes == 3  # and A agrees

    job_id = f"job-{uuid.uuid4().hex[:8]}"  # a task added on B runs whichever replica schedules
    client_b.create_job(bm.BatchJobCreateOptions(id=job_id, pool_info=bm.BatchPoolInfo(pool_id="shared")))
    client_b.create_task(job_id, bm.BatchTaskCreateOptions(id="t1", command_line="/bin/sh -c 'echo on-a-replica'"))
    wait_for(lambda: client_a.get_task(job_id, "t1").state == "completed", "the task, seen on A", 300)
    assert client_a.get_task(job_id, "t1").execution_info.exit_code == 0

    # An ARM long-running operation started on A and continued on B from its continuation token.
    mgmt_a, mgmt_b = on_a.batch_mgmt_client(), replicas.on(b).batch_mgmt_client()
    poller = mgmt_a.pool.begin_delete(image.group, account.name, "shared")
    token = poller.continuation_token()
    mgmt_b.pool.begin_delete(image.group, account.name, "shared", continuation_token=token).result()
    assert [p.name for p in mgmt_b.pool.list_by_batch_account(image.group, account.name)] == []


def test_kill_9_of_the_replica_resizing_a_pool_and_the_other_finishes_after_the_lease(replicas: Replicas) -> None:
    """Node provisioning is slowed (fault injection) so that a resize is in progress; the replica holding the
    pool's claim is killed with kill -9; the other takes the claim over once the lease lapses and finishes the
    resize: the pool reaches its target with no node twice and no machine leaked, the loops the dead replica held
    move over, and a task then runs."""
    a = replicas.a
    on_a = replicas.on(a)
    image = prepare_image(on_a)
    account = create_account(on_a, image.group)
    client_a = replicas.batch(a, account)
    client_a.create_pool(_pool_spec("crash", image, 0))
    a.cli("faults", "set", "--node-delay", "2")  # (both replicas read the shared state directory's faults)
    client_a.begin_resize_pool("crash", bm.BatchPoolResizeOptions(target_dedicated_nodes=8))

    def holder() -> str | None:  # the replica id whose claim the pool's row carries (a pass in progress)
        with replicas.db.read() as s:
            pool = s.scalars(select(models.Pool).where(models.Pool.pool_id == "crash")).one()
            nodes = s.scalars(select(models.Node).where(models.Node.pool_key == pool.key)).all()
            if pool.lock_token and nodes and pool.allocation_state == "resizing":
                return pool.lock_token.split("-", 1)[0]
            return None

    owner = wait_for(holder, "a pass of the resize, with nodes on the way", 120)
    ids = {replicas.replica_id(s): s for s in (replicas.a, replicas.b)}
    assert owner in ids, (owner, ids)
    victim = ids[owner]
    survivor = replicas.b if victim is replicas.a else replicas.a
    victim.kill()  # kill -9 (the whole process group) mid-resize
    a.cli("faults", "clear")
    replicas.lb.targets = [survivor.port]
    client = replicas.batch(survivor, account)

    wait_for(lambda: _steady_with(client, "crash", 8), "the survivor finishing the resize", 300 + LEASE_SECONDS)
    nodes = list(client.list_nodes("crash"))
    assert len({n.id for n in nodes}) == 8
    listed = survivor.cli("machines", "list").stdout
    node_lines = [line for line in listed.splitlines() if "node-" in line]
    assert len(node_lines) == 8 and all("running" in line for line in node_lines), listed
    with replicas.db.read() as s:
        pool = s.scalars(select(models.Pool).where(models.Pool.pool_id == "crash")).one()
        assert pool.resize_errors == [] and pool.target_dedicated == 8

    job_id = f"job-{uuid.uuid4().hex[:8]}"  # the scheduler runs on the survivor (it took the loop if it was A's)
    client.create_job(bm.BatchJobCreateOptions(id=job_id, pool_info=bm.BatchPoolInfo(pool_id="crash")))
    client.create_task(job_id, bm.BatchTaskCreateOptions(id="after", command_line="/bin/sh -c 'echo survived'"))
    wait_for(lambda: client.get_task(job_id, "after").state == "completed", "a task after the takeover", 300)
    assert client.get_task(job_id, "after").execution_info.exit_code == 0
    survivor_id = replicas.replica_id(survivor)

    def loops_moved() -> bool:
        with replicas.db.read() as s:
            claims = {c.name: c.lock_token or "" for c in s.scalars(select(models.LoopClaim))}
        return {"tasks", "autoscale", "machines"} <= set(claims) and all(
            token.startswith(f"{survivor_id}-") for token in claims.values())

    wait_for(loops_moved, "every loop held by the survivor", 120)
