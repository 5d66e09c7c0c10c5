"""The pool allocation reconciler, split by stage: drives each pool's nodes toward its targets, and each node
through its lifecycle (creating -> starting -> [waitingforstarttask] -> idle, reboot, reimage, removal).

- :mod:`.allocator` — the loop: claim a pool with a lock token, run the stages, release;
- :mod:`.decision` — load the pool and its nodes, decide (pure, ``domain.batch.allocation``), record the intent;
- :mod:`.boot` — boot new nodes' machines through the host agent, in provisioning streams;
- :mod:`.start_task` — run the pool's start task on booted nodes;
- :mod:`.removal` — nodes leaving the pool (their logs outlive them), reboot and reimage;
- :mod:`.endpoints` — the host's inbound NAT forwarding table;
- :mod:`.settle` — end the resize, or delete a drained deleting pool.

A crash at any point leaves rows that the next pass (after a restart) continues from: nodes still
``creating`` are booted (booting is idempotent), nodes marked for removal are removed, start tasks are run
again. The rules themselves (quotas, new node records, addresses, deallocation options) live in
``domain/batch``. The pass that boots a resize's last nodes also ends the resize. With fewer than one replica
per ``SHOAL_NODES_PER_REPLICA`` (300) target nodes the resize still reaches its target but reports an
``InsufficientReplicas`` warning among its resize errors.
"""

from shoal.reconcilers.allocation.allocator import PoolAllocator
from shoal.reconcilers.allocation.decision import nodes_per_replica

__all__ = ["PoolAllocator", "nodes_per_replica"]
