"""Private addresses of machines: a subnet per pool, one default subnet for VMs, an address per machine.

Shoal's server owns an address space (``--node-address-space``, default ``10.224.0.0/12``) cut into ``/20``
subnets. The first subnet is the default network of VMs (until virtual networks exist) and holds the gateway
(its first address); the last one holds "public" addresses, reachable from the host, one per pool, where its
inbound NAT endpoints listen (so two pools' frontend port ranges never collide, as each Azure pool has a public
IP of its own); every pool gets one of the others for its life, so its nodes reach each other and nothing else
of the space. Within a subnet, addresses are handed out as Azure does: the first four and the last one are
reserved, so the first machine is ``.4``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from shoal.core import errors

DEFAULT_SPACE = "10.224.0.0/12"
SUBNET_PREFIX = 20
RESERVED_LOW = 4  # Azure reserves x.x.x.0-3 of every subnet (network, gateway, DNS)


def _space(space: str) -> ipaddress.IPv4Network:
    net = ipaddress.ip_network(space)
    if not isinstance(net, ipaddress.IPv4Network) or net.prefixlen > SUBNET_PREFIX:
        raise ValueError(f"the node address space {space} must be an IPv4 network of /{SUBNET_PREFIX} or larger")
    return net


def vm_subnet(space: str) -> str:
    return str(next(_space(space).subnets(new_prefix=SUBNET_PREFIX)))


def gateway(space: str) -> str:
    return str(_space(space).network_address + 1)


def allocate_subnet(space: str, used: Iterable[str | None]) -> str:
    """The first pool subnet of the space that no pool holds."""
    taken = {u for u in used if u}
    for subnet in list(_space(space).subnets(new_prefix=SUBNET_PREFIX))[1:-1]:
        if str(subnet) not in taken:
            return str(subnet)
    raise errors.SubnetsExhausted(f"No private subnet is left for another pool in this Shoal's node address space "
                                  f"{space}: delete a pool, or give the server a larger --node-address-space.")


def usable_range(subnet: str, size: int | None = None) -> tuple[int, int]:
    """(first, last) machine address of the subnet, as integers. ``size``: how many addresses the subnet as
    declared holds (a virtual network's subnet of ``/24`` is served on a ``/20`` of the space but holds 256), so
    that it fills up when Azure's would; its last address is reserved (broadcast), as on Azure."""
    net = ipaddress.ip_network(subnet)
    end = int(net.broadcast_address) if size is None else min(int(net.broadcast_address),
                                                                 int(net.network_address) + size - 1)
    return int(net.network_address) + RESERVED_LOW, end - 1


def declared_size(prefix: str) -> int:
    """How many addresses a declared prefix (``10.0.1.0/24``) holds."""
    return int(ipaddress.ip_network(prefix, strict=False).num_addresses)


def allocate_addresses(subnet: str, used: Iterable[str | None], count: int, size: int | None = None) -> list[str]:
    """``count`` free machine addresses of the subnet, lowest first (``size``: see :func:`usable_range`)."""
    taken = {u for u in used if u}
    out: list[str] = []
    first, last = usable_range(subnet, size)
    for value in range(first, last + 1):
        if len(out) == count:
            break
        address = str(ipaddress.IPv4Address(value))
        if address not in taken:
            out.append(address)
    if len(out) < count:
        raise errors.SubnetIsFull(f"The subnet {subnet} has no free address left for {count} more machines.")
    return out


def machine_network(address: str, subnet: str, space: str) -> dict[str, str | int]:
    """What the host agent wires for a machine."""
    return {"address": address, "prefix": ipaddress.ip_network(subnet).prefixlen, "gateway": gateway(space)}


def public_address(space: str, subnet: str) -> str:
    """The host-reachable address of a pool's inbound NAT endpoints (one per pool subnet)."""
    net = _space(space)
    index = (int(ipaddress.ip_network(subnet).network_address) - int(net.network_address)) >> (32 - SUBNET_PREFIX)
    public = list(net.subnets(new_prefix=SUBNET_PREFIX))[-1]
    return str(public.network_address + RESERVED_LOW + index)


def allocate_public(space: str, used: Iterable[str | None]) -> str:
    """A host-reachable address for a public IP address resource: in the space's last subnet, above the
    addresses pools' inbound NAT endpoints take (one per subnet of the space, see :func:`public_address`)."""
    net = _space(space)
    public = list(net.subnets(new_prefix=SUBNET_PREFIX))[-1]
    taken = {u for u in used if u}
    first = int(public.network_address) + RESERVED_LOW + 2 ** (SUBNET_PREFIX - net.prefixlen)
    for value in range(first, int(public.broadcast_address)):
        address = str(ipaddress.IPv4Address(value))
        if address not in taken:
            return address
    raise errors.SubnetIsFull(f"No public address is left in this Shoal's node address space {space}: delete "
                              "a public IP address, or give the server a larger --node-address-space.")
