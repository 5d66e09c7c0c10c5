"""``shoal``: serve the API, print connection details, manage principals and role assignments."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import re
import signal
import socket
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated
from urllib.parse import urlsplit

import typer
from rich.console import Console
from rich.table import Table

from shoal.cli.banner import ConnectionInfo
from shoal.cli.cluster import dev_app, host_app
from shoal.cli.marketplace import app as marketplace_app
from shoal.cli.options import node_reserve_or_exit
from shoal.config import DEFAULT_NODE_RESERVE, DEFAULT_REGIONS, Settings, default_state_dir
from shoal.domain.batch.image_rules import ImageLimits
from shoal.domain.compute.usage import DEFAULT_CORE_QUOTA

if TYPE_CHECKING:
    import uvicorn

    from shoal.runtime.machines import MachineRuntime
    from shoal.services import Services

app = typer.Typer(help="Shoal: Azure Batch custom-image pools on your own machine.", no_args_is_help=True,
                  add_completion=False)
principal_app = typer.Typer(help="Manage service principals (applications that sign in with a secret).",
                            no_args_is_help=True)
role_app = typer.Typer(help="Manage role assignments (Owner, Contributor, Reader at ARM scopes).",
                       no_args_is_help=True)
app.add_typer(principal_app, name="principal")
app.add_typer(marketplace_app, name="marketplace")
machines_app = typer.Typer(help="Inspect and tear down machines on this host (VMs and pool nodes).",
                           no_args_is_help=True)
app.add_typer(machines_app, name="machines")
app.add_typer(role_app, name="role-assignment")
app.add_typer(host_app, name="host")
app.add_typer(dev_app, name="dev")

console = Console()

StateDir = Annotated[Path, typer.Option("--state-dir", help="Where Shoal keeps its database, certificates "
                                        "and disks.", envvar="SHOAL_STATE_DIR")]
DatabaseUrl = Annotated[str | None, typer.Option("--database-url", help="SQLAlchemy URL, e.g. "
                                                 "postgresql+psycopg://user:pw@host/db (default: SQLite in "
                                                 "the state directory).", envvar="SHOAL_DATABASE_URL")]


DATABASE_URL_FILE = "database-url"


def _settings(state_dir: Path, database_url: str | None, *, remembered: bool = True, **kw: object) -> Settings:
    """Settings of a state directory; without ``--database-url``, the database its server last used (kept in the
    directory, private: it may hold a password), so every command finds a PostgreSQL-backed server's state."""
    state = state_dir.expanduser().resolve()
    if database_url is None and remembered:
        try:
            database_url = (state / DATABASE_URL_FILE).read_text().strip() or None
        except OSError:
            database_url = None
    return Settings(state_dir=state, database_url=database_url, **kw)  # type: ignore[arg-type]


def _remember_database(settings: Settings) -> None:
    from shoal.auth import at_rest

    path = settings.state_dir / DATABASE_URL_FILE
    if settings.database_url:
        at_rest.create_private_file(path)
        path.write_text(settings.database_url + "\n")
    else:
        path.unlink(missing_ok=True)


def _connection_info(settings: Settings, ca_bundle: Path, dev: object) -> ConnectionInfo:
    from shoal.domain.identity import DevIdentity

    assert isinstance(dev, DevIdentity)
    db = "PostgreSQL" if settings.db_url.startswith("postgresql") else "SQLite"
    return ConnectionInfo(settings.base_url, dev.tenant_id, dev.subscription_id, dev.client_id, dev.client_secret,
                          ca_bundle, settings.state_dir, db, store_dir=settings.store_dir)


@app.command()
def serve(
    state_dir: StateDir = default_state_dir(),
    database_url: DatabaseUrl = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTPS port.")] = 8443,
    cert: Annotated[Path | None, typer.Option(help="TLS certificate (PEM) instead of the generated one.")] = None,
    key: Annotated[Path | None, typer.Option(help="TLS private key (PEM) for --cert.")] = None,
    public_url: Annotated[str | None, typer.Option(help="Origin clients use, if not https://host:port.")] = None,
    regions: Annotated[str, typer.Option(help="Comma-separated regions this cloud offers.")] = ",".join(
        DEFAULT_REGIONS),
    log_level: Annotated[str, typer.Option(help="Server log level.")] = "warning",
    store_dir: Annotated[Path | None, typer.Option(help="Layers, disks and machines (default <state-dir>/store; "
                                                   "a fast filesystem such as tmpfs is best).",
                                                   envvar="SHOAL_STORE_DIR")] = None,
    catalog: Annotated[Path | None, typer.Option(help="Operator file (JSON/TOML) extending the marketplace "
                                                 "catalog.", envvar="SHOAL_MARKETPLACE_CATALOG")] = None,
    vm_sizes: Annotated[Path | None, typer.Option(help="Operator file (JSON/TOML) adding VM sizes to Azure's "
                                                  "published ones: [{name, vCPUs, memoryGiB}, ...].",
                                                  envvar="SHOAL_VM_SIZES")] = None,
    allow_eol_node_agents: Annotated[bool, typer.Option(
        help="Create pools with a node agent SKU past its end of life (Azure refuses them).",
        envvar="SHOAL_ALLOW_EOL_NODE_AGENTS")] = False,
    runtime: Annotated[str | None, typer.Option(help="Machine runtime: 'namespaces' (default) or 'process' (no "
                                                "isolation at all: for hosts without namespaces).",
                                                envvar="SHOAL_RUNTIME")] = None,
    node_network: Annotated[str, typer.Option(help="Machines' networks: 'isolated' (each its own namespace, address "
                                              "and firewall) or 'host' (they share the host's network).",
                                              envvar="SHOAL_NODE_NETWORK")] = "isolated",
    node_address_space: Annotated[str, typer.Option(help="Private addresses of machines (a /20 per pool).",
                                                    envvar="SHOAL_NODE_ADDRESS_SPACE")] = "10.224.0.0/12",
    user_namespaces: Annotated[bool, typer.Option(
        "--user-namespaces/--no-user-namespaces", help="Run each machine in a user namespace of its own, with a "
        "seccomp filter and a cut capability set (without: a task's root is the host's root).",
        envvar="SHOAL_USER_NAMESPACES")] = True,
    cgroups: Annotated[bool, typer.Option("--cgroups/--no-cgroups", help="Limit each machine to its VM size's "
                                          "cores, memory and processes.", envvar="SHOAL_CGROUPS")] = True,
    node_reserve: Annotated[int | None, typer.Option(
        min=0, max=4096, help="Hardened machines' user and network namespaces (with their veth pairs) to keep made "
        f"ahead while the host is quiet, so that a growing pool's nodes skip that kernel work (about 0.3 MB of "
        f"kernel memory each; 0: none). Default: {DEFAULT_NODE_RESERVE} with user namespaces and node networks.",
        envvar="SHOAL_NODE_RESERVE", show_default=False)] = None,
    image_dedicated_limit: Annotated[int, typer.Option(
        help="Dedicated nodes all pools of one custom-image lineage may hold in a subscription.",
        envvar="SHOAL_IMAGE_DEDICATED_LIMIT")] = ImageLimits.dedicated,
    image_low_priority_limit: Annotated[int, typer.Option(
        help="Low-priority nodes all pools of one custom-image lineage may hold in a subscription.",
        envvar="SHOAL_IMAGE_LOW_PRIORITY_LIMIT")] = ImageLimits.low_priority,
    captured_image_limit: Annotated[int, typer.Option(
        help="Dedicated nodes of a pool whose image was captured from a VM or made from a disk file.",
        envvar="SHOAL_CAPTURED_IMAGE_LIMIT")] = ImageLimits.captured,
    subscription_core_quota: Annotated[int, typer.Option(
        help="Total Regional vCPUs of a subscription: its VMs and the nodes of UserSubscription-mode pools.",
        envvar="SHOAL_SUBSCRIPTION_CORE_QUOTA")] = DEFAULT_CORE_QUOTA,
    share_host_dir: Annotated[list[Path] | None, typer.Option(
        help="A host directory every node (and VM) sees read-only at the same path, e.g. for file:// resource "
        "files (repeatable; default: none).", envvar="SHOAL_SHARE_HOST_DIR")] = None,
    import_dir: Annotated[Path | None, typer.Option(
        help="Disk imports may read local files below this directory (default: none; https URLs only).",
        envvar="SHOAL_IMPORT_DIR")] = None,
    signing_key: Annotated[Path | None, typer.Option(
        help="The token signing key (PEM, made 0600 if missing; default <state-dir>/signing-key.pem). Servers "
        "sharing one database must share it.", envvar="SHOAL_SIGNING_KEY")] = None,
    lease_seconds: Annotated[float, typer.Option(
        min=1.0, help="How long a loop's claim on its work lasts unless renewed: replicas sharing one PostgreSQL "
        "take over the work of a replica that died this long after its last write.",
        envvar="SHOAL_LEASE_SECONDS")] = 120.0,
    replica_id: Annotated[str | None, typer.Option(
        help="This replica's id (1-8 lowercase letters or digits), the prefix of the claims it takes (default: "
        "kept in the state directory, one per port with PostgreSQL).", envvar="SHOAL_REPLICA_ID")] = None,
    ray_address: Annotated[str | None, typer.Option(
        help="Run pool nodes on node hosts of a Ray cluster (HOST:PORT of its head; each host runs `shoal host "
        "join`). Needs pip install 'shoal[ray]'. Disks, images and VMs stay on this server's host.",
        envvar="SHOAL_RAY_ADDRESS")] = None,
    cluster_address: Annotated[str | None, typer.Option(
        help="The address node hosts reach this server at (default: --host).", envvar="SHOAL_CLUSTER_ADDRESS")]
    = None,
    fence_seconds: Annotated[float, typer.Option(
        min=0.5, help="A lost node host's tasks are requeued this long after it was lost (its hosts' `shoal host "
        "join --fence-seconds`: they stop their machines after that long without the head).",
        envvar="SHOAL_FENCE_SECONDS")] = 3.0,
    proxy_port: Annotated[int | None, typer.Option(
        help="Also run `shoal proxy` on this port (127.0.0.1): clients with HTTPS_PROXY set to it and Shoal's CA "
        "trusted reach Shoal at Azure's own hostnames.", envvar="SHOAL_PROXY_PORT")] = None,
    proxy_passthrough: Annotated[bool, typer.Option(
        help="With --proxy-port: tunnel hosts that are not Azure's as plain TCP instead of refusing them.")] = False,
) -> None:
    """Start Shoal: one HTTPS process serving ARM, identity and the Batch data plane.

    Several replicas: run `shoal serve` N times, on other ports or machines, with one --database-url
    postgresql+psycopg://... (SQLite serves one replica). Any replica serves every request, and a long-running
    operation started on one is polled on another; the loops' work is claimed with leases, so a replica killed
    with kill -9 loses nothing: another takes its claims over after --lease-seconds. Give every replica the same
    --public-url (the address of the load balancer in front of them: tokens name it as their issuer, and nodes
    reach Shoal there) and the same --signing-key. Replicas of one host share one --state-dir (and so the TLS CA,
    the credentials, the signing key, the blob containers and the machine store; each keeps its replica id per
    port) and use --node-network host or each its own --node-address-space.
    """
    import uvicorn

    from shoal import services
    from shoal.api.app import create_app
    from shoal.auth.tls import ensure_tls
    from shoal.core.hosterrors import AgentError
    from shoal.domain.batch.vmsizes import VmSizesError

    if (cert is None) != (key is None):
        console.print("[red]--cert and --key must be given together.[/red]")
        raise typer.Exit(2)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = _settings(state_dir, database_url, remembered=False, host=host, port=port, cert=cert, key=key,
                         public_url=public_url,
                         regions=tuple(r.strip().lower() for r in regions.split(",") if r.strip()),
                         store_dir_override=store_dir.expanduser().resolve() if store_dir else None,
                         catalog_file=catalog, vm_sizes_file=vm_sizes, allow_eol_node_agents=allow_eol_node_agents,
                         runtime=runtime, node_network=node_network,
                         node_address_space=node_address_space, user_namespaces=user_namespaces, cgroups=cgroups,
                         image_limits=ImageLimits(image_dedicated_limit, image_low_priority_limit,
                                                  captured_image_limit),
                         subscription_core_quota=subscription_core_quota,
                         signing_key=signing_key.expanduser().resolve() if signing_key else None,
                         share_host_dirs=tuple(d.expanduser().resolve() for d in share_host_dir or ()),
                         import_dir=import_dir.expanduser().resolve() if import_dir else None,
                         lease_seconds=lease_seconds, replica_id=replica_id, ray_address=ray_address,
                         cluster_address=cluster_address, fence_seconds=fence_seconds)
    if replica_id is not None and not re.fullmatch(r"[a-z0-9]{1,8}", replica_id):
        console.print(f"[red]--replica-id must be 1-8 lowercase letters or digits, not {replica_id!r}.[/red]")
        raise typer.Exit(2)
    for shared in settings.share_host_dirs:
        if not shared.is_dir():
            console.print(f"[red]--share-host-dir {shared}: not a directory.[/red]")
            raise typer.Exit(2)
        if settings.state_dir == shared or shared in settings.state_dir.parents:
            console.print(f"[red]--share-host-dir {shared} holds the state directory {settings.state_dir} (its "
                          "keys and credentials): share a directory beside it.[/red]")
            raise typer.Exit(2)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    lock = open(settings.state_dir / "serve.lock", "w")  # noqa: SIM115 (held for the life of the process)
    # With SQLite the state directory is one server's; replicas on PostgreSQL may share it (each on its port).
    replicas = not settings.db_url.startswith("sqlite")
    try:
        fcntl.flock(lock, (fcntl.LOCK_SH if replicas else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        console.print(f"[red]Another `shoal serve` is already using {settings.state_dir}. Stop it first, or use "
                      "another --state-dir (replicas may share one only on PostgreSQL).[/red]")
        raise typer.Exit(1) from None
    db_lock = _lock_sqlite(settings.db_url)  # noqa: F841 (held for the life of the process)
    if node_network not in ("isolated", "host"):
        console.print(f"[red]--node-network must be 'isolated' or 'host', not {node_network!r}.[/red]")
        raise typer.Exit(2)
    reserve = node_reserve_or_exit(console, node_reserve, user_namespaces=user_namespaces,
                                   node_network=node_network, runtime=runtime)
    settings = dataclasses.replace(settings, node_reserve=reserve)
    try:
        svc = services.build(settings, with_runtime=True)
    except AgentError as exc:
        console.print(f"[red]Shoal cannot run machines here as asked: {exc}[/red]")
        raise typer.Exit(1) from None
    except VmSizesError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    if cert is None or key is None:
        tls = ensure_tls(settings.tls_dir, tuple(h for h in (settings.node_gateway, settings.cluster_address) if h))
        cert_file, key_file, ca_bundle = tls.cert, tls.key, tls.ca_cert
    else:
        cert_file, key_file, ca_bundle = cert, key, cert
    info = _connection_info(settings, ca_bundle, svc.identity)
    if svc.host is not None:
        info = dataclasses.replace(info, isolation=svc.host.isolation, isolation_level=svc.host.isolation_level)
    info.save(settings.state_dir / "server.json")
    _remember_database(settings)
    info.render(console, "Shoal is starting")
    portal_link = _portal_link(svc, settings.base_url)
    config = uvicorn.Config(create_app(svc), host=host, port=port, ssl_certfile=str(cert_file),
                            ssl_keyfile=str(key_file), log_level=log_level, loop="uvloop", http="httptools",
                            timeout_graceful_shutdown=3, access_log=log_level in ("debug", "info"))
    server = _server(config, settings.base_url, portal_link)
    # uvicorn shuts down gracefully on SIGINT/SIGTERM and then re-raises the signal to the handler that
    # was installed before it. A no-op handler makes a clean shutdown exit with status 0.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    try:
        # Machines with networks of their own reach Shoal at their gateway: it listens there too.
        sockets = [_listen(h, port) for h in dict.fromkeys([host, settings.node_gateway])
                   if h and not (h == settings.node_gateway and host in ("0.0.0.0", ""))]
    except OSError as exc:
        console.print(f"[red]Shoal could not listen on port {port}: {exc.strerror}. Is another process using the "
                      "port? Choose another with --port.[/red]")
        raise typer.Exit(1) from None
    if proxy_port is not None:
        own = urlsplit(settings.base_url)
        _start_proxy(settings.tls_dir, "127.0.0.1" if host in ("0.0.0.0", "::", "") else host, port, proxy_port,
                     proxy_passthrough, ca_bundle, ((own.hostname or "", own.port or 443),))
    server.run(sockets=sockets)
    svc.db.dispose()
    if server.started:
        _say("Shoal stopped.")
    if not server.started:
        console.print(f"[red]Shoal could not start on {host}:{port}. Is another process using the port? "
                      "Choose another with --port.[/red]")
        raise typer.Exit(1)


def _start_proxy(tls_dir: Path, upstream_host: str, upstream_port: int, port: int, passthrough: bool,
                 ca_bundle: Path | None, own: tuple[tuple[str, int], ...] = ()) -> None:
    """`shoal proxy` in a thread of this process (its own event loop), listening on 127.0.0.1:port."""
    import asyncio
    import threading

    from shoal.auth.tls import ensure_tls
    from shoal.proxy import AzureProxy, ProxyConfig, listen, serve_forever

    ensure_tls(tls_dir)  # the local CA issues the proxy's certificates, even when --cert serves the API
    try:
        sock = listen("127.0.0.1", port)
    except OSError as exc:
        console.print(f"[red]The proxy could not listen on port {port}: {exc.strerror}.[/red]")
        raise typer.Exit(1) from None
    proxy = AzureProxy(ProxyConfig(tls_dir, upstream_host, upstream_port, passthrough, ca_bundle, own))
    threading.Thread(target=lambda: asyncio.run(serve_forever(proxy, sock)), name="shoal-proxy", daemon=True).start()
    _say(f"Proxy for Azure's hostnames at http://127.0.0.1:{port} (HTTPS_PROXY; other hosts "
         f"{'passed through' if passthrough else 'refused'}).")


@app.command()
def proxy(
    state_dir: StateDir = default_state_dir(),
    port: Annotated[int, typer.Option(help="Port to listen on (127.0.0.1).")] = 8080,
    upstream: Annotated[str | None, typer.Option(
        help="Shoal's HTTPS origin (default: the running server's, from the state directory).")] = None,
    passthrough: Annotated[bool, typer.Option(
        "--proxy-passthrough", help="Tunnel hosts that are not Azure's as plain TCP instead of refusing them.")]
    = False,
    log_level: Annotated[str, typer.Option(help="Log level.")] = "warning",
) -> None:
    """An HTTPS proxy (CONNECT) that answers for Azure's own hostnames with a running Shoal.

    management.azure.com, management.core.windows.net, login.microsoftonline.com and
    {account}.{region}.batch.azure.com are answered by Shoal, with certificates from its local CA; every other
    host is refused unless --proxy-passthrough. Clients need only HTTPS_PROXY=http://127.0.0.1:PORT and to trust
    the CA (REQUESTS_CA_BUNDLE for Python, SSL_CERT_FILE for Go): `az` needs no `az cloud register`.
    """
    import asyncio

    from shoal.auth.tls import ensure_tls
    from shoal.proxy import AzureProxy, ProxyConfig, listen, serve_forever

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    info_file = state_dir / "server.json"
    if upstream is None and info_file.exists():
        upstream = str(json.loads(info_file.read_text()).get("authorityHost") or "") or None
    target = urlsplit(upstream or "https://127.0.0.1:8443")
    if target.scheme != "https" or not target.hostname:
        console.print(f"[red]--upstream must be Shoal's https origin, not {upstream!r}.[/red]")
        raise typer.Exit(2)
    tls = ensure_tls(state_dir / "tls")
    try:
        sock = listen("127.0.0.1", port)
    except OSError as exc:
        console.print(f"[red]The proxy could not listen on port {port}: {exc.strerror}.[/red]")
        raise typer.Exit(1) from None
    proxy = AzureProxy(ProxyConfig(tls.ca_cert.parent, target.hostname, target.port or 443, passthrough))
    _say(f"Proxy for Azure's hostnames at http://127.0.0.1:{port}, answered by {target.geturl()}. Clients: "
         f"HTTPS_PROXY=http://127.0.0.1:{port} REQUESTS_CA_BUNDLE={tls.ca_cert} SSL_CERT_FILE={tls.ca_cert}")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_forever(proxy, sock))


def _lock_sqlite(url: str) -> object | None:
    """SQLite serves one replica: a second `shoal serve` on the same database file (from another state directory)
    is refused, instead of two servers taking each other's work for their own."""
    if not url.startswith("sqlite:///"):
        return None
    path = Path(url[len("sqlite:///"):]).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(f"{path}.serve-lock", "w")  # noqa: SIM115 (held for the life of the process)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        console.print(f"[red]Another `shoal serve` already uses the SQLite database {path}. SQLite serves one "
                      "replica: for several, give them all one PostgreSQL database (--database-url "
                      "postgresql+psycopg://...).[/red]")
        raise typer.Exit(1) from None
    return handle


def _say(line: str) -> None:
    """A line of the server's own story (ready, stopping, stopped), always shown whatever the log level."""
    print(f"{datetime.now().astimezone():%Y-%m-%d %H:%M:%S} {line}", flush=True)


def _portal_link(svc: Services, base_url: str) -> str:
    """A one-time sign-in link to the portal for the first principal (Owner of the subscription)."""
    from shoal.domain import portal_signin

    code = portal_signin.create_link(svc.db, svc.clock, svc.identity.client_id)
    return f"{base_url}/portal/signin/link?code={code}"


def _server(config: uvicorn.Config, url: str, portal_link: str) -> uvicorn.Server:
    """uvicorn's server, saying when it is ready to take requests and when it stops."""
    import uvicorn

    from shoal.api.portal import live
    from shoal.domain.portal_signin import LINK_LIFETIME

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if not self.should_exit:
                _say(f"Shoal is ready at {url} (requests are logged with --log-level info).")
                _say(f"Portal: {portal_link} (a one-time sign-in link, valid {LINK_LIFETIME.seconds // 60} "
                     f"minutes; or sign in at {url}/portal with a client id and secret)")

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            _say("Shoal is stopping: finishing requests in flight...")
            live.stop_streams()  # open portal pages' event streams end now instead of holding up the stop
            await super().shutdown(sockets=sockets)

    return Server(config)


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


@app.command()
def doctor(
    node_network: Annotated[str, typer.Option(help="As for `shoal serve`.")] = "isolated",
    node_address_space: Annotated[str, typer.Option(help="As for `shoal serve`.")] = "10.224.0.0/12",
    user_namespaces: Annotated[bool, typer.Option("--user-namespaces/--no-user-namespaces")] = True,
    cgroups: Annotated[bool, typer.Option("--cgroups/--no-cgroups")] = True,
) -> None:
    """Check what this host offers to isolate machines, as `shoal serve` would need it."""
    from shoal.runtime.sandbox import SandboxOptions, checks

    options = SandboxOptions(user_namespaces=user_namespaces, network=node_network,
                             address_space=node_address_space, cgroups=cgroups)
    results = checks(options)
    out = Console(soft_wrap=True)
    for check in results:
        mark = "[green]ok[/green]  " if check.ok else "[red]FAIL[/red]"
        hint = "" if check.ok else f"  (to run without it: {check.flag})"
        out.print(f"{mark} {check.name}: {check.detail}{hint}")
    failed = [c for c in results if not c.ok]
    if failed:
        out.print(f"[red]{len(failed)} check(s) failed:[/red] `shoal serve` refuses to start with these options.")
        raise typer.Exit(1)
    out.print("All checks passed: machines are hardened (user namespaces, seccomp, capabilities"
              + (", own networks" if node_network == "isolated" else ", host network")
              + (", cgroup limits" if cgroups else "") + ")." if user_namespaces else "All checks passed.")


@app.command()
def env(
    state_dir: StateDir = default_state_dir(),
    database_url: DatabaseUrl = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object, for scripts.")] = False,
    create: Annotated[bool, typer.Option("--create", help="Make a new state directory if there is none (its "
                                         "credentials work only with a server started on it).")] = False,
) -> None:
    """Print how to connect to the Shoal of a state directory (the same block `serve` prints)."""
    from shoal import services

    saved_path = state_dir.expanduser() / "server.json"
    if not create and database_url is None and not saved_path.exists() and \
            not (state_dir.expanduser() / "shoal.db").exists():
        Console(stderr=True).print(
            f"[red]{state_dir} holds no Shoal state: no server has run there.[/red] Pass the --state-dir of the "
            "running server (or set SHOAL_STATE_DIR), or add --create to make a new one.")
        raise typer.Exit(2)
    saved = json.loads(saved_path.read_text()) if saved_path.exists() else {}
    base = saved.get("authorityHost")
    settings = _settings(state_dir, database_url, public_url=base)
    if settings.database_url is None and saved.get("database") == "PostgreSQL":
        Console(stderr=True).print("[yellow]This state directory uses PostgreSQL: pass --database-url.[/yellow]")
    svc = services.build(settings)
    ca = Path(saved.get("caBundle") or settings.tls_dir / "ca.pem")
    info = dataclasses.replace(_connection_info(settings, ca, svc.identity),
                               isolation=str(saved.get("isolation") or "n/a"),
                               isolation_level=str(saved.get("isolationLevel") or ""))
    svc.db.dispose()
    if as_json:
        print(json.dumps(info.as_json(), indent=2))
    else:
        info.render(Console(), "Shoal")


@app.command("portal-link")
def portal_link(state_dir: StateDir = default_state_dir(), database_url: DatabaseUrl = None) -> None:
    """Print a new one-time sign-in link to the portal of the Shoal that last ran on this state directory (the
    link `serve` prints at start is valid 15 minutes and signs in once)."""
    from shoal import services

    saved_path = state_dir.expanduser() / "server.json"
    if not saved_path.exists():
        Console(stderr=True).print(f"[red]{state_dir} holds no Shoal state: no server has run there.[/red] Pass "
                                   "the --state-dir of the running server (or set SHOAL_STATE_DIR).")
        raise typer.Exit(2)
    base = str(json.loads(saved_path.read_text()).get("authorityHost") or "")
    svc = services.build(_settings(state_dir, database_url, public_url=base or None))
    print(_portal_link(svc, svc.settings.base_url))
    svc.db.dispose()


@principal_app.command("create")
def principal_create(
    name: Annotated[str, typer.Argument(help="Display name of the application.")],
    state_dir: StateDir = default_state_dir(),
    database_url: DatabaseUrl = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Create a service principal; prints its client id and secret (shown only once)."""
    from shoal import services
    from shoal.domain import identity

    svc = services.build(_settings(state_dir, database_url))
    with svc.db.write() as s:
        row, secret = identity.create_principal(s, svc.clock, svc.tenant_id, name)
        out = {"clientId": row.client_id, "objectId": row.object_id, "displayName": row.display_name,
               "clientSecret": secret, "tenantId": svc.tenant_id}
    svc.db.dispose()
    if as_json:
        print(json.dumps(out, indent=2))
    else:
        for k, v in out.items():
            console.print(f"[bold]{k}[/bold]: {v}")
        console.print("The secret is stored hashed and cannot be shown again. It has no roles yet: "
                      "grant one with `shoal role-assignment create`.")


@principal_app.command("list")
def principal_list(state_dir: StateDir = default_state_dir(), database_url: DatabaseUrl = None,
                   as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List service principals."""
    from shoal import services
    from shoal.domain import identity

    svc = services.build(_settings(state_dir, database_url))
    with svc.db.read() as s:
        rows = [{"clientId": p.client_id, "objectId": p.object_id, "displayName": p.display_name}
                for p in identity.list_principals(s)]
    svc.db.dispose()
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not console.is_terminal:  # a pipe or a file: whole ids, one principal per line, tab-separated
        for r in rows:
            print(f"{r['displayName']}\t{r['clientId']}\t{r['objectId']}")
        return
    table = Table("display name", "client id (appId)", "object id")
    for r in rows:
        table.add_row(r["displayName"], r["clientId"], r["objectId"])
    console.print(table)


@principal_app.command("delete")
def principal_delete(principal: Annotated[str, typer.Argument(help="Client id, object id or display name.")],
                     state_dir: StateDir = default_state_dir(), database_url: DatabaseUrl = None) -> None:
    """Delete a service principal and its role assignments."""
    from shoal import services
    from shoal.domain import identity

    svc = services.build(_settings(state_dir, database_url))
    with svc.db.write() as s:
        row = identity.find_principal(s, principal)
        if row is None:
            console.print(f"[red]No principal '{principal}'. `shoal principal list` shows them.[/red]")
            raise typer.Exit(1)
        if row.client_id == svc.identity.client_id:
            console.print("[red]The first-start principal cannot be deleted.[/red]")
            raise typer.Exit(1)
        identity.delete_principal(s, row)
    svc.db.dispose()
    console.print(f"Deleted principal {principal}.")


@role_app.command("create")
def role_create(
    principal: Annotated[str, typer.Option("--assignee", help="Client id, object id or display name.")],
    role: Annotated[str, typer.Option(help="Owner, Contributor or Reader.")],
    scope: Annotated[str | None, typer.Option(help="ARM scope (default: the dev subscription).")] = None,
    state_dir: StateDir = default_state_dir(),
    database_url: DatabaseUrl = None,
) -> None:
    """Grant a built-in role to a principal at a scope."""
    import uuid

    from shoal import services
    from shoal.auth import rbac
    from shoal.core import errors
    from shoal.domain import authorization, identity

    svc = services.build(_settings(state_dir, database_url))
    definition = rbac.role_by_name(role)
    if definition is None:
        console.print(f"[red]Unknown role '{role}'. Use one of: "
                      + ", ".join(r.name for r in rbac.BUILT_IN_ROLES) + "[/red]")
        raise typer.Exit(2)
    try:
        with svc.db.write() as s:
            p = identity.find_principal(s, principal)
            if p is None:
                console.print(f"[red]No principal '{principal}'.[/red]")
                raise typer.Exit(1)
            admin = authorization.Caller(p.object_id, p.client_id, svc.tenant_id)
            ra, _ = authorization.create_assignment(
                s, svc.clock, admin, scope or f"/subscriptions/{svc.subscription_id}", str(uuid.uuid4()),
                definition.id, p.object_id, "ServicePrincipal", None)
            console.print(f"Assigned {definition.name} to {p.display_name} at {ra.scope} ({ra.name}).")
    except errors.AzureError as exc:
        console.print(f"[red]{exc.code}: {exc.message}[/red]")
        raise typer.Exit(1) from exc
    finally:
        svc.db.dispose()


@role_app.command("list")
def role_list(state_dir: StateDir = default_state_dir(), database_url: DatabaseUrl = None) -> None:
    """List all role assignments."""
    from shoal import services
    from shoal.auth import rbac
    from shoal.domain import authorization

    svc = services.build(_settings(state_dir, database_url))
    table = Table("name", "role", "principal (object id)", "scope")
    with svc.db.read() as s:
        for ra in authorization.list_assignments(s, "/", at_scope_only=False, principal_id=None):
            r = rbac.role_by_id(ra.role_definition_id)
            table.add_row(ra.name, r.name if r else ra.role_definition_id, ra.principal_id, ra.scope)
    svc.db.dispose()
    console.print(table)


@role_app.command("delete")
def role_delete(name: Annotated[str, typer.Argument(help="Role assignment name (GUID).")],
                state_dir: StateDir = default_state_dir(), database_url: DatabaseUrl = None) -> None:
    """Delete a role assignment by name."""
    from shoal import services
    from shoal.store import models

    svc = services.build(_settings(state_dir, database_url))
    with svc.db.write() as s:
        ra = s.get(models.RoleAssignment, name.lower())
        if ra is None:
            console.print(f"[red]No role assignment '{name}'.[/red]")
            raise typer.Exit(1)
        s.delete(ra)
    svc.db.dispose()
    console.print(f"Deleted role assignment {name}.")


def _host_runtime(state_dir: Path, store_dir: Path | None) -> MachineRuntime:
    from shoal.runtime.machines import detect_runtime

    state = state_dir.expanduser().resolve()
    # Inspecting and tearing down needs no throw-away machine; without root only process machines can exist.
    prefer = None if os.geteuid() == 0 else "process"
    return detect_runtime((store_dir or state / "store").expanduser().resolve(), hide=[str(state)], prefer=prefer,
                          probe=False)


StoreDir = Annotated[Path | None, typer.Option("--store-dir", help="Store directory (default <state-dir>/store).",
                                               envvar="SHOAL_STORE_DIR")]


@machines_app.command("list")
def machines_list(state_dir: StateDir = default_state_dir(), store_dir: StoreDir = None) -> None:
    """Machines recorded on this host and whether they run."""
    rt = _host_runtime(state_dir, store_dir)
    table = Table("machine", "status", title=f"isolation: {rt.isolation}")
    for machine_id in sorted(rt.list()):
        table.add_row(machine_id, rt.status(machine_id))
    console.print(table)


@machines_app.command("destroy")
def machines_destroy(
    ids: Annotated[list[str] | None, typer.Argument(help="Machine ids (see `shoal machines list`).")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Destroy every machine of this store.")] = False,
    state_dir: StateDir = default_state_dir(), store_dir: StoreDir = None,
) -> None:
    """Stop machines and remove their mounts (disks keep their data). Use after stopping `shoal serve`."""
    from shoal.runtime.cgroups import remove_store_cgroups
    from shoal.runtime.nodenet import teardown

    rt = _host_runtime(state_dir, store_dir)
    targets = rt.list() if all_ else (ids or [])
    for machine_id in targets:
        rt.destroy(machine_id)
    console.print(f"Destroyed {len(targets)} machine(s).")
    store = (store_dir or state_dir.expanduser().resolve() / "store").expanduser().resolve()
    if all_ and teardown(store):  # no machine left: the host side of their network goes too
        console.print("Removed the machines' network (nftables table and gateway address).")
    if all_:
        remove_store_cgroups(store)


@app.command()
def lineage(resource_id: Annotated[str, typer.Argument(help="ARM id of a disk, snapshot, image or gallery version.")],
            state_dir: StateDir = default_state_dir(), database_url: DatabaseUrl = None) -> None:
    """Where an image (or disk, snapshot, gallery version) came from: base image, sources, flags (JSON)."""
    from shoal import services
    from shoal.core import errors, ids
    from shoal.domain import resources

    svc = services.build(_settings(state_dir, database_url))
    try:
        with svc.db.read() as s:
            row = resources.get(s, ids.parse(resource_id))
            out = {"id": row.id, "lineage": row.internal.get("lineage"), "base": row.internal.get("base")}
    except errors.AzureError as exc:
        console.print(f"[red]{exc.code}: {exc.message}[/red]")
        raise typer.Exit(1) from exc
    finally:
        svc.db.dispose()
    print(json.dumps(out, indent=2))


@app.command()
def quickstart(
    state_dir: StateDir = default_state_dir(),
    keep: Annotated[bool, typer.Option(help="Keep what the quickstart created.")] = False,
    tasks: Annotated[int, typer.Option(help="Tasks in the job.")] = 100,
    nodes: Annotated[int, typer.Option(help="Nodes in the pool.")] = 4,
) -> None:
    """Walk through the whole workflow against a running `shoal serve`: VM, image, gallery, pool, tasks."""
    from shoal.cli import quickstart as qs

    try:
        qs.run(state_dir, keep=keep, tasks=tasks, nodes=nodes, console=console)
    except ImportError as exc:
        console.print(f"[red]The quickstart uses the official Azure SDKs: {exc}. Run `make quickstart`, or "
                      "`pip install -e '.[clients]'`.[/red]")
        raise typer.Exit(1) from exc
    except qs.QuickstartError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc


container_app = typer.Typer(help="Shoal-served blob containers (task output files, resource files).",
                             no_args_is_help=True)
app.add_typer(container_app, name="container")


@container_app.command("url")
def container_url(
    name: Annotated[str, typer.Argument(help="Container name (3-63 lowercase letters, digits, hyphens).")],
    state_dir: StateDir = default_state_dir(),
    database_url: DatabaseUrl = None,
    create: Annotated[bool, typer.Option("--create", help="Create the container if it does not exist.")] = False,
) -> None:
    """Print the container's signed URL (use it as an outputFiles containerUrl or a storageContainerUrl)."""
    from shoal import services
    from shoal.core import errors
    from shoal.domain import containers

    saved_path = state_dir.expanduser() / "server.json"
    saved = json.loads(saved_path.read_text()) if saved_path.exists() else {}
    svc = services.build(_settings(state_dir, database_url, public_url=saved.get("authorityHost")))
    try:
        containers.check_name(name)
    except errors.AzureError as exc:
        Console(stderr=True).print(f"[red]{exc.message}[/red]")
        raise typer.Exit(2) from exc
    if create:
        svc.blobs.create_container(name)
    elif not svc.blobs.container_dir(name).is_dir():
        Console(stderr=True).print(f"[yellow]The container '{name}' does not exist yet: add --create, or create "
                                   "it with PUT <url>&restype=container.[/yellow]")
    print(containers.url(svc.settings.base_url, name, svc.container_key()))
    svc.db.dispose()


faults_app = typer.Typer(help="Operator-only fault injection for node provisioning (tests, drills).",
                         no_args_is_help=True)
app.add_typer(faults_app, name="faults")


@faults_app.command("set")
def faults_set(
    node_delay: Annotated[float, typer.Option(help="Seconds each node takes to provision.")] = 0.0,
    node_failure: Annotated[bool, typer.Option(help="Make node provisioning fail (nodes become unusable).")] = False,
    clock_offset: Annotated[float, typer.Option(help="Move the server's clock forward by this many seconds.")] = 0.0,
    spot_recovery_seconds: Annotated[float, typer.Option(
        min=0.0, help="How long an evicted low-priority node stays preempted before capacity returns.")] = 5.0,
    eviction_rate: Annotated[list[str] | None, typer.Option(
        help="POOL=RATE: evict RATE of the pool's low-priority nodes a minute, at random (repeatable).")] = None,
    state_dir: StateDir = default_state_dir(),
) -> None:
    """Slow down or fail node provisioning, move the clock, or evict Spot nodes at random, on the Shoal using this
    state directory."""
    from shoal.reconcilers.faults import Faults, write

    rates: dict[str, float] = {}
    for item in eviction_rate or []:
        pool, sep, rate = item.partition("=")
        try:
            rates[pool.strip().lower()] = float(rate)
        except ValueError:
            sep = ""
        if not sep or not pool.strip():
            console.print(f"[red]--eviction-rate {item!r}: expected POOL=RATE (evictions a minute).[/red]")
            raise typer.Exit(2) from None
    write(state_dir.expanduser() / "faults.json", Faults(node_delay, node_failure, clock_offset,
                                                          spot_recovery_seconds, rates))
    console.print(f"Faults set: node provisioning delay {node_delay} s, failure {node_failure}, clock offset "
                  f"{clock_offset} s, Spot capacity returns after {spot_recovery_seconds} s"
                  + (f", eviction rates {rates}." if rates else "."))


@faults_app.command("evict")
def faults_evict(
    pool: Annotated[str, typer.Option(help="The pool's id.")],
    account: Annotated[str | None, typer.Option(help="The pool's Batch account (when several have that pool).")]
    = None,
    count: Annotated[int | None, typer.Option(min=0, help="How many low-priority nodes to evict.")] = None,
    fraction: Annotated[float | None, typer.Option(min=0.0, max=1.0, help="Or which fraction of them.")] = None,
    state_dir: StateDir = default_state_dir(),
    database_url: DatabaseUrl = None,
) -> None:
    """Evict low-priority (Spot) nodes as Azure does: they go preempted, their running tasks are requeued, and
    they come back (starting, then idle) once capacity returns (`faults set --spot-recovery-seconds`)."""
    from shoal import services
    from shoal.core import errors
    from shoal.domain.batch import eviction

    if (count is None) == (fraction is None):
        console.print("[red]Give --count or --fraction.[/red]")
        raise typer.Exit(2)
    svc = services.build(_settings(state_dir, database_url))
    try:
        with svc.db.write() as s:
            found = eviction.find_pools(s, pool, account)
            if len(found) != 1:
                where = f" in account {account}" if account else ""
                console.print(f"[red]{'No pool' if not found else 'Several pools'} '{pool}'{where}"
                              f"{': name its --account' if found else ''}.[/red]")
                raise typer.Exit(1)
            evicted = eviction.evict(s, svc.clock, found[0], count=count, fraction=fraction)
    except errors.AzureError as exc:
        console.print(f"[red]{exc.message}[/red]")
        raise typer.Exit(2) from exc
    finally:
        svc.db.dispose()
    console.print(f"Evicted {len(evicted)} node(s) of pool {pool}: {', '.join(evicted) or 'none'}.")


@faults_app.command("clear")
def faults_clear(state_dir: StateDir = default_state_dir()) -> None:
    """Remove every injected fault."""
    from shoal.reconcilers.faults import clear

    clear(state_dir.expanduser() / "faults.json")
    console.print("Faults cleared.")


layers_app = typer.Typer(help="The layer store: list layers, collect unreferenced ones.", no_args_is_help=True)
app.add_typer(layers_app, name="layers")


@layers_app.command("list")
def layers_list(state_dir: StateDir = default_state_dir(), database_url: DatabaseUrl = None,
                store_dir: StoreDir = None, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Layers in the store and whether a resource references them."""
    from shoal import services
    from shoal.reconcilers.machines import referenced_layers
    from shoal.runtime.layers import LayerStore

    settings = _settings(state_dir, database_url, store_dir_override=store_dir)
    svc = services.build(settings)
    referenced = referenced_layers(svc.db)
    svc.db.dispose()
    store = LayerStore(settings.store_dir / "layers")
    rows = [{"digest": d, "referenced": d in referenced} for d in sorted(store.digests())]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("digest", "referenced")
    for r in rows:
        table.add_row(str(r["digest"]), "yes" if r["referenced"] else "no")
    console.print(table)


@layers_app.command("gc")
def layers_gc(state_dir: StateDir = default_state_dir(), database_url: DatabaseUrl = None,
              store_dir: StoreDir = None,
              grace: Annotated[float, typer.Option(help="Keep layers younger than this many seconds.")] = 600.0,
              ) -> None:
    """Delete layers no disk, snapshot, image, gallery version or base references (mark and sweep)."""
    from shoal import services
    from shoal.reconcilers.machines import collect_garbage

    settings = _settings(state_dir, database_url, store_dir_override=store_dir)
    svc = services.build(settings, with_runtime=True)
    assert svc.host is not None
    removed = collect_garbage(svc.db, svc.host, grace)
    svc.db.dispose()
    print(json.dumps({"removed": removed}))


if __name__ == "__main__":
    app()
