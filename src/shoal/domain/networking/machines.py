"""Network interfaces on VMs: attaching them when a VM is created, the address a VM boots with, what deleting a VM does
to its interfaces and their public IPs (``deleteOption``), and the inbound policy the host enforces.

The host's part is plain data (``host_policy``): for every VM's primary interface that has a public IP or a network
security group, ``{"address", "publicIPAddress", "stages"}``. ``stages`` are the NSGs traffic must pass in turn (the
subnet's, then the interface's, as Azure evaluates inbound traffic), each an ordered list of rules ``{"allow",
"protocol" ("tcp"/"udp"/"icmp"/None: any), "sources" (CIDRs; None: any), "ports" ([[lo, hi]]; None: any)}`` ending
with Azure's default inbound rules. A virtual network subnet with an NSG gets ``{"subnet", "stages"}``:
its NSG for every address of it (rules then name their ``destinations`` in it). Service tags become addresses here:
``VirtualNetwork`` is the node-space subnets of the VM's virtual network, ``AzureLoadBalancer`` Azure's probe
address 168.63.129.16, ``Internet`` and ``*`` any source (Shoal does not subtract the virtual network from
``Internet``). Outbound rules are kept as records but not enforced.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from shoal.core import errors, ids
from shoal.core.clock import Clock
from shoal.domain import network, resources
from shoal.domain.networking import records
from shoal.store import models

LOAD_BALANCER = "168.63.129.16/32"


def attach(s: Session, clock: Clock, vm_id: str, profile: dict[str, Any] | None) -> dict[str, Any] | None:
    """Check and attach the interfaces a VM's ``networkProfile.networkInterfaces`` names; the profile as the VM
    records it (ids as stored, ``primary`` and ``deleteOption`` explicit)."""
    if not profile:
        return profile
    nics = profile.get("networkInterfaces") or []
    if not isinstance(nics, list):
        raise errors.InvalidParameter("networkProfile.networkInterfaces must be an array.",
                                      target="networkProfile.networkInterfaces")
    out = []
    has_primary = any(bool((n.get("properties") or n).get("primary")) for n in nics if isinstance(n, dict))
    for i, ref in enumerate(nics):
        where = f"networkProfile.networkInterfaces[{i}]"
        nic_ref = records._ref(ref)
        if not nic_ref:
            raise errors.InvalidParameter(f"{where}.id is required.", target=f"{where}.id")
        row = _nic(s, nic_ref, vm_id)
        holder = row.internal.get("virtualMachine")
        if holder and holder.lower() != vm_id.lower():
            raise errors.NicInUse(f"Network interface {row.id} is used by existing VM {holder}; a network "
                                  "interface can be attached to one VM at a time.", target=f"{where}.id")
        props = (ref.get("properties") if isinstance(ref, dict) else None) or {}
        primary = bool(props.get("primary")) if has_primary else i == 0
        option = "Delete" if str(props.get("deleteOption", "Detach")).lower() == "delete" else "Detach"
        row.internal = {**row.internal, "virtualMachine": vm_id, "primaryOfVm": primary}
        resources.touch(row, clock)
        out.append({"id": row.id, "properties": {"primary": primary, "deleteOption": option}})
    return {**profile, "networkInterfaces": out}


def _nic(s: Session, ref: str, owner: str) -> models.Resource:
    try:
        row = resources.find(s, ids.parse(ref))
    except errors.AzureError:
        row = None
    if row is None or row.type_key != records.NICS.lower():
        raise errors.InvalidResourceReference(f"Resource {ref} referenced by resource {owner} was not found.")
    return row


def primary_nic(s: Session, vm: models.Resource) -> models.Resource | None:
    nics = (vm.properties.get("networkProfile") or {}).get("networkInterfaces") or []
    for ref in sorted(nics, key=lambda n: not (n.get("properties") or {}).get("primary")):
        row = resources.find(s, ids.parse(ref["id"]))
        if row is not None and row.type_key == records.NICS.lower():
            return row
    return None


def _primary_config(nic: models.Resource) -> dict[str, Any] | None:
    configs = list((nic.internal.get("configs") or {}).values())
    return next((c for c in configs if c.get("primary")), configs[0] if configs else None)


def vm_address(s: Session, vm: models.Resource) -> tuple[str, str] | None:
    """(address, node-space subnet) of a VM's primary interface; None for a VM without interfaces."""
    nic = primary_nic(s, vm)
    cfg = _primary_config(nic) if nic is not None else None
    return (str(cfg["address"]), str(cfg["spaceSubnet"])) if cfg else None


def release(s: Session, clock: Clock, space: str, vm: models.Resource) -> None:
    """What deleting a VM does to its interfaces: detach, or delete those whose ``deleteOption`` is Delete (and
    then their public IPs whose own ``deleteOption`` is Delete)."""
    ctx = records.NetworkContext(clock, (), space)
    kind = records.NetworkInterfaceKind()
    for ref in (vm.properties.get("networkProfile") or {}).get("networkInterfaces") or []:
        row = resources.find(s, ids.parse(ref["id"]))
        if row is None or row.type_key != records.NICS.lower():
            continue
        if str((ref.get("properties") or {}).get("deleteOption")) != "Delete":
            row.internal = {k: v for k, v in row.internal.items() if k not in ("virtualMachine", "primaryOfVm")}
            resources.touch(row, clock)
            continue
        pips = [c.get("publicIp") for c in (row.internal.get("configs") or {}).values() if c.get("publicIp")]
        kind.unlink_all(ctx, s, row)
        s.delete(row)
        for pip_id in pips:
            pip = resources.find(s, ids.parse(pip_id))
            if pip is not None and pip.properties.get("deleteOption") == "Delete":
                s.delete(pip)


# --- what the host enforces --------------------------------------------------------------------------------
def _sources(prefixes: list[str], vnet_nets: list[str]) -> list[str] | None:
    """CIDRs of a rule's source prefixes (None: any source)."""
    out: list[str] = []
    for p in prefixes:
        low = p.lower()
        if low in ("*", "internet", "0.0.0.0/0"):
            return None
        if low == "virtualnetwork":
            out += vnet_nets
        elif low == "azureloadbalancer":
            out.append(LOAD_BALANCER)
        else:
            out.append(str(ipaddress.ip_network(p, strict=False)))
    return out


def _ports(ranges: list[str]) -> list[list[int]] | None:
    out = []
    for r in ranges:
        if r == "*":
            return None
        lo, _, hi = r.partition("-")
        out.append([int(lo), int(hi or lo)])
    return out


def _targets_machine(prefixes: list[str], address: str, vnet_nets: list[str]) -> bool:
    for p in prefixes:
        low = p.lower()
        if low in ("*", "virtualnetwork", "internet"):
            return True
        if low == "azureloadbalancer":
            continue
        if ipaddress.IPv4Address(address) in ipaddress.ip_network(p, strict=False):
            return True
    return False


def _destinations(prefixes: list[str], declared: str, served_on: str) -> list[str] | None:
    """The addresses of a subnet a rule's destination prefixes name, on the ``/20`` the subnet is served on
    (None: the whole subnet; []: none of it). Prefixes are in the subnet's declared space (10.0.1.5/32)."""
    label, real = ipaddress.IPv4Network(declared), ipaddress.IPv4Network(served_on)
    out: list[str] = []
    for p in prefixes:
        low = p.lower()
        if low in ("*", "virtualnetwork", "internet"):
            return None
        if low == "azureloadbalancer":
            continue
        net = ipaddress.ip_network(p, strict=False)
        if label.subnet_of(net):  # type: ignore[arg-type]
            return None
        if net.subnet_of(label):  # type: ignore[arg-type]
            start = real.network_address + (int(net.network_address) - int(label.network_address))
            out.append(f"{start}/{net.prefixlen}")
    return out


def compile_rules(rules: list[dict[str, Any]], address: str | None, vnet_nets: list[str],
                  subnet: tuple[str, str] | None = None) -> list[dict[str, Any]]:
    """An NSG's inbound rules (and the defaults after them), by priority, as the host's plain rules: for one
    machine's ``address``, or for a whole ``subnet`` ((declared prefix, the /20 it is served on): the rules then
    carry the ``destinations`` they name within it)."""
    inbound = [r["properties"] for r in [*rules, *records.default_rules()]
               if r["properties"]["direction"] == "Inbound"]
    out = []
    for rp in sorted(inbound, key=lambda r: r["priority"]):
        def many(single: str, plural: str, rp: dict[str, Any] = rp) -> list[str]:
            return [rp[single]] if rp.get(single) else list(rp.get(plural) or ["*"])

        targets = many("destinationAddressPrefix", "destinationAddressPrefixes")
        destinations = _destinations(targets, *subnet) if subnet is not None else None
        if destinations == [] or (address is not None and not _targets_machine(targets, address, vnet_nets)):
            continue
        sources = _sources(many("sourceAddressPrefix", "sourceAddressPrefixes"), vnet_nets)
        if sources == []:
            continue  # a service tag with no address here: the rule matches nothing
        proto = rp["protocol"].lower()
        if proto in ("esp", "ah"):
            continue  # no ports, no machine traffic Shoal carries
        ports = _ports(many("destinationPortRange", "destinationPortRanges"))
        if proto == "icmp":
            ports = None
        rule = {"allow": rp["access"] == "Allow", "protocol": None if proto == "*" else proto,
                "sources": sources, "ports": ports, "priority": rp["priority"]}
        if destinations is not None:
            rule["destinations"] = destinations
        out.append(rule)
    return out


def _subnet_nsg(s: Session, vnet: models.Resource | None, subnet_name: str) -> models.Resource | None:
    declared = next((x for x in (vnet.properties.get("subnets") or [] if vnet is not None else [])
                     if x["name"].lower() == subnet_name.lower()), None)
    nsg_id = records._ref((declared or {}).get("properties", {}).get("networkSecurityGroup"))
    return resources.find(s, ids.parse(nsg_id)) if nsg_id else None


def subnet_policy(s: Session) -> list[dict[str, Any]]:
    """What the host must do for virtual network subnets with an NSG: the NSG, for every address of the subnet
    (``{"subnet", "stages"}``), whichever machine is there now or later (Batch pools' nodes have no interface
    records; a VM's own entry evaluates the subnet's NSG again, which changes nothing)."""
    out = []
    for vnet in s.scalars(select(models.Resource).where(models.Resource.type_key == records.VNETS.lower())):
        mapped: dict[str, str] = vnet.internal.get("subnets") or {}
        vnet_nets = sorted(set(mapped.values()))
        for entry in vnet.properties.get("subnets") or []:
            served_on = mapped.get(entry["name"].lower())
            nsg = _subnet_nsg(s, vnet, entry["name"])
            if nsg is not None and served_on is not None:
                rules = list(nsg.properties.get("securityRules") or [])
                out.append({"subnet": served_on, "stages": [compile_rules(
                    rules, None, vnet_nets, (entry["properties"]["addressPrefix"], served_on))]})
    return sorted(out, key=lambda e: e["subnet"])


def host_policy(s: Session) -> list[dict[str, Any]]:
    """What the host must do for every VM's primary interface that has a public IP or an NSG, then for the
    virtual network subnets with an NSG (:func:`subnet_policy`)."""
    out = []
    vms = s.scalars(select(models.Resource).where(models.Resource.type_key == "microsoft.compute/virtualmachines"))
    for vm in vms:
        nic = primary_nic(s, vm)
        cfg = _primary_config(nic) if nic is not None else None
        if nic is None or cfg is None:
            continue
        vnet = resources.find(s, ids.parse(cfg["vnet"]))
        vnet_nets = sorted(set((vnet.internal.get("subnets") or {}).values())) if vnet is not None else []
        stages = []
        nic_nsg = nic.internal.get("nsg")
        for nsg in [_subnet_nsg(s, vnet, cfg["subnet"].rpartition("/")[2]),
                    resources.find(s, ids.parse(nic_nsg)) if nic_nsg else None]:
            if nsg is not None:
                stages.append(compile_rules(list(nsg.properties.get("securityRules") or []), cfg["address"],
                                            vnet_nets))
        pip = resources.find(s, ids.parse(cfg["publicIp"])) if cfg.get("publicIp") else None
        public = pip.internal.get("address") if pip is not None else None
        if stages or public:
            out.append({"address": cfg["address"], "publicIPAddress": public, "stages": stages})
    return sorted(out, key=lambda e: e["address"]) + subnet_policy(s)


def machine_network(s: Session, vm: models.Resource, space: str) -> dict[str, Any] | None:
    """The network a VM with an interface boots with (None: the default subnet of VMs)."""
    found = vm_address(s, vm)
    return network.machine_network(found[0], found[1], space) if found else None
