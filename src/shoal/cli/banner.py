"""What a user needs to connect, printed by ``shoal serve`` and ``shoal env``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.panel import Panel
from rich.text import Text


@dataclass(frozen=True)
class ConnectionInfo:
    base_url: str
    tenant_id: str
    subscription_id: str
    client_id: str
    client_secret: str | None
    ca_bundle: Path
    state_dir: Path
    database: str
    isolation: str = "n/a"  # the machine runtime: "namespaces" or "process" (for scripts)
    isolation_level: str = ""  # what protects machines, in words (shown in the banner)
    store_dir: Path | None = None  # layers, disks and machines (where bases are built)

    def as_json(self) -> dict[str, object]:
        return {
            "tenantId": self.tenant_id, "subscriptionId": self.subscription_id, "clientId": self.client_id,
            "clientSecret": self.client_secret, "authorityHost": self.base_url,
            "resourceManagerUrl": self.base_url + "/", "batchEndpointTemplate": self.base_url + "/batch/{account}",
            "caBundle": str(self.ca_bundle), "stateDir": str(self.state_dir), "database": self.database,
            "cloudName": "Shoal", "batchResourceId": "https://batch.core.windows.net/", "isolation": self.isolation,
            "isolationLevel": self.isolation_level or self.isolation,
            "storeDir": str(self.store_dir) if self.store_dir else None,
        }

    def save(self, path: Path) -> None:
        """Remember where the server listens so ``shoal env`` can print it later (no secret stored here)."""
        data = self.as_json()
        data.pop("clientSecret")
        path.write_text(json.dumps(data, indent=2))

    def shell_lines(self) -> list[str]:
        return [
            f"export REQUESTS_CA_BUNDLE={self.ca_bundle}",
            "export AZURE_CORE_INSTANCE_DISCOVERY=false",
            f"az cloud register -n Shoal --endpoint-resource-manager {self.base_url}/",
            "az cloud set -n Shoal",
            f"az login --service-principal -u {self.client_id} -p '{self.client_secret}' --tenant {self.tenant_id}",
        ]

    def python_snippet(self) -> list[str]:
        """Runs as pasted (``pip install azure-identity azure-mgmt-resource``): it trusts Shoal's CA itself."""
        return [
            "from azure.identity import ClientSecretCredential",
            "from azure.mgmt.resource.resources import ResourceManagementClient",
            f'ca = "{self.ca_bundle}"',
            f'cred = ClientSecretCredential("{self.tenant_id}", "{self.client_id}", "{self.client_secret}",',
            f'                              authority="{self.base_url}", disable_instance_discovery=True,',
            "                              connection_verify=ca)",
            f'rm = ResourceManagementClient(cred, "{self.subscription_id}", base_url="{self.base_url}",',
            '                              credential_scopes=["https://management.azure.com/.default"],',
            "                              connection_verify=ca)",
            "print([g.name for g in rm.resource_groups.list()])",
        ]

    def render(self, console: Console, title: str) -> None:
        """A panel on a terminal; plain, unwrapped lines otherwise (a log file or a pipe keeps every command whole)."""
        t = Text()
        rows = [
            ("Endpoint (ARM, identity)", self.base_url),
            ("Batch data plane", self.base_url + "/batch/{account}"),
            ("Tenant id", self.tenant_id),
            ("Subscription id", self.subscription_id),
            ("Client id", self.client_id),
            ("Client secret", self.client_secret or "(unknown: see `shoal principal create`)"),
            ("CA bundle", str(self.ca_bundle)),
            ("State", f"{self.state_dir} ({self.database})"),
            ("Machine isolation", self.isolation_level or self.isolation),
        ]
        width = max(len(k) for k, _ in rows)
        for k, v in rows:
            t.append(f"{k.ljust(width)}  ", style="bold")
            t.append(f"{v}\n")
        # On a terminal the commands sit indented in a panel; elsewhere they start at column 0, so that they run as
        # pasted from a log.
        indent = "  " if console.is_terminal else ""
        t.append("\nShell (az):\n", style="bold cyan")
        for line in self.shell_lines():
            t.append(f"{indent}{line}\n")
        t.append("\nPython:\n", style="bold cyan")
        for line in self.python_snippet():
            t.append(f"{indent}{line}\n")
        if console.is_terminal:
            console.print(Panel(t, title=title, expand=False))
        else:
            console.file.write(f"{title}\n{t.plain}\n")
            console.file.flush()
