"""SSH ports on the host, for machines that share the host's network (``shoal serve --node-network host``).

Such a machine has no address of its own: whatever it listens on, it listens on the host. An sshd on port 22
would collide with the host's own sshd and with every other machine's (and a machine's root, in a user
namespace of its own, may not bind a port below 1024 of the host's network anyway). So every VM and every node
that runs an sshd gets a TCP port of its own on the host, its sshd listens there (``sshd -p``), and clients
reach it at the host's address, the one they reach Shoal at (``Settings.shared_host_address``):
``ssh -p <port> user@<host address>``.

The rules:

- ports come from :data:`PORTS` (40022-49999): the 50000s are where Batch's inbound NAT pools and its default
  SSH endpoints live (``natpools.RESERVED_FRONTEND``), and 40022 reads as "an SSH port";
- a port is unique on the host among Shoal's machines (the VMs' and nodes' recorded ports), and is never one
  something on the host already listens on when it is chosen (the host agent's ``listening_ports``);
- it is chosen the first time the machine's sshd starts (a VM's first boot with an ``osProfile``, a node's
  first user or its remote login settings) and recorded with the machine, so it survives restarts of the
  server and of the VM (stop, deallocate, start, restart) and a node's reboot or reimage; it is freed with the
  machine's record. No schema change: a VM keeps it in its resource's ``internal["sshPort"]``, a node as an
  inbound endpoint named :data:`ENDPOINT` (backend port = frontend port: sshd listens on the host itself).

How users find it: a VM's instance view has a status ``SSH/port/<n>`` (:func:`vm_status`; Azure's instance view
statuses are an open list of code/level/displayStatus entries, which clients show and never reject), its public
IP addresses show the host's address, and the server logs the port; a node's remote login settings
(``remoteLoginIPAddress``/``remoteLoginPort``) and its ``endpointConfiguration.inboundEndpoints`` name both.

On one SQLite database the choice and its record are one write transaction, so two machines never get the same
port; replicas sharing a PostgreSQL database could, rarely, both choose a port at once (the second sshd then
fails to start and says so in the log). With node hosts on Ray, ports are chosen against the head's listeners
and given at the head's address, where VMs run; nodes on other hosts are not reachable this way.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from shoal.core import errors
from shoal.domain.compute.sources import VMS
from shoal.store import models

PORTS = range(40022, 50000)
ENDPOINT = "HostSSH"  # a node's inbound endpoint for its sshd on the host
VM_KEY = "sshPort"  # where a VM's resource record keeps its port (``internal``)


def choose_port(taken: Collection[int], listening: Collection[int]) -> int:
    """The lowest port of :data:`PORTS` that no machine of Shoal has and nothing on the host listens on."""
    for port in PORTS:
        if port not in taken and port not in listening:
            return port
    raise errors.AllocationFailed(
        f"No SSH port is left on the host for another machine (ports {PORTS[0]}-{PORTS[-1]} are taken, by "
        "Shoal's VMs and nodes or by other programs): delete a VM or a pool, or free some of those ports.")


def endpoint_port(endpoints: Iterable[dict[str, Any]] | None) -> int | None:
    """A node's SSH port on the host, from its inbound endpoints (None: it has none yet)."""
    for endpoint in endpoints or []:
        if endpoint.get("name") == ENDPOINT:
            return int(endpoint["frontendPort"])
    return None


def ports_taken(s: Session) -> set[int]:
    """Every SSH port Shoal's machines have on the host."""
    taken = {int(i[VM_KEY]) for i in s.scalars(select(models.Resource.internal).where(
        models.Resource.type_key == VMS.lower())) if i and i.get(VM_KEY)}
    for endpoints in s.scalars(select(models.Node.endpoints).where(models.Node.endpoints.is_not(None))):
        port = endpoint_port(endpoints)
        if port is not None:
            taken.add(port)
    return taken


def vm_port(s: Session, vm: models.Resource, listening: Callable[[], Collection[int]]) -> int:
    """The VM's SSH port on the host, chosen and recorded on first use (``listening``: the host's listening
    ports, asked only then)."""
    if vm.internal.get(VM_KEY):
        return int(vm.internal[VM_KEY])
    port = choose_port(ports_taken(s), listening())
    vm.internal = {**vm.internal, VM_KEY: port}
    return port


def node_port(s: Session, node: models.Node, address: str, listening: Callable[[], Collection[int]]) -> int:
    """The node's SSH port on the host, chosen and recorded (as its inbound endpoint at ``address``, the
    host's) on first use."""
    port = endpoint_port(node.endpoints)
    if port is not None:
        return port
    port = choose_port(ports_taken(s), listening())
    node.endpoints = [*(node.endpoints or []), {"name": ENDPOINT, "protocol": "tcp", "publicIPAddress": address,
                                                "frontendPort": port, "backendPort": port}]
    return port


def vm_status(port: int) -> dict[str, str]:
    """The VM instance view's status that tells where its sshd listens."""
    return {"code": f"SSH/port/{port}", "level": "Info",
            "displayStatus": f"SSH listens on port {port} of the host's address (--node-network host)"}
