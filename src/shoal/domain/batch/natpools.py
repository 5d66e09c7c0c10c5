"""Inbound NAT pools of a Batch pool: the Batch API's validation rules, the node count the port ranges allow,
and the inbound endpoints each node reports.

The rules are the ones the Batch API documents on ``InboundNATPool`` and ``NetworkSecurityGroupRule``
(BatchService.json 2022-01-01.15.0 to 2025-06-01.21.0; the same text is in the azure-batch 15 docstrings of
``BatchInboundNatPool``, ``NetworkSecurityGroupRule`` and ``BatchPoolEndpointConfiguration``):

- at most 5 NAT pools per pool, and none when ``publicIPAddressConfiguration.provision`` is
  ``nopublicipaddresses``;
- ``name``: unique within the pool; letters, digits, underscores, periods and hyphens; starts with a letter or
  digit, ends with a letter, digit or underscore; at most 77 characters;
- ``protocol``: tcp or udp;
- ``backendPort``: 1-65535 except 29876 and 29877 (reserved); unique within the pool;
- ``frontendPortRangeStart`` / ``End``: 1-65534 except 50000-55000 (reserved); ranges must not overlap and
  must contain at least 40 ports;
- ``networkSecurityGroupRules``: at most 25 across all NAT pools of the pool; ``priority`` 150-4096, unique
  within the pool; ``access`` allow or deny; ``sourceAddressPrefix`` (required) a single IP address, an IP
  subnet, a default tag or ``*``; ``sourcePortRanges`` (default ``*``) ports or ranges within 0-65535 that do
  not overlap each other.

Every violation is a 400 ``InvalidPropertyValue`` or ``MissingRequiredProperty`` naming the property by its
canonical (data-plane) path, e.g. ``networkConfiguration.endpointConfiguration.inboundNATPools[1].backendPort``.
Names are compared case-insensitively (Batch ids are case-preserving and case-insensitive).

Ports: each node holds one index ``i`` for its life, the lowest no other node of the pool holds; in every NAT
pool it gets frontend port ``frontendPortRangeStart + i`` and an endpoint named ``<natPoolName>.<i>``, as Azure
names them. When the node leaves the pool its index (and so its ports) is free for the next node. The smallest
range therefore bounds the pool's size (:func:`node_capacity`).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

# A module import, not ``from ... import``: ``pools`` imports this module to call :func:`validate`.
from shoal.domain.batch import pools

PATH = "networkConfiguration.endpointConfiguration.inboundNATPools"
MAX_NAT_POOLS = 5
MAX_NSG_RULES = 25
MAX_NAME = 77
MIN_RANGE_PORTS = 40
FRONTEND_PORTS = (1, 65534)
RESERVED_FRONTEND = (50000, 55000)
BACKEND_PORTS = (1, 65535)
RESERVED_BACKEND = (29876, 29877)
PRIORITIES = (150, 4096)
DEFAULT_TAGS = ("VirtualNetwork", "AzureLoadBalancer", "Internet")
_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9_])?$")
_PORT_RANGE = re.compile(r"^(\d{1,5})(?:-(\d{1,5}))?$")


# --- reading ------------------------------------------------------------------------------------------------
def nat_pools(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The NAT pools of a (canonical) pool spec; [] when it has none. Never raises."""
    net = spec.get("networkConfiguration")
    endpoint = net.get("endpointConfiguration") if isinstance(net, dict) else None
    found = endpoint.get("inboundNATPools") if isinstance(endpoint, dict) else None
    return [p for p in found if isinstance(p, dict)] if isinstance(found, list) else []


def _short(prop: str) -> str:
    """``inboundNATPools[0]...``: how a message names another NAT pool or rule of the same pool."""
    return prop.removeprefix("networkConfiguration.endpointConfiguration.")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# --- validation ---------------------------------------------------------------------------------------------
def validate(spec: dict[str, Any]) -> None:
    """Refuse a pool spec whose inbound NAT pools break a rule of the Batch API (400, the property named)."""
    net = spec.get("networkConfiguration")
    if net is None:
        return
    if not isinstance(net, dict):
        raise pools.bad_value("networkConfiguration", net, "an object is required")
    scope = net.get("dynamicVNetAssignmentScope")
    if scope is not None and str(scope).lower() != "none":
        # Refused rather than ignored: jobs cannot name subnets of their own here (domain/batch/jobs.py).
        raise pools.bad_value("networkConfiguration.dynamicVNetAssignmentScope", scope, "only none is supported by "
                              "Shoal: jobs cannot join subnets of their own; put the pool in the subnet with subnetId")
    if net.get("subnetId") is not None and not isinstance(net["subnetId"], str):
        raise pools.bad_value("networkConfiguration.subnetId", net["subnetId"], "the ARM id of a virtual network's "
                              "subnet is required")  # (where it is: domain/batch/pool_subnets.py)
    endpoint = net.get("endpointConfiguration")
    if endpoint is None:
        return
    if not isinstance(endpoint, dict):
        raise pools.bad_value("networkConfiguration.endpointConfiguration", endpoint, "an object with "
                              "inboundNATPools is required")
    items = endpoint.get("inboundNATPools")
    if items is None:
        raise pools.missing(PATH)
    if not isinstance(items, list):
        raise pools.bad_value(PATH, items, "a list of inbound NAT pools is required")
    if len(items) > MAX_NAT_POOLS:
        raise pools.bad_value(PATH, len(items), f"a pool can have at most {MAX_NAT_POOLS} inbound NAT pools; "
                              f"remove {len(items) - MAX_NAT_POOLS} of them")
    public = net.get("publicIPAddressConfiguration")
    provision = public.get("provision") if isinstance(public, dict) else None
    if items and str(provision).lower() == "nopublicipaddresses":
        raise pools.bad_value(PATH, len(items), "inbound NAT pools cannot be used when "
                              "networkConfiguration.publicIPAddressConfiguration.provision is nopublicipaddresses; "
                              "remove the NAT pools or let Batch provision public IP addresses")
    seen = _Seen()
    for i, item in enumerate(items):
        _validate_nat_pool(f"{PATH}[{i}]", item, seen)


@dataclass
class _Seen:
    """What earlier NAT pools of the same pool already use, and which of them uses it (for the message)."""

    names: dict[str, str] = field(default_factory=dict)  # lower-cased name -> owner
    backend: dict[int, str] = field(default_factory=dict)  # backend port -> owner
    ranges: list[tuple[int, int, str]] = field(default_factory=list)  # (start, end, owner)
    priorities: dict[int, str] = field(default_factory=dict)  # NSG rule priority -> rule
    rules: int = 0  # NSG rules so far


def _int(prop: str, value: Any, low: int, high: int, what: str) -> int:
    if value is None:
        raise pools.missing(prop)
    if not _is_int(value):
        raise pools.bad_value(prop, value, f"an integer is required: {what}")
    if not low <= value <= high:
        raise pools.bad_value(prop, value, f"must be between {low} and {high}: {what}")
    return int(value)


def _validate_nat_pool(prop: str, item: Any, seen: _Seen) -> None:
    if not isinstance(item, dict):
        raise pools.bad_value(prop, item, "an inbound NAT pool object is required")
    name = item.get("name")
    if name is None or name == "":
        raise pools.missing(f"{prop}.name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise pools.bad_value(f"{prop}.name", name, "use letters, digits, underscores, periods and hyphens, "
                              "starting with a letter or digit and ending with a letter, digit or underscore")
    if len(name) > MAX_NAME:
        raise pools.bad_value(f"{prop}.name", name, f"at most {MAX_NAME} characters; shorten the name")
    if name.lower() in seen.names:
        raise pools.bad_value(f"{prop}.name", name, f"{seen.names[name.lower()]} already has this name; NAT pool "
                              "names must be unique within the pool")
    seen.names[name.lower()] = f"{_short(prop)} ('{name}')"
    owner = seen.names[name.lower()]

    protocol = item.get("protocol")
    if protocol is None or protocol == "":
        raise pools.missing(f"{prop}.protocol")
    if str(protocol).lower() not in ("tcp", "udp"):
        raise pools.bad_value(f"{prop}.protocol", protocol, "tcp or udp is required")

    backend = _int(f"{prop}.backendPort", item.get("backendPort"), *BACKEND_PORTS, "the port on the node")
    if backend in RESERVED_BACKEND:
        raise pools.bad_value(f"{prop}.backendPort", backend, f"ports {RESERVED_BACKEND[0]} and "
                              f"{RESERVED_BACKEND[1]} are reserved by Batch; choose another backend port")
    if backend in seen.backend:
        raise pools.bad_value(f"{prop}.backendPort", backend, f"{seen.backend[backend]} already uses this backend "
                              "port; each inbound NAT pool needs its own backendPort")
    seen.backend[backend] = owner

    start = _frontend(f"{prop}.frontendPortRangeStart", item.get("frontendPortRangeStart"))
    end = _frontend(f"{prop}.frontendPortRangeEnd", item.get("frontendPortRangeEnd"))
    if end < start:
        raise pools.bad_value(f"{prop}.frontendPortRangeEnd", end, f"must not be less than frontendPortRangeStart "
                              f"({start})")
    if start < RESERVED_FRONTEND[0] and end > RESERVED_FRONTEND[1]:
        raise pools.bad_value(f"{prop}.frontendPortRangeEnd", end, f"the range {start}-{end} includes ports "
                              f"{RESERVED_FRONTEND[0]}-{RESERVED_FRONTEND[1]}, which Batch reserves; end it below "
                              f"{RESERVED_FRONTEND[0]} or start it above {RESERVED_FRONTEND[1]}")
    if end - start + 1 < MIN_RANGE_PORTS:
        least = start + MIN_RANGE_PORTS - 1
        fits = least < RESERVED_FRONTEND[0] or (start > RESERVED_FRONTEND[1] and least <= FRONTEND_PORTS[1])
        fix = f"set frontendPortRangeEnd to {least} or more" if fits else "start the range lower"
        raise pools.bad_value(f"{prop}.frontendPortRangeEnd", end, f"each range must contain at least "
                              f"{MIN_RANGE_PORTS} ports, {start}-{end} has {end - start + 1}; {fix}")
    for other_start, other_end, other in seen.ranges:
        if start <= other_end and other_start <= end:
            raise pools.bad_value(f"{prop}.frontendPortRangeStart", start, f"the range {start}-{end} overlaps "
                                  f"{other_start}-{other_end} of {other}; frontend port ranges must not overlap")
    seen.ranges.append((start, end, owner))

    rules = item.get("networkSecurityGroupRules")
    if rules is None:
        return
    if not isinstance(rules, list):
        raise pools.bad_value(f"{prop}.networkSecurityGroupRules", rules, "a list of rules is required")
    seen.rules += len(rules)
    if seen.rules > MAX_NSG_RULES:
        raise pools.bad_value(f"{prop}.networkSecurityGroupRules", len(rules), f"at most {MAX_NSG_RULES} network "
                              f"security group rules across all inbound NAT pools of a pool, these make "
                              f"{seen.rules}; remove {seen.rules - MAX_NSG_RULES}")
    for k, rule in enumerate(rules):
        _validate_rule(f"{prop}.networkSecurityGroupRules[{k}]", rule, seen)


def _frontend(prop: str, value: Any) -> int:
    port = _int(prop, value, *FRONTEND_PORTS, "a port of the pool's public address")
    if RESERVED_FRONTEND[0] <= port <= RESERVED_FRONTEND[1]:
        raise pools.bad_value(prop, port, f"ports {RESERVED_FRONTEND[0]}-{RESERVED_FRONTEND[1]} are reserved by "
                              "Batch; choose a frontend port range outside them")
    return port


def _validate_rule(prop: str, rule: Any, seen: _Seen) -> None:
    if not isinstance(rule, dict):
        raise pools.bad_value(prop, rule, "a network security group rule object is required")
    priority = _int(f"{prop}.priority", rule.get("priority"), *PRIORITIES, "lower numbers take precedence")
    if priority in seen.priorities:
        raise pools.bad_value(f"{prop}.priority", priority, f"{seen.priorities[priority]} already has this "
                              "priority; priorities must be unique within the pool")
    seen.priorities[priority] = _short(prop)
    access = rule.get("access")
    if access is None or access == "":
        raise pools.missing(f"{prop}.access")
    if str(access).lower() not in ("allow", "deny"):
        raise pools.bad_value(f"{prop}.access", access, "allow or deny is required")
    prefix = rule.get("sourceAddressPrefix")
    if prefix is None or prefix == "":
        raise pools.missing(f"{prop}.sourceAddressPrefix")
    if not _valid_prefix(prefix):
        raise pools.bad_value(f"{prop}.sourceAddressPrefix", prefix, "a single IP address (10.10.10.10), an IP "
                              f"subnet (192.168.1.0/24), a default tag ({', '.join(DEFAULT_TAGS)}) or * is required")
    _validate_source_ports(f"{prop}.sourcePortRanges", rule.get("sourcePortRanges"))


def _valid_prefix(prefix: Any) -> bool:
    if not isinstance(prefix, str):
        return False
    if prefix == "*" or prefix.lower() in (t.lower() for t in DEFAULT_TAGS):
        return True
    try:
        if "/" in prefix:
            ipaddress.ip_network(prefix, strict=False)
        else:
            ipaddress.ip_address(prefix)
    except ValueError:
        return False
    return True


def _validate_source_ports(prop: str, ranges: Any) -> None:
    if ranges is None:
        return  # the default is "*"
    if not isinstance(ranges, list):
        raise pools.bad_value(prop, ranges, "a list of port ranges is required")
    taken: list[tuple[int, int, str]] = []
    for k, entry in enumerate(ranges):
        text = str(entry).strip() if isinstance(entry, str) or _is_int(entry) else ""
        low, high = (0, 65535) if text == "*" else _source_range(text)
        if low < 0 or high > 65535 or low > high:
            raise pools.bad_value(f"{prop}[{k}]", entry, "* (all ports), a port such as 22 or a range such as "
                                  "100-200, within 0-65535, is required")
        for other_low, other_high, other in taken:
            if low <= other_high and other_low <= high:
                raise pools.bad_value(f"{prop}[{k}]", entry, f"overlaps '{other}'; source port ranges of a rule must "
                                      "not overlap each other")
        taken.append((low, high, text))


def _source_range(text: str) -> tuple[int, int]:
    """``22`` or ``100-200`` -> (low, high); (-1, -1) when it is neither."""
    match = _PORT_RANGE.match(text)
    if match is None:
        return -1, -1
    low = int(match.group(1))
    return low, int(match.group(2)) if match.group(2) is not None else low


# --- capacity and node endpoints -------------------------------------------------------------------------------
def node_capacity(spec: dict[str, Any]) -> int | None:
    """The largest number of nodes the pool's NAT pools allow: every node needs a frontend port of its own in every
    NAT pool's range, so the smallest range decides. None when the pool has no NAT pools."""
    sizes = [p["frontendPortRangeEnd"] - p["frontendPortRangeStart"] + 1 for p in nat_pools(spec)
             if _is_int(p.get("frontendPortRangeStart")) and _is_int(p.get("frontendPortRangeEnd"))]
    return max(0, min(sizes)) if sizes else None


def node_index(endpoints: Iterable[dict[str, Any]]) -> int | None:
    """The index a node's endpoints were made for (the ``<i>`` of ``<natPoolName>.<i>``); None without any."""
    for endpoint in endpoints:
        _, _, suffix = str(endpoint.get("name", "")).rpartition(".")
        if suffix.isdigit():
            return int(suffix)
    return None


def assign(spec: dict[str, Any], used: set[int], address: str, fqdn: str) -> list[dict[str, Any]]:
    """The inbound endpoints of a new node: the lowest index not in ``used`` (which it then joins), one endpoint
    per NAT pool. [] when the pool has no NAT pools, or when every index its ranges allow is taken (the pool's
    node limits keep it below :func:`node_capacity`)."""
    capacity = node_capacity(spec)
    if not capacity:
        return []
    index = next((i for i in range(capacity) if i not in used), None)
    if index is None:
        return []
    used.add(index)
    return [{"name": f"{p['name']}.{index}", "protocol": str(p.get("protocol", "tcp")).lower(),
             "publicIPAddress": address, "publicFQDN": fqdn,
             "frontendPort": int(p["frontendPortRangeStart"]) + index, "backendPort": p.get("backendPort")}
            for p in nat_pools(spec)]


# --- Azure's default SSH endpoint ---------------------------------------------------------------------------------
DEFAULT_SSH_NAME = "SSHRule"
DEFAULT_SSH_PORTS = RESERVED_FRONTEND  # the frontend range Batch keeps for its own endpoints


def default_ssh(spec: dict[str, Any], subnet: str, address: str, public: str, fqdn: str) -> list[dict[str, Any]]:
    """Azure's inbound endpoint for SSH on a node of a pool that has no NAT pools of its own: frontend port
    50000 + the node's place in the pool's subnet (a /20, so within Batch's reserved 50000-55000) on the pool's
    public address, to port 22 of the node. [] when the pool has NAT pools (they replace it) or provisions no
    public addresses."""
    if nat_pools(spec):
        return []
    net = spec.get("networkConfiguration")
    public_config = net.get("publicIPAddressConfiguration") if isinstance(net, dict) else None
    if isinstance(public_config, dict) and str(public_config.get("provision")).lower() == "nopublicipaddresses":
        return []
    offset = int(ipaddress.ip_address(address)) - int(ipaddress.ip_network(subnet, strict=False).network_address)
    port = DEFAULT_SSH_PORTS[0] + offset
    if not (offset >= 0 and port <= DEFAULT_SSH_PORTS[1]):
        return []
    return [{"name": f"{DEFAULT_SSH_NAME}.{offset}", "protocol": "tcp", "publicIPAddress": public,
             "publicFQDN": fqdn, "frontendPort": port, "backendPort": 22}]


def has_endpoints(spec: dict[str, Any]) -> bool:
    """Whether the pool's nodes have inbound endpoints the host forwards (NAT pools, or the default SSH one)."""
    if nat_pools(spec):
        return True
    net = spec.get("networkConfiguration")
    public_config = net.get("publicIPAddressConfiguration") if isinstance(net, dict) else None
    return not (isinstance(public_config, dict)
                and str(public_config.get("provision")).lower() == "nopublicipaddresses")
