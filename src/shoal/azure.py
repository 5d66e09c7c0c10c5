"""Build the official Azure clients, configured for a local Shoal, in three lines.

    from shoal.azure import Shoal
    shoal = Shoal.from_state_dir()                 # or Shoal.from_env_json(...) / Shoal(...)
    rm = shoal.resource_client()                   # azure-mgmt-resource, ready to use

Every client gets the credential (``ClientSecretCredential`` with Shoal as authority), the endpoint, the
CA bundle and ARM's scope. The Azure SDKs are imported lazily: install the ones you use.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ARM_SCOPE = "https://management.azure.com/.default"


@dataclass(frozen=True)
class Shoal:
    authority: str
    tenant_id: str
    subscription_id: str
    client_id: str
    client_secret: str
    ca_bundle: str

    @classmethod
    def from_env_json(cls, data: dict[str, Any]) -> Shoal:
        return cls(data["authorityHost"], data["tenantId"], data["subscriptionId"], data["clientId"],
                   data["clientSecret"], data["caBundle"])

    @classmethod
    def from_state_dir(cls, state_dir: str | os.PathLike[str] | None = None) -> Shoal:
        """Read the connection details of a local Shoal (what ``shoal env --json`` prints)."""
        args = [sys.executable, "-m", "shoal", "env", "--json"]
        if state_dir is not None:
            args += ["--state-dir", str(Path(state_dir))]
        out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
        return cls.from_env_json(json.loads(out))

    @property
    def resource_manager(self) -> str:
        return self.authority

    def credential(self, client_id: str | None = None, client_secret: str | None = None) -> Any:
        from azure.identity import ClientSecretCredential

        return ClientSecretCredential(self.tenant_id, client_id or self.client_id, client_secret or self.client_secret,
                                      authority=self.authority, disable_instance_discovery=True,
                                      connection_verify=self.ca_bundle)

    def _mgmt(self, cls: Any, credential: Any = None, **kwargs: Any) -> Any:
        return cls(credential or self.credential(), self.subscription_id, base_url=self.resource_manager,
                   credential_scopes=[ARM_SCOPE], connection_verify=self.ca_bundle, **kwargs)

    def resource_client(self, credential: Any = None, **kwargs: Any) -> Any:
        try:
            from azure.mgmt.resource.resources import ResourceManagementClient
        except ImportError:  # azure-mgmt-resource < 24 keeps it at the package root
            from azure.mgmt.resource import ResourceManagementClient  # type: ignore[attr-defined,no-redef]

        return self._mgmt(ResourceManagementClient, credential, **kwargs)

    def subscription_client(self, credential: Any = None, **kwargs: Any) -> Any:
        from azure.mgmt.resource.subscriptions import SubscriptionClient

        return SubscriptionClient(credential or self.credential(), base_url=self.resource_manager,
                                  credential_scopes=[ARM_SCOPE], connection_verify=self.ca_bundle, **kwargs)

    def compute_client(self, credential: Any = None, **kwargs: Any) -> Any:
        from azure.mgmt.compute import ComputeManagementClient

        return self._mgmt(ComputeManagementClient, credential, **kwargs)

    def network_client(self, credential: Any = None, **kwargs: Any) -> Any:
        from azure.mgmt.network import NetworkManagementClient

        return self._mgmt(NetworkManagementClient, credential, **kwargs)

    def batch_mgmt_client(self, credential: Any = None, **kwargs: Any) -> Any:
        from azure.mgmt.batch import BatchManagementClient

        return self._mgmt(BatchManagementClient, credential, **kwargs)

    def authorization_client(self, credential: Any = None, **kwargs: Any) -> Any:
        from azure.mgmt.authorization import AuthorizationManagementClient

        return self._mgmt(AuthorizationManagementClient, credential, **kwargs)

    def batch_client(self, account_endpoint: str, credential: Any = None, **kwargs: Any) -> Any:
        """azure-batch ``BatchClient`` for an account (``accountEndpoint`` as ARM reports it)."""
        from azure.batch import BatchClient

        endpoint = account_endpoint if "://" in account_endpoint else f"https://{account_endpoint}"
        return BatchClient(endpoint, credential or self.credential(), connection_verify=self.ca_bundle, **kwargs)
