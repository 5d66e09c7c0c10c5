"""The source document's rules for pools made from custom images, checked when a pool is created or resized.

- the image lives in the Batch account's subscription and region (a gallery version: a replica in the region);
- the caller may read it (Entra ID callers; Shared Key is refused earlier, at the data plane's door);
- its lineage starts at a first-party marketplace image of the supported-images list, and the pool's
  ``nodeAgentSkuId`` and OS type match that base (Azure would leave such nodes unusable: refuse early instead);
- its source VM had no extensions and an unencrypted OS disk;
- pools from one image lineage (the same image, or images made from the same snapshots) hold at most
  2,500 dedicated and 1,000 low-priority nodes together, across every pool of every account in the
  subscription, and at most as many as the smallest inbound NAT pool port range allows;
- images captured from a VM or made from an imported disk file back pools of at most 200 dedicated nodes.

The limits are configuration (:class:`ImageLimits`, ``shoal serve --image-*-limit``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from shoal.core import errors, ids
from shoal.domain import authorization
from shoal.domain.compute import content as ct
from shoal.store import models


@dataclass(frozen=True)
class ImageLimits:
    dedicated: int = 2500
    low_priority: int = 1000
    captured: int = 200  # dedicated nodes from a VM-capture or disk-file image


def _bad(prop: str, value: str, message: str) -> errors.AzureError:
    return errors.InvalidPropertyValue(message, values={"PropertyName": prop, "PropertyValue": value[:400]})


def check_image(s: Session, catalog: Any, account: models.Resource, spec: dict[str, Any],
                content: dict[str, Any], caller: Any, *, mode: str) -> None:
    """Where the image lives, who may use it and what it was made from (custom images only)."""
    if content.get("marketplace"):
        return
    image_id = str(content.get("imageId") or "")
    same_subscription_and_region(account, content, image_id)
    if caller is not None:
        rid = ids.parse(str(content.get("resolvedId") or image_id))
        action = f"{rid.type}/read"
        if not authorization.allowed(s, caller, action, str(rid)):
            raise errors.AuthorizationFailed(
                f"The client '{caller.object_id}' does not have authorization to perform action '{action}' over the "
                f"image '{image_id}'. Grant it a role that can read the image (for example Reader on the image, its "
                "gallery or its resource group).",
                values={"PropertyName": "imageReference", "PropertyValue": image_id})
    _first_party_base(catalog, spec, content, image_id, mode=mode)
    lineage = content.get("lineage") or {}
    if lineage.get("extensions"):
        raise _bad("imageReference", image_id,
                   f"The image '{image_id}' was made from a VM that had extensions installed "
                   f"({', '.join(map(str, lineage['extensions']))}); Batch pools need images from VMs without "
                   "extensions. Prepare a new VM without extensions and capture its disks again.")
    if lineage.get("osDiskEncrypted"):
        raise _bad("imageReference", image_id,
                   f"The image '{image_id}' was made from an encrypted OS disk; Batch pools cannot use it. Prepare the "
                   "VM without disk encryption and capture its disks again.")


def same_subscription_and_region(account: models.Resource, content: dict[str, Any], image_id: str) -> None:
    rid = ids.parse(image_id)
    if rid.subscription.lower() != account.subscription_id.lower():
        raise _bad("imageReference", image_id,
                   f"The image '{image_id}' is in subscription {rid.subscription}, but the Batch account "
                   f"'{account.name}' is in subscription {account.subscription_id}: the image must be in the account's "
                   "subscription. Copy it (or replicate a gallery version) there.")
    region = (account.location or "").lower()
    replicas = content.get("replicas")
    if replicas is not None:
        regions = {str(name).lower() for name, state in replicas.items() if int((state or {}).get("ready", 0)) > 0}
        if region not in regions:
            raise _bad("imageReference", image_id,
                       f"The gallery image version '{content.get('resolvedId') or image_id}' has no replica in the "
                       f"Batch account's region '{region}' (replicas: {', '.join(sorted(regions)) or 'none'}). Add "
                       f"'{region}' to the version's target regions.")
    elif str(content.get("location") or "").lower() != region:
        raise _bad("imageReference", image_id,
                   f"The image '{image_id}' is in region '{content.get('location')}', but the Batch account "
                   f"'{account.name}' is in '{region}': the image must be in the account's region.")


def _first_party_base(catalog: Any, spec: dict[str, Any], content: dict[str, Any], image_id: str, *,
                      mode: str) -> None:
    vmc = spec.get("virtualMachineConfiguration") or {}
    agent = str(vmc.get("nodeAgentSKUId") or "")
    base = content.get("base") or {}
    if "imported" in base:
        # An image from an imported disk file (built with Packer, say) has no marketplace lineage to check.
        if mode.lower() == "usersubscription":
            raise _bad("imageReference", image_id,
                       f"The image '{image_id}' comes from an imported disk file. Pools of accounts in "
                       "UserSubscription mode need images built from a VM of a supported marketplace image (snapshot "
                       "its disks, then make a managed image or gallery version).")
        return
    urn = ":".join(str(base.get(k, "")) for k in ("publisher", "offer", "sku", "version"))
    if not base.get("firstParty", True) or base.get("plan"):
        raise _bad("imageReference", image_id,
                   f"The image '{image_id}' is built on the third-party marketplace image {urn} (it has plan "
                   "or license terms). Batch custom images must start from a first-party image of the "
                   "supported-images list (GET /supportedimages).")
    if catalog is not None and catalog.find(base.get("publisher", ""), base.get("offer", ""), base.get("sku", ""),
                                            base.get("version", "")) is None:
        raise _bad("imageReference", image_id,
                   f"The image '{image_id}' is built on {urn}, which is not in the supported-images list "
                   "(GET /supportedimages).")
    expected = str(base.get("nodeAgentSkuId") or "")
    if expected and agent.lower() != expected.lower():
        raise _bad("virtualMachineConfiguration.nodeAgentSKUId", agent,
                   f"The nodeAgentSkuId '{agent}' does not match the image's base {urn}, whose node agent SKU is "
                   f"'{expected}'. Nodes with a mismatched agent would be unusable: use '{expected}'.")
    os_type = str(content.get("osType") or base.get("osType") or "Linux")
    if expected and os_type.lower() == "linux" and "windows" in agent.lower():
        raise _bad("virtualMachineConfiguration.nodeAgentSKUId", agent,
                   f"The image '{image_id}' is a {os_type} image; the node agent '{agent}' is for another OS.")


# --- node limits -----------------------------------------------------------------------------------------------
def lineage_keys(content: dict[str, Any]) -> set[str]:
    """What a pool's image shares with others: the image itself, the image it came from, its snapshots."""
    if content.get("marketplace"):
        return set()
    lineage = content.get("lineage") or {}
    keys = {f"image:{str(v).lower()}" for v in (content.get("imageId"), content.get("resolvedId"),
                                                lineage.get("sourceImage")) if v}
    keys |= {f"snapshot:{str(v).lower()}" for v in lineage.get("sourceSnapshots") or []}
    return keys


def check_node_limits(s: Session, limits: ImageLimits, account_key: str, pool_key: str, spec: dict[str, Any],
                      content: dict[str, Any], dedicated: int, low_priority: int,
                      nat_capacity: int | None = None) -> None:
    """Refuse targets that would take an image lineage past its node limits (see the module docstring), or
    the pool past what its inbound NAT pools' port ranges can give each node."""
    if nat_capacity is not None and dedicated + low_priority > nat_capacity:
        raise _bad("targetDedicatedNodes", str(dedicated + low_priority),
                   f"The pool's inbound NAT pools leave room for {nat_capacity} nodes (each node needs a frontend "
                   "port in every NAT pool's range). Widen the frontend port ranges or ask for fewer nodes.")
    if content.get("marketplace"):
        return
    method = (content.get("lineage") or {}).get("method")
    if method in (ct.METHOD_VM_CAPTURE, ct.METHOD_DISK_FILE) and dedicated > limits.captured:
        how = "captured from a VM" if method == ct.METHOD_VM_CAPTURE else "made from an imported disk file"
        raise _bad("targetDedicatedNodes", str(dedicated),
                   f"The pool's image '{content.get('imageId')}' was {how}; such images back pools of at most "
                   f"{limits.captured} dedicated nodes. For larger pools, make the image from snapshots of the VM's "
                   "OS and data disks (a managed image or gallery version from snapshots).")
    keys = lineage_keys(content)
    if not keys:
        return
    subscription_prefix = "/".join(account_key.split("/")[:3]) + "/"
    others: list[tuple[str, int, int]] = []
    for pool in s.scalars(select(models.Pool).where(models.Pool.account_key.startswith(subscription_prefix),
                                                    models.Pool.key != pool_key)):
        if pool.state == "deleting" or not (lineage_keys(pool.content or {}) & keys):
            continue
        others.append((pool.pool_id, pool.target_dedicated, pool.target_low_priority))
    for what, mine, limit, index in (("dedicated", dedicated, limits.dedicated, 1),
                                     ("low-priority", low_priority, limits.low_priority, 2)):
        used = sum(o[index] for o in others)  # type: ignore[misc]
        if mine + used > limit:
            named = ", ".join(f"'{o[0]}' ({o[index]})" for o in others if o[index]) or "none"
            raise _bad("targetDedicatedNodes" if index == 1 else "targetLowPriorityNodes", str(mine),
                       f"Pools from the same image lineage (the same image, or images made from the same snapshots) "
                       f"share a limit of {limit} {what} nodes in a subscription. Other pools already hold {used} "
                       f"(pools: {named}), so this pool can have at most {max(0, limit - used)}. Shrink or delete "
                       "those pools, or build a separate image from new snapshots.")
