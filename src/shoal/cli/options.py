"""Checks of command-line options that more than one command takes."""

from __future__ import annotations

import typer
from rich.console import Console

from shoal.config import node_reserve


def node_reserve_or_exit(console: Console, requested: int | None, *, user_namespaces: bool, node_network: str,
                         runtime: str | None) -> int:
    """``--node-reserve`` as the host will keep it, or exit 2 saying why it cannot be honoured."""
    try:
        return node_reserve(requested, user_namespaces=user_namespaces, node_network=node_network, runtime=runtime)
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
