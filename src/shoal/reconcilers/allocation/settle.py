"""The end of a pass: a deleting pool whose nodes are all gone is deleted, and a resize whose last nodes exist
goes steady with its resize errors. Written only while the pass's claim on the pool still holds."""

from __future__ import annotations

from shoal.domain.batch import allocation, pool_nodes, pools
from shoal.reconcilers.allocation.context import Context
from shoal.store import models


def settle(ctx: Context, key: str, loaded: models.Pool, decision: allocation.Decision) -> None:
    """``loaded``: the pool as the pass saw it when it decided (a resize that changed since is not ended)."""
    with ctx.write() as s:  # only while the pass's claim holds (LeaseLost otherwise)
        fresh = s.get(models.Pool, key)
        if fresh is None:
            return
        if pools.finish_delete(s, fresh):
            return
        # A resize is over when its last nodes have booted (in this pass), unless it changed meanwhile.
        unchanged = (fresh.allocation_state, fresh.target_dedicated, fresh.target_low_priority) == (
            loaded.allocation_state, loaded.target_dedicated, loaded.target_low_priority)
        if decision.complete and unchanged and fresh.allocation_state != pools.STEADY and not \
                pool_nodes.has_leaving(s, key):
            pools.end_resize(fresh, ctx.clock, decision.errors)
