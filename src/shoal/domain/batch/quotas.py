"""Core quotas a pool grows within: how many more nodes a pool may get.

A Batch account in BatchService mode has its own dedicated and low-priority core quotas, shared by its pools;
a UserSubscription account's pools draw on the subscription's regional vCPU quota, which VMs and the nodes of
other UserSubscription pools in the region share.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from shoal.domain.batch import pools, vmsizes
from shoal.domain.compute import usage
from shoal.store import models


def user_subscription(s: Session, pool: models.Pool) -> bool:
    """Whether the pool's account allocates its nodes in the user's subscription."""
    account = s.get(models.Resource, pool.account_key)
    return account is not None and account.properties.get("poolAllocationMode") == "UserSubscription"


def scope(s: Session, pool: models.Pool) -> str:
    """Whose quotas a pool grows within: "subscription" (UserSubscription accounts) or "account"."""
    return "subscription" if user_subscription(s, pool) else "account"


def capacity(s: Session, pool: models.Pool, core_quota: int = usage.DEFAULT_CORE_QUOTA) -> tuple[int, int] | None:
    """More (dedicated, low-priority) nodes the core quotas allow for this pool (None: no quota): the account's
    dedicated and low-priority quotas, or, for UserSubscription accounts, the subscription's regional vCPU quota
    (``core_quota``), which VMs and the nodes of other UserSubscription pools share."""
    account = s.get(models.Resource, pool.account_key)
    if account is not None and account.properties.get("poolAllocationMode") == "UserSubscription":
        cores = vmsizes.lookup(pool.spec.get("vmSize")).cores
        used = usage.regional(s, account.subscription_id, account.location or "", exclude_pool=pool.key).cores
        have_d, have_l = pools.node_counts(s, [pool.key])[pool.key]
        room = max(0, (core_quota - used - (have_d + have_l) * cores) // cores)
        for_dedicated = min(room, max(0, pool.target_dedicated - have_d))  # one quota for both kinds
        return for_dedicated, room - for_dedicated

    if account is None or account.properties.get("dedicatedCoreQuota") is None:
        return None
    cores = vmsizes.lookup(pool.spec.get("vmSize")).cores
    others = pools.list_pools(s, pool.account_key)
    counts = pools.node_counts(s, [other.key for other in others])  # one aggregate for the account's pools
    used_d = used_l = 0
    for other in others:
        per_node = vmsizes.SIZES.get(str(other.spec.get("vmSize", "")).lower())
        d, low = counts[other.key]
        used_d += d * (per_node.cores if per_node else 0)
        used_l += low * (per_node.cores if per_node else 0)
    quota_d = int(account.properties["dedicatedCoreQuota"])
    quota_l = int(account.properties.get("lowPriorityCoreQuota") or 0)
    return max(0, (quota_d - used_d) // cores), max(0, (quota_l - used_l) // cores)
