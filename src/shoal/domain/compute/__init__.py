"""Microsoft.Compute rules: disks, snapshots, managed images, galleries and virtual machines.

Every resource type is a :class:`~shoal.domain.compute.kinds.ResourceKind`: it validates a PUT into a plan
(wire properties, Shoal-only internal facts, and the asynchronous work, if any, the reconciler must do) and
renders its row back to the wire. Layer stacks and lineage travel in ``internal``.
"""
