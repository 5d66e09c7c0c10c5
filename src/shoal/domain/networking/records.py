"""The records of ``Microsoft.Network`` resources: create/update/delete rules, references and their back
references, and the wire form of each (azure-mgmt-network's shapes).

Every write completes at once (the host's part is level-triggered: ``reconcilers/vmnet.py`` publishes what
``machines.py`` compiles), so a PUT answers 200/201 with ``provisioningState: Succeeded`` and a DELETE 200/204.
Subnets live inside their virtual network's record and security rules inside their group's, as Azure returns
them inline; the child routes (``.../subnets/{name}``, ``.../securityRules/{name}``) edit the parent.

References point one way in a body (a NIC names its subnet, public IP and NSG); the targets keep back
references in ``internal["refs"]`` (what Azure shows as a subnet's ``ipConfigurations``, an NSG's
``networkInterfaces``/``subnets``, a public IP's ``ipConfiguration``), and they are what makes a resource
"in use" when deleting it.
"""

from __future__ import annotations

import ipaddress
import random
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from shoal.core import errors, ids
from shoal.core.clock import Clock
from shoal.core.ids import ResourceId
from shoal.domain import network, resource_groups, resources
from shoal.store import models

NAMESPACE = "Microsoft.Network"
VNETS = "Microsoft.Network/virtualNetworks"
NSGS = "Microsoft.Network/networkSecurityGroups"
PIPS = "Microsoft.Network/publicIPAddresses"
NICS = "Microsoft.Network/networkInterfaces"
SERVICE_TAGS = ("*", "Internet", "VirtualNetwork", "AzureLoadBalancer")
PROTOCOLS = {"tcp": "Tcp", "udp": "Udp", "icmp": "Icmp", "esp": "Esp", "ah": "Ah", "*": "*"}


@dataclass
class NetworkContext:
    clock: Clock
    regions: tuple[str, ...]
    space: str  # the node address space (``--node-address-space``)
    # Set when machines share the host's network (``--node-network host``): public IP addresses show it.
    host_address: str | None = None


# --- small helpers --------------------------------------------------------------------------------------------
def _location(ctx: NetworkContext, body: dict[str, Any], row: models.Resource | None) -> str:
    if row is not None and row.location:
        return row.location
    loc = str(body.get("location") or "").replace(" ", "").lower()
    if not loc:
        raise errors.LocationRequired("The location property is required for this definition.")
    if loc not in ctx.regions:
        raise errors.LocationNotAvailableForResourceType(
            f"The provided location '{body.get('location')}' is not available for resource type "
            f"'{NAMESPACE}/...'. List of available regions is '{','.join(ctx.regions)}'.")
    return loc


def _props(body: dict[str, Any]) -> dict[str, Any]:
    p = body.get("properties")
    return dict(p) if isinstance(p, dict) else {}


def _ref(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def _guid() -> str:
    return str(uuid.uuid4())


def _missing(ref: str, owner: str) -> errors.AzureError:
    return errors.InvalidResourceReference(
        f"Resource {ref} referenced by resource {owner} was not found. Please make sure that the referenced "
        "resource exists, and that both resources are in the same region.")


def _row_of(s: Session, ref: str, type_: str, owner: str) -> models.Resource:
    try:
        rid = ids.parse(ref)
    except errors.AzureError:
        raise _missing(ref, owner) from None
    row = resources.find(s, rid)
    if row is None or row.type_key != type_.lower():
        raise _missing(ref, owner)
    return row


def _refs(row: models.Resource) -> dict[str, list[str]]:
    return {k: list(v) for k, v in (row.internal.get("refs") or {}).items()}


def link(s: Session, clock: Clock, target_id: str, field: str, ref: str, present: bool) -> None:
    """Add (or remove) ``ref`` to the back references ``field`` of the record ``target_id`` (a VNet's subnet
    back references are keyed ``ipConfigurations:<subnet>``)."""
    row = resources.find(s, ids.parse(target_id))
    if row is None:
        return
    refs = _refs(row)
    now = [r for r in refs.get(field, []) if r.lower() != ref.lower()]
    if present:
        now.append(ref)
    if now:
        refs[field] = now
    else:
        refs.pop(field, None)
    row.internal = {**row.internal, "refs": refs}
    resources.touch(row, clock)


def _cidr(text: Any, exc: type[errors.AzureError], what: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.ip_network(str(text), strict=True)
    except ValueError:
        raise exc(f"{what} '{text}' is not a valid IPv4 address prefix in CIDR notation "
                  "(for example 10.0.0.0/24, with no host bits set).") from None
    if not isinstance(net, ipaddress.IPv4Network):
        raise exc(f"{what} '{text}': Shoal serves IPv4 address prefixes only.")
    return net


# --- virtual networks and subnets -------------------------------------------------------------------------------
def subnet_id(vnet_id: str, name: str) -> str:
    return f"{vnet_id}/subnets/{name}"


def split_subnet_id(ref: str) -> tuple[str, str] | None:
    """(virtual network id, subnet name) of a subnet id."""
    head, sep, name = ref.rstrip("/").rpartition("/subnets/")
    return (head, name) if sep and name and "/" not in name else None


def held_subnets(s: Session) -> list[str]:
    """The node-space ``/20``s virtual networks' subnets hold (pools must not be given them)."""
    held: list[str] = []
    for internal in s.scalars(select(models.Resource.internal).where(
            models.Resource.type_key == VNETS.lower())):
        held += list((internal or {}).get("subnets", {}).values())
    return held


def _pool_user(s: Session, served_on: str) -> str | None:
    """How an in-use message names a Batch pool on the subnet (None: no pool is on it)."""
    key = pool_on(s, served_on)
    if key is None:
        return None
    account, _, pool_id = key.rpartition("/")
    return f"Batch pool '{pool_id}' of account {account}"


def _allocate_space_subnet(s: Session, ctx: NetworkContext, taken: list[str]) -> str:
    used = [*s.scalars(select(models.Pool.subnet)), *held_subnets(s), *taken]
    return network.allocate_subnet(ctx.space, used)


class VirtualNetworkKind:
    type = VNETS

    def put(self, ctx: NetworkContext, s: Session, rid: ResourceId, row: models.Resource | None,
            body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        p = _props(body)
        prefixes = (p.get("addressSpace") or {}).get("addressPrefixes") or []
        if not isinstance(prefixes, list) or not prefixes:
            raise errors.InvalidAddressPrefixFormat(
                f"Virtual network '{rid.name}' needs at least one address prefix in addressSpace.addressPrefixes.")
        nets = [_cidr(x, errors.InvalidAddressPrefixFormat, "Address prefix") for x in prefixes]
        for i, a in enumerate(nets):
            for b in nets[i + 1:]:
                if a.overlaps(b):
                    raise errors.InvalidAddressPrefixFormat(
                        f"Address prefixes {a} and {b} of virtual network '{rid.name}' overlap.")
        subnets_in = p.get("subnets")
        subnets_in = [] if subnets_in is None else subnets_in
        if not isinstance(subnets_in, list):
            raise errors.InvalidRequestContent("properties.subnets must be an array.")
        old_internal = dict(row.internal) if row is not None else {}
        mapped_old: dict[str, str] = dict(old_internal.get("subnets") or {})
        refs = _refs(row) if row is not None else {}
        seen: dict[str, ipaddress.IPv4Network] = {}
        out_subnets: list[dict[str, Any]] = []
        mapped: dict[str, str] = {}
        for item in subnets_in:
            name = str((item or {}).get("name") or "")
            if not name:
                raise errors.NetcfgInvalidSubnet(f"A subnet of virtual network '{rid.name}' has no name.")
            sp = _props(item)
            prefix = sp.get("addressPrefix") or next(iter(sp.get("addressPrefixes") or []), None)
            if not prefix:
                raise errors.NetcfgInvalidSubnet(
                    f"Subnet '{name}' is not valid in virtual network '{rid.name}': it has no addressPrefix.")
            net = _cidr(prefix, errors.NetcfgInvalidSubnet, f"Subnet '{name}' is not valid: the address prefix")
            if not any(net.subnet_of(v) for v in nets):
                raise errors.NetcfgSubnetRangeOutsideVnet(
                    f"Subnet '{name}' is not valid because its IP address range is outside the IP address range "
                    f"of virtual network '{rid.name}'.")
            if name.lower() in seen:
                raise errors.NetcfgInvalidSubnet(f"Subnet name '{name}' is used twice in virtual network "
                                                 f"'{rid.name}'.")
            for other, onet in seen.items():
                if net.overlaps(onet):
                    raise errors.NetcfgSubnetRangesOverlap(
                        f"Subnet '{name}' is not valid because its IP address range overlaps with that of an "
                        f"existing subnet in virtual network '{rid.name}' ('{other}', {onet}).")
            seen[name.lower()] = net
            entry_props: dict[str, Any] = {"addressPrefix": str(net)}
            nsg = _ref(sp.get("networkSecurityGroup"))
            if nsg:
                nsg_row = _row_of(s, nsg, NSGS, subnet_id(str(rid), name))
                entry_props["networkSecurityGroup"] = {"id": nsg_row.id}
            for key in ("privateEndpointNetworkPolicies", "privateLinkServiceNetworkPolicies", "serviceEndpoints",
                        "delegations", "defaultOutboundAccess"):
                if key in sp:
                    entry_props[key] = sp[key]
            out_subnets.append({"name": name, "properties": entry_props})
            old_prefix = next((x["properties"]["addressPrefix"] for x in (row.properties.get("subnets") or [])
                               if x["name"].lower() == name.lower()), None) if row is not None else None
            user = refs.get(f"ipConfigurations:{name.lower()}", [None])[0] or (
                _pool_user(s, mapped_old[name.lower()]) if name.lower() in mapped_old else None)
            if old_prefix and old_prefix != str(net) and user:
                raise errors.InUseSubnetCannotBeDeleted(
                    f"Subnet {name} is in use by {user} and its address prefix cannot be changed.")
            mapped[name.lower()] = mapped_old.get(name.lower()) or _allocate_space_subnet(
                s, ctx, list(mapped.values()))
        for gone in set(mapped_old) - set(mapped):
            user = refs.get(f"ipConfigurations:{gone}", [None])[0] or _pool_user(s, mapped_old[gone])
            if user:
                raise errors.InUseSubnetCannotBeDeleted(
                    f"Subnet {gone} is in use by {user} and cannot be deleted. In order to delete the subnet, "
                    "delete all the resources within the subnet.")
        old_nsgs = {(x["name"].lower(), _ref(x["properties"].get("networkSecurityGroup")))
                    for x in (row.properties.get("subnets") or [])} if row is not None else set()
        new_nsgs = {(x["name"].lower(), _ref(x["properties"].get("networkSecurityGroup"))) for x in out_subnets}
        names = {x["name"].lower(): x["name"] for x in [*out_subnets, *(
            row.properties.get("subnets") or [] if row is not None else [])]}
        for sub, nsg in old_nsgs - new_nsgs:
            if nsg:
                link(s, ctx.clock, nsg, "subnets", subnet_id(str(rid), names[sub]), False)
        for sub, nsg in new_nsgs - old_nsgs:
            if nsg:
                link(s, ctx.clock, nsg, "subnets", subnet_id(str(rid), names[sub]), True)
        props = {"addressSpace": {"addressPrefixes": [str(n) for n in nets]}, "subnets": out_subnets,
                 "enableDdosProtection": bool(p.get("enableDdosProtection", False))}
        if p.get("dhcpOptions"):
            props["dhcpOptions"] = p["dhcpOptions"]
        internal = {**old_internal, "subnets": mapped, "resourceGuid": old_internal.get("resourceGuid") or _guid()}
        return props, internal

    def render_properties(self, row: models.Resource) -> dict[str, Any]:
        refs = _refs(row)
        subnets = [self.render_subnet(row, x, refs) for x in row.properties.get("subnets") or []]
        return {**row.properties, "subnets": subnets, "provisioningState": "Succeeded",
                "resourceGuid": row.internal.get("resourceGuid"), "virtualNetworkPeerings": []}

    @staticmethod
    def render_subnet(row: models.Resource, entry: dict[str, Any], refs: dict[str, list[str]] | None = None
                      ) -> dict[str, Any]:
        refs = _refs(row) if refs is None else refs
        props = {**entry["properties"], "provisioningState": "Succeeded"}
        users = refs.get(f"ipConfigurations:{entry['name'].lower()}")
        if users:
            props["ipConfigurations"] = [{"id": u} for u in users]
        return {"id": subnet_id(row.id, entry["name"]), "name": entry["name"],
                "type": f"{VNETS}/subnets", "etag": f'W/"{row.etag}"', "properties": props}

    def before_delete(self, ctx: NetworkContext, s: Session, row: models.Resource) -> None:
        refs = _refs(row)
        in_use = [(key.split(":", 1)[1], users[0]) for key, users in refs.items()
                  if key.startswith("ipConfigurations:") and users]
        in_use += [(name, user) for name, served_on in (row.internal.get("subnets") or {}).items()
                   if (user := _pool_user(s, served_on))]
        if in_use:
            raise errors.InUseSubnetCannotBeDeleted(
                f"Subnet {in_use[0][0]} is in use by {in_use[0][1]} and cannot be deleted. In order to "
                "delete the subnet, delete all the resources within the subnet.")
        for x in row.properties.get("subnets") or []:
            nsg = _ref(x["properties"].get("networkSecurityGroup"))
            if nsg:
                link(s, ctx.clock, nsg, "subnets", subnet_id(row.id, x["name"]), False)


# --- network security groups ----------------------------------------------------------------------------------
DEFAULT_RULES: list[tuple[str, str, int, str, str, str]] = [
    # name, direction, priority, source, destination, access (protocol and ports: any)
    ("AllowVnetInBound", "Inbound", 65000, "VirtualNetwork", "VirtualNetwork", "Allow"),
    ("AllowAzureLoadBalancerInBound", "Inbound", 65001, "AzureLoadBalancer", "*", "Allow"),
    ("DenyAllInBound", "Inbound", 65500, "*", "*", "Deny"),
    ("AllowVnetOutBound", "Outbound", 65000, "VirtualNetwork", "VirtualNetwork", "Allow"),
    ("AllowInternetOutBound", "Outbound", 65001, "*", "Internet", "Allow"),
    ("DenyAllOutBound", "Outbound", 65500, "*", "*", "Deny"),
]


def _port_ranges(values: list[Any], rule: str) -> list[str]:
    out = []
    for v in values:
        text = str(v).strip()
        if text == "*":
            out.append("*")
            continue
        lo, _, hi = text.partition("-")
        try:
            a, b = int(lo), int(hi or lo)
        except ValueError:
            a, b = -1, -1
        if not (0 <= a <= b <= 65535):
            raise errors.SecurityRuleInvalidPortRange(
                f"Security rule {rule} has invalid Port range. Value provided: {text}. Value should be an integer "
                "OR integer range with '-' delimiter. Valid range 0-65535.")
        out.append(text)
    return out


def _address_prefixes(values: list[Any], rule: str) -> list[str]:
    out = []
    for v in values:
        text = str(v).strip()
        tag = next((t for t in SERVICE_TAGS if t.lower() == text.lower()), None)
        if tag is not None:
            out.append(tag)
            continue
        try:
            ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise errors.SecurityRuleParameterContainsUnsupportedValue(
                f"Security rule {rule}: the address prefix '{text}' is neither an IPv4 address, a CIDR prefix nor "
                f"a service tag Shoal knows ({', '.join(SERVICE_TAGS)}).") from None
        out.append(text)
    return out


def normalise_rule(item: dict[str, Any], nsg: str) -> dict[str, Any]:
    name = str((item or {}).get("name") or "")
    if not name:
        raise errors.InvalidRequestContent(f"A security rule of network security group '{nsg}' has no name.")
    p = _props(item)
    proto = PROTOCOLS.get(str(p.get("protocol", "")).lower())
    if proto is None:
        raise errors.SecurityRuleParameterContainsUnsupportedValue(
            f"Security rule {name}: protocol '{p.get('protocol')}' is not one of Tcp, Udp, Icmp, Esp, Ah, *.")
    access = next((a for a in ("Allow", "Deny") if a.lower() == str(p.get("access", "")).lower()), None)
    direction = next((d for d in ("Inbound", "Outbound") if d.lower() == str(p.get("direction", "")).lower()), None)
    if access is None or direction is None:
        raise errors.SecurityRuleParameterContainsUnsupportedValue(
            f"Security rule {name}: access must be Allow or Deny and direction Inbound or Outbound.")
    priority = p.get("priority")
    if not isinstance(priority, int) or isinstance(priority, bool) or not 100 <= priority <= 4096:
        raise errors.SecurityRuleInvalidPriority(
            f"Security rule {name} has invalid priority {priority}. Value provided: {priority}. Allowed range "
            "100-4096.")
    out: dict[str, Any] = {"protocol": proto, "access": access, "direction": direction, "priority": priority}
    for single, plural, check in (("sourcePortRange", "sourcePortRanges", _port_ranges),
                                  ("destinationPortRange", "destinationPortRanges", _port_ranges),
                                  ("sourceAddressPrefix", "sourceAddressPrefixes", _address_prefixes),
                                  ("destinationAddressPrefix", "destinationAddressPrefixes", _address_prefixes)):
        many = p.get(plural) or []
        if p.get(single) not in (None, ""):
            out[single] = check([p[single]], name)[0]
            out[plural] = []
        elif many:
            out[plural] = check(list(many), name)
        else:
            out[single] = "*"
            out[plural] = []
    if p.get("description"):
        out["description"] = str(p["description"])
    return {"name": name, "properties": out}


class NetworkSecurityGroupKind:
    type = NSGS

    def put(self, ctx: NetworkContext, s: Session, rid: ResourceId, row: models.Resource | None,
            body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        p = _props(body)
        rules_in = p.get("securityRules") or []
        if not isinstance(rules_in, list):
            raise errors.InvalidRequestContent("properties.securityRules must be an array.")
        rules = [normalise_rule(r, rid.name) for r in rules_in]
        seen: dict[tuple[str, int], str] = {}
        names: set[str] = set()
        for r in rules:
            rp = r["properties"]
            key = (rp["direction"], rp["priority"])
            if key in seen:
                raise errors.SecurityRuleInvalidPriority(
                    f"Security rules {seen[key]} and {r['name']} of network security group '{rid.name}' have the "
                    f"same priority {rp['priority']} and direction {rp['direction']}.")
            if r["name"].lower() in names:
                raise errors.InvalidRequestContent(f"Security rule name '{r['name']}' is used twice.")
            seen[key] = r["name"]
            names.add(r["name"].lower())
        internal: dict[str, Any] = dict(row.internal) if row is not None else {"resourceGuid": _guid()}
        return {"securityRules": rules}, internal

    def render_properties(self, row: models.Resource) -> dict[str, Any]:
        refs = _refs(row)
        props: dict[str, Any] = {
            "securityRules": [self.render_rule(row, r) for r in row.properties.get("securityRules") or []],
            "defaultSecurityRules": [self.render_rule(row, r, "defaultSecurityRules") for r in default_rules()],
            "provisioningState": "Succeeded", "resourceGuid": row.internal.get("resourceGuid")}
        if refs.get("networkInterfaces"):
            props["networkInterfaces"] = [{"id": x} for x in refs["networkInterfaces"]]
        if refs.get("subnets"):
            props["subnets"] = [{"id": x} for x in refs["subnets"]]
        return props

    @staticmethod
    def render_rule(row: models.Resource, rule: dict[str, Any], collection: str = "securityRules") -> dict[str, Any]:
        return {"id": f"{row.id}/{collection}/{rule['name']}", "name": rule["name"],
                "type": f"{NSGS}/{collection}", "etag": f'W/"{row.etag}"',
                "properties": {**rule["properties"], "provisioningState": "Succeeded"}}

    def before_delete(self, ctx: NetworkContext, s: Session, row: models.Resource) -> None:
        refs = _refs(row)
        users = [*refs.get("networkInterfaces", []), *refs.get("subnets", [])]
        if users:
            raise errors.InUseNetworkSecurityGroupCannotBeDeleted(
                f"Network security group {row.id} cannot be deleted because it is in use by the following "
                f"resources: {', '.join(users)}. In order to delete the Network security group, remove the "
                "association with the resource(s).")


def default_rules() -> list[dict[str, Any]]:
    return [{"name": n, "properties": {"description": "Shoal mirrors Azure's default rule", "protocol": "*",
                                       "sourcePortRange": "*", "destinationPortRange": "*",
                                       "sourceAddressPrefix": src, "destinationAddressPrefix": dst,
                                       "sourcePortRanges": [], "destinationPortRanges": [],
                                       "sourceAddressPrefixes": [], "destinationAddressPrefixes": [],
                                       "access": access, "priority": prio, "direction": direction}}
            for n, direction, prio, src, dst, access in DEFAULT_RULES]


# --- public IP addresses -----------------------------------------------------------------------------------
def public_addresses_in_use(s: Session) -> list[str]:
    """Public addresses given out: public IP address resources' and those of pools in virtual network subnets
    (``domain/batch/pool_subnets.py``)."""
    used = [(r or {}).get("address") for r in s.scalars(select(models.Resource.internal).where(
        models.Resource.type_key == PIPS.lower()))]
    used += list(s.scalars(select(models.Pool.public_address).where(models.Pool.public_address.is_not(None))))
    return [str(u) for u in used if u]


class PublicIPAddressKind:
    type = PIPS

    def put(self, ctx: NetworkContext, s: Session, rid: ResourceId, row: models.Resource | None,
            body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        p = _props(body)
        sku = body.get("sku") or (row.sku if row is not None else None) or {"name": "Basic"}
        sku_name = next((n for n in ("Basic", "Standard") if n.lower() == str(sku.get("name", "")).lower()), None)
        if sku_name is None:
            raise errors.InvalidParameter(f"Public IP address SKU '{sku.get('name')}' is not Basic or Standard.",
                                          target="sku.name")
        method = p.get("publicIPAllocationMethod") or ("Static" if sku_name == "Standard" else "Dynamic")
        method = next((m for m in ("Static", "Dynamic") if m.lower() == str(method).lower()), None)
        if method is None:
            raise errors.InvalidParameter("publicIPAllocationMethod must be Static or Dynamic.",
                                          target="properties.publicIPAllocationMethod")
        if str(p.get("publicIPAddressVersion") or "IPv4").lower() != "ipv4":
            raise errors.InvalidParameter("Shoal gives IPv4 public addresses only.",
                                          target="properties.publicIPAddressVersion")
        internal: dict[str, Any] = dict(row.internal) if row is not None else {"resourceGuid": _guid()}
        if not internal.get("address"):
            internal["address"] = network.allocate_public(ctx.space, public_addresses_in_use(s))
        props: dict[str, Any] = {"publicIPAllocationMethod": method, "publicIPAddressVersion": "IPv4",
                                 "idleTimeoutInMinutes": int(p.get("idleTimeoutInMinutes") or 4)}
        if p.get("deleteOption"):
            props["deleteOption"] = "Delete" if str(p["deleteOption"]).lower() == "delete" else "Detach"
        dns = p.get("dnsSettings")
        if isinstance(dns, dict) and dns.get("domainNameLabel"):
            label = str(dns["domainNameLabel"]).lower()
            props["dnsSettings"] = {"domainNameLabel": label,
                                    "fqdn": f"{label}.{_location(ctx, body, row)}.cloudapp.azure.com"}
        # With --node-network host nothing routes the space's addresses: clients reach machines at the host's
        # address (SSH on each machine's own port, domain/host_ssh.py). The space address is kept for the
        # host's forwarding tables, should the server run with networks of its own again.
        internal.pop("hostAddress", None)
        if ctx.host_address:
            internal["hostAddress"] = ctx.host_address
        internal["sku"] = {"name": sku_name, "tier": sku.get("tier") or "Regional"}
        return props, internal

    def render_properties(self, row: models.Resource) -> dict[str, Any]:
        props = {**row.properties, "provisioningState": "Succeeded",
                 "ipAddress": row.internal.get("hostAddress") or row.internal.get("address"),
                 "resourceGuid": row.internal.get("resourceGuid"), "ipTags": []}
        users = _refs(row).get("ipConfiguration")
        if users:
            props["ipConfiguration"] = {"id": users[0]}
        return props

    def before_delete(self, ctx: NetworkContext, s: Session, row: models.Resource) -> None:
        users = _refs(row).get("ipConfiguration")
        if users:
            raise errors.PublicIPAddressInUse(
                f"Public IP address {row.id} can not be deleted since it is still allocated to resource "
                f"{users[0]}. In order to delete the public IP, disassociate/detach the Public IP address from "
                "the resource.")


# --- network interfaces ---------------------------------------------------------------------------------
def _mac() -> str:
    return "00-0D-3A-" + "-".join(f"{random.randint(0, 255):02X}" for _ in range(3))


def nic_addresses_in(s: Session, space_subnet: str, skip: str | None = None) -> list[str]:
    used = []
    for key, internal in s.execute(select(models.Resource.key, models.Resource.internal).where(
            models.Resource.type_key == NICS.lower())).all():
        if skip is not None and key == skip:
            continue
        for cfg in ((internal or {}).get("configs") or {}).values():
            if cfg.get("spaceSubnet") == space_subnet:
                used.append(cfg.get("address"))
    return used


def node_addresses_in(s: Session, space_subnet: str) -> list[str]:
    """Addresses of Batch pools' nodes on a subnet (pools in a virtual network's subnet share it)."""
    return [a for a in s.scalars(select(models.Node.ip_address).join(
        models.Pool, models.Pool.key == models.Node.pool_key).where(models.Pool.subnet == space_subnet)) if a]


def pool_on(s: Session, space_subnet: str) -> str | None:
    """A Batch pool (its key) whose nodes are on the subnet, if any: the subnet is in use."""
    return s.scalar(select(models.Pool.key).where(models.Pool.subnet == space_subnet).limit(1))


class NetworkInterfaceKind:
    type = NICS

    def put(self, ctx: NetworkContext, s: Session, rid: ResourceId, row: models.Resource | None,
            body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        p = _props(body)
        owner = str(rid)
        configs_in = p.get("ipConfigurations") or []
        if not isinstance(configs_in, list) or not configs_in:
            raise errors.InvalidRequestContent(
                f"Network interface {owner} must have at least one IP configuration (properties.ipConfigurations).")
        old = dict(row.internal.get("configs") or {}) if row is not None else {}
        configs: dict[str, dict[str, Any]] = {}
        out: list[dict[str, Any]] = []
        primary_seen = False
        for i, item in enumerate(configs_in):
            name = str((item or {}).get("name") or ("ipconfig1" if i == 0 else ""))
            if not name:
                raise errors.InvalidRequestContent(f"IP configuration {i} of network interface {owner} has no name.")
            cp = _props(item)
            sub_ref = _ref(cp.get("subnet"))
            if not sub_ref:
                raise errors.InvalidRequestContent(
                    f"IP configuration {name} of network interface {owner} must reference a subnet "
                    "(properties.subnet.id).")
            split = split_subnet_id(sub_ref)
            cfg_id = f"{owner}/ipConfigurations/{name}"
            if split is None:
                raise _missing(sub_ref, cfg_id)
            vnet = _row_of(s, split[0], VNETS, cfg_id)
            sub_name = split[1].lower()
            space_subnet = (vnet.internal.get("subnets") or {}).get(sub_name)
            declared = next((x for x in vnet.properties.get("subnets") or [] if x["name"].lower() == sub_name), None)
            if space_subnet is None or declared is None:
                raise _missing(sub_ref, cfg_id)
            canonical_subnet = subnet_id(vnet.id, declared["name"])
            method = str(cp.get("privateIPAllocationMethod") or "Dynamic")
            method = "Static" if method.lower() == "static" else "Dynamic"
            previous = old.get(name.lower())
            used = nic_addresses_in(s, space_subnet, skip=rid.key) + node_addresses_in(s, space_subnet)
            used += [c["address"] for c in configs.values() if c["spaceSubnet"] == space_subnet]
            if method == "Static" and cp.get("privateIPAddress"):
                address = self._static(str(cp["privateIPAddress"]), space_subnet,
                                        declared["properties"]["addressPrefix"], cfg_id)
                if address in used:
                    raise errors.PrivateIPAddressInUse(
                        f"IP configuration {cfg_id} is using the private IP address {cp['privateIPAddress']} which "
                        "is already allocated to another resource.")
            elif previous and previous.get("spaceSubnet") == space_subnet:
                address = previous["address"]
            else:
                address = network.allocate_addresses(space_subnet, used, 1,
                                                     network.declared_size(declared["properties"]["addressPrefix"]))[0]
            pip_ref = _ref(cp.get("publicIPAddress"))
            pip_id = None
            if pip_ref:
                pip = _row_of(s, pip_ref, PIPS, cfg_id)
                holder = next(iter(_refs(pip).get("ipConfiguration") or []), None)
                if holder and holder.lower() != cfg_id.lower():
                    raise errors.PublicIPAddressInUse(
                        f"Public IP address {pip.id} is already used by {holder}: it can be associated with one IP "
                        "configuration at a time.")
                pip_id = pip.id
            primary = bool(cp.get("primary", not primary_seen and i == 0)) and not primary_seen
            primary_seen = primary_seen or primary
            configs[name.lower()] = {"name": name, "address": address, "spaceSubnet": space_subnet,
                                     "subnet": canonical_subnet, "vnet": vnet.id, "publicIp": pip_id,
                                     "primary": primary, "method": method}
            cprops: dict[str, Any] = {"privateIPAllocationMethod": method, "subnet": {"id": canonical_subnet},
                                      "primary": primary, "privateIPAddressVersion": "IPv4"}
            if pip_id:
                cprops["publicIPAddress"] = {"id": pip_id}
            out.append({"name": name, "properties": cprops})
        if not primary_seen:
            first = next(iter(configs.values()))
            first["primary"] = True
            out[0]["properties"]["primary"] = True
        nsg_ref = _ref(p.get("networkSecurityGroup"))
        nsg_id = _row_of(s, nsg_ref, NSGS, owner).id if nsg_ref else None
        # Back references: what this interface names now, against what it named before.
        old_nsg = row.internal.get("nsg") if row is not None else None
        if (old_nsg or "").lower() != (nsg_id or "").lower():
            if old_nsg:
                link(s, ctx.clock, old_nsg, "networkInterfaces", owner, False)
            if nsg_id:
                link(s, ctx.clock, nsg_id, "networkInterfaces", owner, True)
        self._relink(ctx, s, owner, old, configs)
        props: dict[str, Any] = {
            "ipConfigurations": out, "enableAcceleratedNetworking": bool(p.get("enableAcceleratedNetworking", False)),
            "enableIPForwarding": bool(p.get("enableIPForwarding", False))}
        if nsg_id:
            props["networkSecurityGroup"] = {"id": nsg_id}
        internal: dict[str, Any] = dict(row.internal) if row is not None else {"resourceGuid": _guid(),
                                                                                  "macAddress": _mac()}
        internal.update({"configs": configs, "nsg": nsg_id})
        return props, internal

    @staticmethod
    def _static(text: str, space_subnet: str, declared: str, cfg_id: str) -> str:
        try:
            ip = ipaddress.IPv4Address(text)
        except ValueError:
            raise errors.InvalidParameter(f"'{text}' is not an IPv4 address.",
                                          target="privateIPAddress") from None
        real, label = ipaddress.IPv4Network(space_subnet), ipaddress.IPv4Network(declared)
        if ip in label and ip not in real:
            offset = int(ip) - int(label.network_address)
            ip = real.network_address + offset
        first = int(real.network_address) + network.RESERVED_LOW
        if ip not in real or not first <= int(ip) < int(real.broadcast_address):
            raise errors.PrivateIPAddressNotInSubnet(
                f"IP configuration {cfg_id} references the private IP address {text} which does not belong to the "
                f"usable range of its subnet ({declared}, served on {space_subnet}).")
        return str(ip)

    @staticmethod
    def _relink(ctx: NetworkContext, s: Session, owner: str, old: dict[str, Any], new: dict[str, Any]) -> None:
        def pairs(configs: dict[str, Any]) -> set[tuple[str, str, str | None]]:
            return {(f"{owner}/ipConfigurations/{c['name']}", c["subnet"], c.get("publicIp"))
                    for c in configs.values()}

        before, after = pairs(old), pairs(new)
        for cfg, sub, pip in before - after:
            head, name = split_subnet_id(sub) or (sub, "")
            link(s, ctx.clock, head, f"ipConfigurations:{name.lower()}", cfg, False)
            if pip:
                link(s, ctx.clock, pip, "ipConfiguration", cfg, False)
        for cfg, sub, pip in after - before:
            head, name = split_subnet_id(sub) or (sub, "")
            link(s, ctx.clock, head, f"ipConfigurations:{name.lower()}", cfg, True)
            if pip:
                link(s, ctx.clock, pip, "ipConfiguration", cfg, True)

    def render_properties(self, row: models.Resource) -> dict[str, Any]:
        configs = row.internal.get("configs") or {}
        out = []
        for item in row.properties.get("ipConfigurations") or []:
            cfg = configs.get(item["name"].lower(), {})
            out.append({"id": f"{row.id}/ipConfigurations/{item['name']}", "name": item["name"],
                        "type": f"{NICS}/ipConfigurations", "etag": f'W/"{row.etag}"',
                        "properties": {**item["properties"], "privateIPAddress": cfg.get("address"),
                                       "provisioningState": "Succeeded"}})
        props: dict[str, Any] = {**row.properties, "ipConfigurations": out, "provisioningState": "Succeeded",
                                 "resourceGuid": row.internal.get("resourceGuid"),
                                 "macAddress": row.internal.get("macAddress"), "nicType": "Standard",
                                 "dnsSettings": {"dnsServers": [], "appliedDnsServers": []}}
        vm = row.internal.get("virtualMachine")
        if vm:
            props["virtualMachine"] = {"id": vm}
            props["primary"] = bool(row.internal.get("primaryOfVm", True))
        return props

    def before_delete(self, ctx: NetworkContext, s: Session, row: models.Resource) -> None:
        vm = row.internal.get("virtualMachine")
        if vm:
            raise errors.NicInUse(
                f"Network Interface {row.id} is used by existing resource {vm}. In order to delete the network "
                "interface, it must be dissociated from the resource.")
        self.unlink_all(ctx, s, row)

    def unlink_all(self, ctx: NetworkContext, s: Session, row: models.Resource) -> None:
        if row.internal.get("nsg"):
            link(s, ctx.clock, row.internal["nsg"], "networkInterfaces", row.id, False)
        self._relink(ctx, s, row.id, dict(row.internal.get("configs") or {}), {})


KINDS: dict[str, Any] = {
    "virtualNetworks": VirtualNetworkKind(), "networkSecurityGroups": NetworkSecurityGroupKind(),
    "publicIPAddresses": PublicIPAddressKind(), "networkInterfaces": NetworkInterfaceKind(),
}


# --- the use cases the routes call -------------------------------------------------------------------------
def render(kind: Any, row: models.Resource) -> dict[str, Any]:
    body: dict[str, Any] = {"id": row.id, "name": row.name, "type": row.type, "location": row.location,
                            "etag": f'W/"{row.etag}"'}
    if row.tags:
        body["tags"] = row.tags
    if row.sku:
        body["sku"] = row.sku
    body["properties"] = kind.render_properties(row)
    return body


def put(ctx: NetworkContext, s: Session, kind: Any, rid: ResourceId, body: dict[str, Any]
        ) -> tuple[models.Resource, bool]:
    """Create or replace a record; (row, created)."""
    resource_groups.require_usable(s, rid.subscription, rid.resource_group or "")
    row = resources.find(s, rid)
    if row is not None and row.type_key != kind.type.lower():
        raise errors.Conflict(f"A resource of another type already has the id {rid}.")
    location = _location(ctx, body, row)
    props, internal = kind.put(ctx, s, rid, row, body)
    tags = body.get("tags") if isinstance(body.get("tags"), dict) else None
    sku = internal.pop("sku", None)
    if row is None:
        row = resources.create_row(s, ctx.clock, rid, location=location, properties=props, internal=internal,
                                   tags=tags, sku=sku, provisioning_state="Succeeded")
        return row, True
    row.properties, row.internal = props, internal
    if tags is not None:
        row.tags = tags
    if sku is not None:
        row.sku = sku
    row.provisioning_state = "Succeeded"
    resources.touch(row, ctx.clock)
    return row, False


def delete(ctx: NetworkContext, s: Session, kind: Any, rid: ResourceId) -> bool:
    """Delete a record now; False when there is none (ARM answers 204)."""
    row = resources.find(s, rid)
    if row is None or row.type_key != kind.type.lower():
        return False
    kind.before_delete(ctx, s, row)
    s.delete(row)
    return True


# --- children kept inline: subnets of a virtual network, security rules of a group --------------------------
CHILDREN = {"virtualNetworks": ("subnets", "subnets"), "networkSecurityGroups": ("securityRules", "securityRules")}


def _parent_body(row: models.Resource, field: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"location": row.location, "properties": {**row.properties, field: items}}


def get_child(s: Session, kind: Any, parent: ResourceId, field: str, name: str) -> dict[str, Any]:
    row = resources.get(s, parent, expected_type=kind.type)
    item = next((x for x in row.properties.get(field) or [] if x["name"].lower() == name.lower()), None)
    if item is None:
        raise errors.NotFound(f"Resource {parent}/{field}/{name} not found.")
    return render_child(kind, row, item)


def render_child(kind: Any, row: models.Resource, item: dict[str, Any]) -> dict[str, Any]:
    if isinstance(kind, VirtualNetworkKind):
        return kind.render_subnet(row, item)
    return NetworkSecurityGroupKind.render_rule(row, item)


def list_children(s: Session, kind: Any, parent: ResourceId, field: str) -> list[dict[str, Any]]:
    row = resources.get(s, parent, expected_type=kind.type)
    return [render_child(kind, row, x) for x in row.properties.get(field) or []]


def put_child(ctx: NetworkContext, s: Session, kind: Any, parent: ResourceId, field: str, name: str,
              body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    row = resources.get(s, parent, expected_type=kind.type)
    items = [dict(x) for x in row.properties.get(field) or []]
    entry = {"name": name, "properties": _props(body)}
    at = next((i for i, x in enumerate(items) if x["name"].lower() == name.lower()), None)
    if at is None:
        items.append(entry)
    else:
        entry["name"] = items[at]["name"]
        items[at] = entry
    row, _ = put(ctx, s, kind, parent, _parent_body(row, field, items))
    item = next(x for x in row.properties.get(field) or [] if x["name"].lower() == name.lower())
    return render_child(kind, row, item), at is None


def delete_child(ctx: NetworkContext, s: Session, kind: Any, parent: ResourceId, field: str, name: str) -> bool:
    row = resources.find(s, parent)
    if row is None or row.type_key != kind.type.lower():
        return False
    items = [x for x in row.properties.get(field) or [] if x["name"].lower() != name.lower()]
    if len(items) == len(row.properties.get(field) or []):
        return False
    put(ctx, s, kind, parent, _parent_body(row, field, items))
    return True
