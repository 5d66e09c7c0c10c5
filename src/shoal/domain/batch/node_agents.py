"""Node agent SKUs past their end of life: new pools with one are refused, as Azure refuses them.

Azure retires a ``batch.node.*`` agent when its operating system leaves its publisher's support; after that date
"no new Batch pools can be created" with it (Azure/Batch notices #180, #174, #200). The dates below are those
notices'; the marketplace catalog adds its own (an image's ``batchSupportEndOfLife`` in ``GET /supportedimages``,
which an operator's ``--catalog`` file may set): an agent whose every catalog image is past its end of life is
retired too. ``shoal serve --allow-eol-node-agents`` lets an operator create such pools anyway.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from shoal.core import errors

# agent -> the day after which Azure creates no new pools with it (Azure/Batch issues #180, #174, #200).
RETIRED: dict[str, str] = {
    "batch.node.centos 7": "2024-12-31", "batch.node.centos 8": "2024-12-31",
    "batch.node.debian 8": "2024-12-31", "batch.node.debian 9": "2024-12-31", "batch.node.debian 10": "2024-12-31",
    "batch.node.ubuntu 14.04": "2024-12-31", "batch.node.ubuntu 16.04": "2024-12-31",
    "batch.node.ubuntu 18.04": "2024-12-31", "batch.node.ubuntu 20.04": "2025-04-23",
    "batch.node.ubuntu 22.04": "2027-06-30",
}
_policy = {"allow_eol": False}


def configure(*, allow_eol: bool) -> None:
    """The operator's choice (``--allow-eol-node-agents``), set once at start."""
    _policy["allow_eol"] = allow_eol


def _date(value: str) -> datetime:
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def end_of_life(agent: str, catalog: Any) -> datetime | None:
    """When ``agent`` stops being supported: Azure's retirement date, or else the latest end of life of the
    catalog images that use it (None while any of them has none)."""
    known = RETIRED.get(agent.lower())
    if known:
        return _date(known)
    images = [i for i in (catalog.images() if catalog is not None else [])
              if i.node_agent_sku_id.lower() == agent.lower()]
    if not images or any(not i.batch_support_end_of_life for i in images):
        return None
    return max(_date(i.batch_support_end_of_life) for i in images)


def check_new_pool(agent: str, catalog: Any, now: datetime) -> None:
    if _policy["allow_eol"]:
        return
    eol = end_of_life(agent, catalog)
    if eol is not None and now >= eol:
        raise errors.InvalidPropertyValue(
            f"The node agent SKU '{agent}' reached its end of life on {eol:%Y-%m-%d}: Batch no longer creates pools "
            "with it. Choose a supported image and its node agent SKU (GET /supportedimages).",
            values={"PropertyName": "virtualMachineConfiguration.nodeAgentSKUId", "PropertyValue": agent})
