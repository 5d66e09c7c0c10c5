"""Azure Batch rules: accounts, pools and compute nodes (and, later, jobs and tasks).

Pools are kept in one canonical form (``PoolSpec``-shaped JSON in the ``pools`` table); the management plane
(ARM, PascalCase enums, ``deploymentConfiguration``) and the data plane (lower-case enums, top-level
``virtualMachineConfiguration``) are explicit converters in ``shoal.schemas.batch``.
"""
