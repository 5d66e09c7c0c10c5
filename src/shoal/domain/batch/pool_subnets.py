"""Pools in a virtual network's subnet (``networkConfiguration.subnetId``), placed as Azure places them.

Azure's rules (Batch ``NetworkConfiguration.subnetId``): the subnet is an ARM virtual network's
(``Microsoft.Network/virtualNetworks/{vnet}/subnets/{subnet}``) in the Batch account's subscription and region;
the pool's nodes join it, so they take its addresses (beside the VMs' interfaces there, and other pools' nodes:
several pools may share a subnet) and its network security group filters their inbound traffic; a subnet with too
few free addresses allocates the pool partially and reports a resize error; a subnet in use cannot be deleted.

How Shoal serves it: a virtual network's subnet is served on a ``/20`` of the node address space
(``domain/networking/records.py``), so a pool on it takes that ``/20`` as its subnet (``pools.subnet``, set when
the pool is made). Its nodes' addresses are counted against the subnet as declared (a ``/24`` holds 256, five of
them reserved), and the pool gets a public address of its own for its inbound NAT endpoints (``pools.
public_address``; pools on their own subnets derive one from it). The NSG is enforced by the host on the whole
subnet (``domain/networking/machines.py`` ``host_policy``).

Pools need machines with networks of their own for this: with ``--node-network host`` a ``subnetId`` is refused
(400 naming it), never accepted and ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shoal.core import errors, ids
from shoal.domain import network, resources
from shoal.domain.batch import pools
from shoal.domain.networking import records
from shoal.store import models

PROPERTY = "networkConfiguration.subnetId"


@dataclass(frozen=True)
class Subnet:
    vnet: models.Resource
    name: str
    prefix: str  # as declared (10.0.1.0/24)
    served_on: str  # the /20 of the node address space it is served on

    @property
    def size(self) -> int:
        return network.declared_size(self.prefix)


def subnet_ref(spec: dict[str, Any]) -> str | None:
    net = spec.get("networkConfiguration")
    ref = net.get("subnetId") if isinstance(net, dict) else None
    return ref if isinstance(ref, str) and ref else None


def find(s: Session, ref: str) -> Subnet | None:
    """The virtual network's subnet a ``subnetId`` names (None: no such subnet)."""
    split = records.split_subnet_id(ref)
    if split is None:
        return None
    try:
        vnet = resources.find(s, ids.parse(split[0]))
    except errors.AzureError:
        return None
    if vnet is None or vnet.type_key != records.VNETS.lower():
        return None
    served_on = (vnet.internal.get("subnets") or {}).get(split[1].lower())
    declared = next((x for x in vnet.properties.get("subnets") or [] if x["name"].lower() == split[1].lower()), None)
    if served_on is None or declared is None:
        return None
    return Subnet(vnet, declared["name"], declared["properties"]["addressPrefix"], served_on)


def place(s: Session, space: str, account: models.Resource, pool: models.Pool, *, own_network: bool) -> None:
    """Put a new pool on the subnet its spec names (nothing for a pool without ``subnetId``)."""
    ref = subnet_ref(pool.spec)
    if ref is None:
        return
    if not own_network:
        raise pools.bad_value(PROPERTY, ref, "this Shoal server runs with --node-network host: machines share the "
                              "host's network and cannot join a virtual network's subnet; leave subnetId out, or "
                              "run the server with --node-network isolated")
    subnet = find(s, ref)
    if subnet is None:
        raise pools.bad_value(PROPERTY, ref, "the subnet was not found: create the virtual network and its subnet "
                              "first (Microsoft.Network/virtualNetworks/{vnet}/subnets/{subnet})")
    if subnet.vnet.subscription_id.lower() != account.subscription_id.lower():
        raise pools.bad_value(PROPERTY, ref, "the virtual network must be in the Batch account's subscription "
                              f"({account.subscription_id})")
    if (subnet.vnet.location or "").lower() != (account.location or "").lower():
        raise pools.bad_value(PROPERTY, ref, f"the virtual network must be in the Batch account's region "
                              f"({account.location}), not {subnet.vnet.location}")
    pool.subnet = subnet.served_on
    pool.public_address = network.allocate_public(space, records.public_addresses_in_use(s))


def addresses_taken(s: Session, served_on: str, pool_key: str) -> list[str]:
    """Addresses of the subnet that others hold: network interfaces (VMs) and other pools' nodes."""
    others = s.scalars(select(models.Node.ip_address).join(models.Pool, models.Pool.key == models.Node.pool_key)
                       .where(models.Pool.subnet == served_on, models.Pool.key != pool_key))
    return [*records.nic_addresses_in(s, served_on), *[a for a in others if a]]


def room(s: Session, pool: models.Pool) -> int | None:
    """How many more nodes the pool's virtual network subnet has addresses for (None: a pool on a subnet of its
    own, or whose subnet is gone: nothing to count against)."""
    ref = subnet_ref(pool.spec)
    subnet = find(s, ref) if ref else None
    if subnet is None:
        return None
    first, last = network.usable_range(subnet.served_on, subnet.size)
    nodes = s.scalar(select(func.count()).select_from(models.Node).join(
        models.Pool, models.Pool.key == models.Node.pool_key).where(models.Pool.subnet == subnet.served_on)) or 0
    return max(0, last - first + 1 - nodes - len(records.nic_addresses_in(s, subnet.served_on)))


def size_of(s: Session, pool: models.Pool) -> int | None:
    """How many addresses the pool's subnet holds as declared (None: a subnet of the pool's own)."""
    ref = subnet_ref(pool.spec)
    subnet = find(s, ref) if ref else None
    return subnet.size if subnet is not None else None


def subnet_full(subnet_id: str) -> dict[str, Any]:
    """The resize error of a pool whose subnet has no free address left (Azure allocates what fits)."""
    return {"code": "AllocationFailed", "message": "Desired number of nodes could not be allocated: the pool's "
            "subnet does not have enough free IP addresses.", "values": [
                {"name": "Reason", "value": f"The subnet {subnet_id} has no free IP address left for more nodes: use "
                 "a larger subnet, or free addresses in it."}]}
