"""``shoal host join`` (a node host of a cluster) and ``shoal dev cluster`` (a cluster on one machine)."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from shoal.cli.options import node_reserve_or_exit
from shoal.config import default_state_dir

console = Console()
host_app = typer.Typer(help="Node hosts of a Shoal cluster (Ray: pip install 'shoal[ray]').", no_args_is_help=True)
dev_app = typer.Typer(help="Tools for development and demos.", no_args_is_help=True)
cluster_app = typer.Typer(help="A Shoal cluster on this one machine: a Ray head, N simulated node hosts (each "
                          "in a network namespace of its own, with its own store) and `shoal serve`.",
                          invoke_without_command=True)
dev_app.add_typer(cluster_app, name="cluster")


def _default_ip(ray_address: str) -> str:
    """The local address that reaches the Ray head (what the head sees this host as)."""
    host, _, port = ray_address.rpartition(":")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((host, int(port or 6379)))
        return str(probe.getsockname()[0])


@host_app.command("join")
def join(
    ray_address: Annotated[str, typer.Option("--ray-address", help="HOST:PORT of the cluster's Ray head.")],
    store_dir: Annotated[Path, typer.Option("--store-dir", help="Where this host keeps layers, disks and machines "
                                            "(a fast filesystem such as tmpfs is best).")],
    name: Annotated[str | None, typer.Option(help="The host's name in the cluster (default: the machine's "
                                             "hostname). Letters, digits, '-' and '_'.")] = None,
    api: Annotated[str | None, typer.Option(help="ADDRESS:PORT where this host reaches the head's Shoal API (default: "
                                            "the Ray head's address, port 8443). Nodes reach it at their gateway.")]
    = None,
    node_ip: Annotated[str | None, typer.Option(help="This host's address as the others reach it (default: the "
                                                "address that reaches the head).")] = None,
    fence_seconds: Annotated[float, typer.Option(help="Stop every machine of this host after the head has been "
                                                 "unreachable this long (the control plane requeues a lost host's "
                                                 "tasks only after the same time: give it the same value).")] = 3.0,
    cores: Annotated[int | None, typer.Option(help="Cores this host offers (default: all).")] = None,
    memory_mb: Annotated[int | None, typer.Option(help="Memory this host offers, MB (default: all).")] = None,
    overcommit: Annotated[float | None, typer.Option(help="Place nodes up to this many times the host's cores "
                                                     "(default: no limit, as on a single host).")] = None,
    runtime: Annotated[str | None, typer.Option(help="As for `shoal serve`.", envvar="SHOAL_RUNTIME")] = None,
    node_network: Annotated[str, typer.Option(help="As for `shoal serve`.")] = "isolated",
    node_address_space: Annotated[str, typer.Option(help="As for `shoal serve` (the same on every host).")]
    = "10.224.0.0/12",
    user_namespaces: Annotated[bool, typer.Option("--user-namespaces/--no-user-namespaces",
                                                  help="As for `shoal serve`.")] = True,
    cgroups: Annotated[bool, typer.Option("--cgroups/--no-cgroups", help="As for `shoal serve`.")] = True,
    node_reserve: Annotated[int | None, typer.Option(min=0, max=4096, help="As for `shoal serve`.",
                                                     show_default=False)] = None,
) -> None:
    """Make this machine a node host: a Ray node with this host's agent; it fences the host when it loses the
    head. Stays in the foreground (run it under systemd); Ctrl-C stops the host's machines and leaves."""
    import re

    from shoal.cluster import join as joining
    from shoal.cluster.raylink import RayUnavailable

    host_name = name or socket.gethostname().split(".")[0]
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", host_name):
        console.print(f"[red]--name {host_name!r}: use 1-40 letters, digits, '-' or '_'.[/red]")
        raise typer.Exit(2)
    if overcommit is not None and overcommit <= 0:
        console.print("[red]--overcommit must be positive.[/red]")
        raise typer.Exit(2)
    reserve = node_reserve_or_exit(console, node_reserve, user_namespaces=user_namespaces,
                                   node_network=node_network, runtime=runtime)
    ip = node_ip or _default_ip(ray_address)
    head_api = api or f"{ray_address.rpartition(':')[0]}:8443"
    options = {"runtime": runtime, "nodeNetwork": node_network, "addressSpace": node_address_space,
               "userNamespaces": user_namespaces, "cgroups": cgroups, "cores": cores, "memoryMb": memory_mb,
               "overcommit": overcommit, "address": ip,
               "nodeReserve": reserve,
               "apiForward": head_api if node_network == "isolated" else None}
    opts = joining.JoinOptions(ray_address, host_name, store_dir.expanduser().resolve(), fence_seconds, options,
                               node_ip=ip)
    try:
        code = joining.run(opts, say=lambda line: console.print(line, highlight=False))
    except RayUnavailable as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    raise typer.Exit(code)


@cluster_app.callback()
def cluster(
    ctx: typer.Context,
    hosts: Annotated[int, typer.Option(help="Simulated node hosts.")] = 3,
    state_dir: Annotated[Path, typer.Option("--state-dir", help="As for `shoal serve`; the hosts' stores, logs and "
                                            "the cluster's record go below it.", envvar="SHOAL_STATE_DIR")]
    = default_state_dir(),
    port: Annotated[int, typer.Option(help="HTTPS port of the API.")] = 8443,
    database_url: Annotated[str | None, typer.Option("--database-url", help="PostgreSQL the API uses (default: a "
                                                     "private PostgreSQL started in the state directory).",
                                                     envvar="SHOAL_DATABASE_URL")] = None,
    name: Annotated[str, typer.Option(help="The cluster's name (namespaces and interfaces are named after it).")]
    = "dev",
    network: Annotated[str, typer.Option(help="The /24 that joins the head and the hosts.")] = "10.213.0.0/24",
    ray_port: Annotated[int, typer.Option(help="Port of the Ray head.")] = 6380,
    fence_seconds: Annotated[float, typer.Option(help="As for `shoal host join`.")] = 3.0,
    runtime: Annotated[str | None, typer.Option(help="As for `shoal serve`.", envvar="SHOAL_RUNTIME")] = None,
    node_network: Annotated[str, typer.Option(help="As for `shoal serve`.")] = "isolated",
    node_address_space: Annotated[str, typer.Option(help="As for `shoal serve` (the head and every host).")]
    = "10.224.0.0/12",
    store_dir: Annotated[Path | None, typer.Option(help="Where the head and hosts keep their stores (default "
                                                   "<state-dir>/store and <state-dir>/hosts).",
                                                   envvar="SHOAL_STORE_DIR")] = None,
    cgroups: Annotated[bool, typer.Option("--cgroups/--no-cgroups", help="As for `shoal host join`, for every "
                                          "simulated host (they share one kernel: see the README).")] = True,
) -> None:
    """Start the cluster and serve until Ctrl-C (then everything it started stops and is removed)."""
    if ctx.invoked_subcommand is not None:
        return
    from shoal.cluster import dev

    spec = dev.ClusterSpec(name=name, hosts=hosts, state_dir=state_dir.expanduser().resolve(), port=port,
                           database_url=database_url, network=network, ray_port=ray_port,
                           fence_seconds=fence_seconds, runtime=runtime, node_network=node_network,
                           node_address_space=node_address_space,
                           store_dir=store_dir.expanduser().resolve() if store_dir else None, cgroups=cgroups)
    try:
        code = dev.run(spec, console)
    except dev.ClusterError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    raise typer.Exit(code)


@cluster_app.command("status")
def cluster_status(
    state_dir: Annotated[Path, typer.Option("--state-dir", envvar="SHOAL_STATE_DIR")] = default_state_dir(),
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The cluster's hosts, whether their supervisor runs, and the machines on each."""
    from shoal.cluster import dev

    try:
        found = dev.status(state_dir.expanduser().resolve())
    except dev.ClusterError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(found, indent=2))
        return
    table = Table("host", "address", "running", "machines", title=f"cluster {found['name']} ({found['rayAddress']})")
    for host in found["hosts"]:
        table.add_row(host["name"], host["address"], "yes" if host["running"] else "no",
                      ", ".join(f"{m} ({s})" for m, s in sorted(host["machines"].items())) or "-")
    console.print(table)

