"""Runs template deployments: the handler of the ``Microsoft.Resources/deployments:deploy`` operation.

Each claim runs one pass of ``domain.templates.deployments.advance`` in one transaction: it starts the resources
whose dependencies are done (their own operations run in this same loop) and follows those it started. A pass
that finds work still running leaves the operation in progress, so the loop claims it again; after a restart the
next pass resumes from what the deployment row records.
"""

from __future__ import annotations

from shoal.core import ids
from shoal.domain.compute.kinds import ComputeContext
from shoal.domain.templates import deployments
from shoal.reconcilers.operations import OperationWork, Outcome
from shoal.store.db import Database


class DeploymentWork:
    def __init__(self, db: Database, ctx: ComputeContext) -> None:
        self.db, self.ctx = db, ctx

    def handlers(self) -> dict[str, DeploymentWork]:
        return {deployments.DEPLOY_KIND: self}

    def __call__(self, work: OperationWork) -> Outcome:
        with self.db.write() as s:
            if not deployments.advance(self.ctx, s, work.target_id):
                return Outcome(False)
            row = deployments.find(s, ids.parse(work.target_id))
            error = deployments.error_of(row) if row is not None else None
        return Outcome(True, error=error)
