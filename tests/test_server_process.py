"""The server process itself: TLS material, bring-your-own certificate, clean shutdown, admin CLI."""

from __future__ import annotations

import json
import signal
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from azure.mgmt.resource.resources.models import ResourceGroup
from sqlalchemy.orm.exc import StaleDataError

from harness import ShoalServer, scratch_root
from shoal.auth.tls import ensure_tls
from shoal.azure import Shoal
from shoal.config import DEFAULT_NODE_RESERVE
from shoal.core.clock import Clock
from shoal.store.db import Database
from shoal.store.models import ResourceGroup as ResourceGroupRow


@pytest.fixture
def sqlite_server() -> Iterator[ShoalServer]:
    srv = ShoalServer().start()
    yield srv
    srv.cleanup()


def test_sigterm_and_sigint_shut_down_cleanly(sqlite_server: ShoalServer) -> None:
    assert sqlite_server.stop(signal.SIGTERM) == 0
    sqlite_server.start()
    assert sqlite_server.stop(signal.SIGINT) == 0


def test_bring_your_own_certificate(tmp_path: Path) -> None:
    own = ensure_tls(tmp_path / "mine")
    srv = ShoalServer(extra_args=["--cert", str(own.cert), "--key", str(own.key)])
    # The harness trusts <state>/tls/ca.pem: put the operator's CA there for the health check only.
    (srv.state_dir / "tls").mkdir(parents=True)
    (srv.state_dir / "tls" / "ca.pem").write_bytes(own.ca_cert.read_bytes())
    try:
        srv.start()
        assert requests.get(f"{srv.base_url}/healthz", verify=str(own.ca_cert), timeout=5).status_code == 200
        assert not (srv.state_dir / "tls" / "server.pem").exists()
    finally:
        srv.cleanup()


def test_deleted_principal_can_no_longer_sign_in(server: ShoalServer, shoal: Shoal) -> None:
    from azure.core.exceptions import ClientAuthenticationError

    app = server.cli_json("principal", "create", f"short-lived-{uuid.uuid4().hex[:6]}", "--json")
    assert app["clientId"] in server.cli("principal", "list").stdout
    shoal.credential(app["clientId"], app["clientSecret"]).get_token("https://management.azure.com/.default")
    server.cli("principal", "delete", app["clientId"])
    with pytest.raises(ClientAuthenticationError, match="700016"):
        shoal.credential(app["clientId"], app["clientSecret"]).get_token("https://management.azure.com/.default")


def test_concurrent_writes_all_succeed(shoal: Shoal) -> None:
    rm = shoal.resource_client()
    prefix = f"burst-{uuid.uuid4().hex[:6]}"

    def create(i: int) -> str:
        return str(rm.resource_groups.create_or_update(f"{prefix}-{i}", ResourceGroup(location="westus")).name)

    with ThreadPoolExecutor(16) as pool:
        names = list(pool.map(create, range(48)))
    assert sorted(names) == sorted(f"{prefix}-{i}" for i in range(48))
    listed = {g.name for g in rm.resource_groups.list()}
    assert set(names) <= listed
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda n: rm.resource_groups.begin_delete(n).result(), names))
    assert not set(names) & {g.name for g in rm.resource_groups.list()}


def test_concurrent_updates_of_one_row_are_detected() -> None:
    """Optimistic concurrency: a write based on a stale version fails instead of overwriting."""
    path = Path(scratch_root()) / f"occ-{uuid.uuid4().hex}.db"
    db = Database(f"sqlite:///{path}")
    db.migrate()
    from shoal.domain import identity

    clock = Clock()
    with db.write() as s:
        dev = identity.bootstrap(s, clock)
    key = f"/subscriptions/{dev.subscription_id}/resourcegroups/rg".lower()
    with db.write() as s:
        s.add(ResourceGroupRow(key=key, subscription_id=dev.subscription_id, name="rg", location="westus", tags={},
                               created_at=clock.now(), changed_at=clock.now()))
    with db.read() as s:
        stale = s.get(ResourceGroupRow, key)
    with db.write() as s:
        fresh = s.get(ResourceGroupRow, key)
        assert fresh is not None
        fresh.tags = {"first": "writer"}
    with pytest.raises(StaleDataError), db.write() as s:
        merged = s.merge(stale, load=False)
        merged.tags = {"second": "writer"}
    with db.read() as s:
        row = s.get(ResourceGroupRow, key)
        assert row is not None and row.tags == {"first": "writer"} and row.version == 2
    db.dispose()
    path.unlink()


def refused(server: ShoalServer) -> str:
    """What a server that must not start says (it is cleaned up)."""
    try:
        with pytest.raises(RuntimeError) as info:
            server.start(timeout=60)
        return str(info.value)
    finally:
        server.cleanup()


def test_a_second_server_on_one_sqlite_database_is_refused(sqlite_server: ShoalServer) -> None:
    """SQLite serves one replica: a server from another state directory pointed at the same database file stops
    with a message naming PostgreSQL, and the running server is untouched."""
    said = refused(ShoalServer(f"sqlite:///{sqlite_server.state_dir / 'shoal.db'}"))
    assert "SQLite serves one replica" in said and "postgresql" in said
    assert requests.get(f"{sqlite_server.base_url}/healthz", verify=sqlite_server.ca, timeout=5).status_code == 200


def test_a_node_reserve_is_refused_where_machines_are_not_hardened() -> None:
    """--node-reserve keeps hardened machines' namespaces made ahead: asked for with the host's network, it is
    refused naming what it needs, never accepted and ignored."""
    said = refused(ShoalServer(extra_args=["--node-network", "host", "--node-reserve", "4"]))
    assert "--node-reserve" in said and "--node-network host" in said


def test_the_isolation_level_says_how_many_machines_namespaces_are_kept_made_ahead(server: ShoalServer) -> None:
    level = json.loads((server.state_dir / "server.json").read_text())["isolationLevel"]
    if "no user namespaces" in level or "host network" in level or not level.startswith("namespaces"):
        pytest.skip(f"this host's machines are not hardened: {level}")
    assert f"{DEFAULT_NODE_RESERVE} machines' namespaces kept made ahead" in level
