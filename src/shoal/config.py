"""Settings of one Shoal process, from the command line (and environment) with embedded defaults."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

from shoal.domain.batch.image_rules import ImageLimits
from shoal.domain.batch.vmsizes import VmSize, VmSizesError, parse_operator_sizes
from shoal.domain.compute.usage import DEFAULT_CORE_QUOTA

DEFAULT_REGIONS = ("westus", "eastus")
# What `shoal serve` keeps made ahead for hardened machines (runtime/reserve.py): a pool of a few hundred nodes
# boots without waiting for their namespaces, for about 0.3 MB of kernel memory each.
DEFAULT_NODE_RESERVE = 256


def node_reserve(requested: int | None, *, user_namespaces: bool, node_network: str, runtime: str | None) -> int:
    """The reserve a host keeps (``--node-reserve``; None: the default where machines are hardened). Shells are
    hardened machines' namespaces, so asking for some without user namespaces and node networks is a ValueError."""
    hardened = user_namespaces and node_network == "isolated" and runtime != "process"
    if requested and not hardened:
        raise ValueError("--node-reserve keeps hardened machines' user and network namespaces made ahead: it needs "
                         "user namespaces and node networks (drop --no-user-namespaces, --node-network host or "
                         "--runtime process), or leave it out.")
    return (DEFAULT_NODE_RESERVE if requested is None else requested) if hardened else 0
REGION_DISPLAY_NAMES = {
    "westus": "West US", "eastus": "East US", "westeurope": "West Europe", "northeurope": "North Europe",
    "chinaeast2": "China East 2", "chinanorth2": "China North 2", "westus2": "West US 2",
    "eastus2": "East US 2", "centralus": "Central US", "southeastasia": "Southeast Asia",
}


def default_state_dir() -> Path:
    env = os.environ.get("SHOAL_STATE_DIR")
    return Path(env) if env else Path.home() / ".shoal"


@dataclass
class Settings:
    state_dir: Path = field(default_factory=default_state_dir)
    host: str = "127.0.0.1"
    port: int = 8443
    database_url: str | None = None
    cert: Path | None = None
    key: Path | None = None
    public_url: str | None = None
    regions: tuple[str, ...] = DEFAULT_REGIONS
    # How long a list page is before ``nextLink`` takes over.
    page_size: int = 200
    # Seconds between reconciler passes when nothing nudges them.
    reconcile_interval: float = 2.0
    # How long a loop's claim on a row lasts without being renewed (``reconcilers/base.py`` Lease): after a
    # replica dies (kill -9), another replica sharing the database takes its work over this long after its
    # last write.
    lease_seconds: float = 120.0
    # This server's replica id (8 hex characters, the prefix of its claims); None: kept in the state directory
    # (``services.replica_id``).
    replica_id: str | None = None
    # Layers, disks and machines (put it on a fast filesystem: tmpfs or a dedicated volume).
    store_dir_override: Path | None = None
    # Operator file extending the marketplace catalog (JSON or TOML).
    catalog_file: Path | None = None
    # Operator file adding VM sizes to Azure's published ones (JSON or TOML; ``load_vm_sizes``).
    vm_sizes_file: Path | None = None
    # Create pools with a node agent SKU past its end of life (Azure refuses them; domain/batch/node_agents.py).
    allow_eol_node_agents: bool = False
    # Node limits of pools from custom images (per image lineage, and for VM-capture / disk-file images).
    image_limits: ImageLimits = field(default_factory=ImageLimits)
    # Total Regional vCPUs of each subscription: VMs and the nodes of UserSubscription-mode Batch pools.
    subscription_core_quota: int = DEFAULT_CORE_QUOTA
    # Force a machine runtime ("namespaces" or "process"); None = namespaces.
    runtime: str | None = None
    # How machines are isolated (namespaces runtime): see runtime/sandbox.py and `shoal doctor`.
    node_network: str = "isolated"  # or "host": machines share the host's network
    node_address_space: str = "10.224.0.0/12"
    user_namespaces: bool = True
    cgroups: bool = True
    # Hardened machines' user and network namespaces kept made ahead (runtime/reserve.py; 0: none).
    node_reserve: int = 0
    # Set at start when machines have networks of their own: where they reach Shoal (their gateway).
    node_gateway: str | None = None
    # Node hosts on Ray (``--ray-address HEAD:PORT``; None: the embedded single host, which never imports Ray).
    ray_address: str | None = None
    # Where node hosts reach this server's API (``--cluster-address``; default: the address it listens on).
    cluster_address: str | None = None
    # The secret node hosts show to fetch layers from this server (made at start when node hosts are on Ray).
    cluster_token: str | None = None
    # How long a node host that lost the head waits before it stops its machines (``shoal host join
    # --fence-seconds``); the control plane requeues a lost host's tasks only after that long.
    fence_seconds: float = 3.0
    # Host directories bind-mounted read-only into every machine at the same path (``--share-host-dir``).
    share_host_dirs: tuple[Path, ...] = ()
    # Disk imports read local files only below this directory (``--import-dir``; None: no local files).
    import_dir: Path | None = None
    # The token signing key (a PEM file, 0600); servers sharing a database share it (auth/at_rest.py).
    signing_key: Path | None = field(default_factory=lambda: Path(os.environ["SHOAL_SIGNING_KEY"])
                                     if os.environ.get("SHOAL_SIGNING_KEY") else None)

    @property
    def signing_key_file(self) -> Path:
        return self.signing_key or self.state_dir / "signing-key.pem"

    @property
    def secret_files(self) -> list[Path]:
        """Files that hold secrets (auth/at_rest.py makes them 0600)."""
        files = [self.credentials_file, self.signing_key_file, self.tls_dir / "ca-key.pem",
                 self.tls_dir / "server-key.pem"]
        if not self.database_url:
            db = self.state_dir / "shoal.db"
            files += [db, db.with_name("shoal.db-wal"), db.with_name("shoal.db-shm")]
        return files

    @property
    def own_networks(self) -> bool:
        """Machines have networks of their own (addresses, subnets), as nodes and VMs on Azure do."""
        return self.runtime != "process" and self.node_network == "isolated"

    @property
    def store_dir(self) -> Path:
        return self.store_dir_override or self.state_dir / "store"

    @property
    def base_url(self) -> str:
        """The https origin clients use (also the token authority and ARM endpoint)."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"https://{host}:{self.port}"

    @property
    def host_address(self) -> str:
        """The IP address clients reach Shoal at (see :func:`reachable_address`)."""
        return reachable_address(self.base_url)[0]

    @property
    def shared_host_address(self) -> str | None:
        """With ``--node-network host`` machines have no addresses of their own: clients reach a VM or a node at
        the host's address (its public IP addresses show it; each sshd has a port of its own,
        ``domain/host_ssh.py``). None when machines have networks of their own."""
        return self.host_address if self.node_network == "host" else None

    @property
    def node_base_url(self) -> str:
        """The https origin machines use (their gateway when they have networks of their own)."""
        return f"https://{self.node_gateway}:{self.port}" if self.node_gateway else self.base_url

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.state_dir / 'shoal.db'}"

    @property
    def tls_dir(self) -> Path:
        return self.state_dir / "tls"

    @property
    def credentials_file(self) -> Path:
        """The first-start service principal's secret, readable only by the operator (0600)."""
        return self.state_dir / "credentials.json"

    def region_display_name(self, region: str) -> str:
        return REGION_DISPLAY_NAMES.get(region, region)


@lru_cache(maxsize=8)
def reachable_address(base_url: str) -> tuple[str, str]:
    """(IP address, name) of the host that clients reach at ``base_url``: its host part, resolved when it is a
    name (127.0.0.1 when it does not resolve). ``base_url`` already says 127.0.0.1 for a server bound to every
    address (0.0.0.0). Cached: the name is resolved once per process."""
    host = urlsplit(base_url).hostname or "127.0.0.1"
    try:
        return str(ipaddress.ip_address(host)), host
    except ValueError:
        pass
    try:
        return socket.gethostbyname(host), host
    except OSError:
        return "127.0.0.1", host


def load_vm_sizes(path: Path | None) -> list[VmSize]:
    """The operator's VM sizes (``--vm-sizes FILE``: JSON, or TOML when the name ends in .toml)."""
    if path is None:
        return []
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise VmSizesError(f"Cannot read the VM size file {path}: {exc.strerror or exc}") from exc
    try:
        raw = tomllib.loads(data.decode("utf-8")) if path.suffix.lower() == ".toml" else json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise VmSizesError(f"{path} is not valid {'TOML' if path.suffix.lower() == '.toml' else 'JSON'}: {exc}") \
            from exc
    return parse_operator_sizes(raw, str(path))
