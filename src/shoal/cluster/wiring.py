"""How ``shoal serve --ray-address`` puts node hosts behind the control plane (called from ``services.py``).

The head keeps its own host agent for disks, images and VMs; :class:`~shoal.cluster.control.ClusterHostAgent`
wraps it and places pool nodes on the node hosts. Hosts fetch layers from the head over HTTPS with a cluster
token kept in the state directory (servers sharing a database and serving one cluster share it through the
state directory or ``SHOAL_CLUSTER_TOKEN``).
"""

from __future__ import annotations

import os
import secrets
from typing import Any

from shoal.auth import at_rest
from shoal.config import Settings
from shoal.core.hosterrors import AgentError


def cluster_token(settings: Settings) -> str:
    given = os.environ.get("SHOAL_CLUSTER_TOKEN")
    if given:
        return given
    path = settings.state_dir / "cluster-token"
    try:
        found = path.read_text().strip()
        if len(found) >= 32:
            return found
    except FileNotFoundError:
        pass
    made = secrets.token_urlsafe(32)
    at_rest.create_private_file(path)
    path.write_text(made + "\n")
    return made


def head_address(settings: Settings) -> str:
    """Where node hosts reach this server's API (``--cluster-address``, else the address it listens on)."""
    return settings.cluster_address or settings.host


def host_config(settings: Settings) -> dict[str, Any]:
    """What every node host is told: where its nodes reach Shoal, the CA that signs Shoal's certificate, where
    and how it fetches layers, and where it says that it fenced itself."""
    cluster_url = f"https://{head_address(settings)}:{settings.port}/_shoal/cluster"
    return {"baseUrl": settings.base_url, "nodeBaseUrl": settings.node_base_url,
            "caPem": (settings.tls_dir / "ca.pem").read_text(),
            "layerUrl": f"{cluster_url}/layers", "fenceUrl": f"{cluster_url}/fenced",
            "clusterToken": settings.cluster_token}


def wrap(local: Any, settings: Settings) -> Any:
    """The control plane's host agent for a cluster: the head's own agent plus the node hosts on Ray."""
    from shoal.cluster import raylink
    from shoal.cluster.control import ClusterHostAgent

    assert settings.ray_address
    try:
        raylink._ray()
    except raylink.RayUnavailable as exc:
        raise AgentError(f"--ray-address needs Ray: {exc}") from exc
    settings.cluster_token = cluster_token(settings)
    return ClusterHostAgent(local, settings.ray_address, lambda: host_config(settings),
                            fence_seconds=settings.fence_seconds)
