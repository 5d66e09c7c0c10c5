"""``shoal marketplace``: list the offered VM images and pre-build their bases (so a pool's first node does
not wait for debootstrap)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Column, Table

from shoal.config import default_state_dir
from shoal.runtime.debootstrap import DebootstrapError
from shoal.runtime.marketplace import BaseError, BaseProvider, Catalog, CatalogError, MarketplaceImage, parse_urn

app = typer.Typer(help="Browse the marketplace images Shoal offers and build their base layers ahead of time.",
                  no_args_is_help=True, add_completion=False)


def _console(*, stderr: bool = False) -> Console:
    # Made per command, not at import, so COLUMNS and the streams of the invocation apply.
    return Console(stderr=stderr, highlight=False)

StateDir = Annotated[Path, typer.Option("--state-dir", help="Where Shoal keeps its database, certificates "
                                        "and disks.", envvar="SHOAL_STATE_DIR")]
StoreDir = Annotated[Path | None, typer.Option("--store-dir", help="Layer and machine store (default: "
                                               "<state-dir>/store).", envvar="SHOAL_STORE_DIR")]
CatalogFile = Annotated[Path | None, typer.Option("--catalog", help="Operator catalog file (JSON or TOML) that "
                                                  "extends or overrides the built-in images.",
                                                  envvar="SHOAL_MARKETPLACE_CATALOG")]


def _load_catalog(catalog: Path | None) -> Catalog:
    try:
        return Catalog.load(catalog.expanduser() if catalog else None)
    except CatalogError as exc:
        _console(stderr=True).print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2) from exc


def _store(state_dir: Path, store_dir: Path | None) -> Path:
    return (store_dir or state_dir / "store").expanduser().resolve()


def _ready_flags(store: Path, images: list[MarketplaceImage]) -> dict[str, bool | None]:
    """Which bases are built; None when there is no store yet (listing must not create one)."""
    if not (store / "layers").is_dir():
        return {image.urn: (True if image.source == "host" else None) for image in images}
    from shoal.runtime.layers import LayerStore

    provider = BaseProvider(store, LayerStore(store / "layers"))
    return {image.urn: provider.is_ready(image) for image in images}


@app.command("list")
def list_images(
    state_dir: StateDir = default_state_dir(),
    store_dir: StoreDir = None,
    catalog: CatalogFile = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List every image version in the catalog and whether its base is built."""
    images = _load_catalog(catalog).images()
    ready = _ready_flags(_store(state_dir, store_dir), images)
    if as_json:
        rows = [{"urn": i.urn, "publisher": i.publisher, "offer": i.offer, "sku": i.sku, "version": i.version,
                 "nodeAgentSKUId": i.node_agent_sku_id, "verificationType": i.verification_type,
                 "firstParty": i.first_party, "plan": i.plan, "source": i.source, "ready": ready[i.urn]}
                for i in images]
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="Marketplace images")
    for column in ("URN", "Node agent SKU", "Verification", "Party", "Source", "Base"):
        table.add_column(column)
    for image in images:
        flag = ready[image.urn]
        state = "[green]ready[/green]" if flag else ("not built" if flag is False else "[dim]no store[/dim]")
        party = "first" if image.first_party else f"third (plan {image.plan['name'] if image.plan else '?'})"
        table.add_row(image.urn, image.node_agent_sku_id, image.verification_type, party, image.source, state)
    _console().print(table)


def build_with_progress(provider: BaseProvider, image: MarketplaceImage, console: Console) -> str:
    """Build (or find built) an image's base, showing each stage: installing debootstrap on the host when it is
    missing, downloading and unpacking packages, storing the layer."""
    # Fixed-width columns, with the stage (debootstrap's current line) last and cut to fit, so the bar does not
    # jump around as the stage text changes length.
    columns = (TextColumn("[bold]{task.fields[urn]}"), BarColumn(bar_width=30), TaskProgressColumn(),
               TimeElapsedColumn(), TextColumn("{task.description}", markup=False,
                                               table_column=Column(ratio=1, no_wrap=True, overflow="ellipsis")))
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("starting", total=1.0, urn=image.urn)

        def show(stage: str, fraction: float) -> None:
            if stage.startswith("Installing debootstrap"):  # a change to the host: say it in the open
                console.print(f"[yellow]{escape(stage)}[/yellow]: debootstrap builds Debian bases; it is "
                              "installed on this host once.")
            bar.update(task, completed=fraction, description=stage)

        return provider.ensure(image, show)


@app.command()
def pull(
    urn: Annotated[str, typer.Argument(help="publisher:offer:sku:version (version may be 'latest' or omitted).")],
    state_dir: StateDir = default_state_dir(),
    store_dir: StoreDir = None,
    catalog: CatalogFile = None,
    debian_mirror: Annotated[str | None, typer.Option("--debian-mirror", help="Debian mirror for debootstrap "
                                                      "builds (default http://deb.debian.org/debian).",
                                                      envvar="SHOAL_DEBIAN_MIRROR")] = None,
) -> None:
    """Build or import the base of one image now, showing progress."""
    try:
        parts = parse_urn(urn)
    except ValueError as exc:
        _console(stderr=True).print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2) from exc
    image = _load_catalog(catalog).find(*parts)
    if image is None:
        _console(stderr=True).print(f"[red]No image {escape(urn)} in the catalog.[/red] See `shoal marketplace list`.")
        raise typer.Exit(1)
    from shoal.runtime.layers import LayerError, LayerStore

    store = _store(state_dir, store_dir)
    provider = BaseProvider(store, LayerStore(store / "layers"), debian_mirror=debian_mirror)
    console = _console()
    started = time.monotonic()
    try:
        base = build_with_progress(provider, image, console)
    except (BaseError, DebootstrapError, LayerError, OSError) as exc:
        _console(stderr=True).print(f"[red]Could not provide the base of {image.urn}:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from exc
    digest = provider.base_digest(image)
    console.print(f"{image.urn}: base ready in {time.monotonic() - started:.1f} s")
    console.print(f"  base:  {base}", soft_wrap=True)
    if digest:
        console.print(f"  layer: {digest}", soft_wrap=True)
