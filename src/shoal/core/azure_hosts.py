"""Azure's own public hostnames, which Shoal answers for behind ``shoal proxy`` (no I/O).

A client that sends its requests through ``shoal proxy`` (``HTTPS_PROXY``) keeps Azure's default endpoints;
the proxy terminates TLS for these names and hands the requests to Shoal with their ``Host`` header intact,
and the API answers under the same name (``api/azure_hosts.py``):

- ``management.azure.com`` and ``management.core.windows.net``: ARM;
- ``login.microsoftonline.com``: identity (OpenID discovery, the v1 and v2 token endpoints);
- ``{account}.{region}.batch.azure.com``: the Batch data plane of one account (path-style ``/batch/{account}``
  on Shoal's own address).
"""

from __future__ import annotations

import re
from typing import Literal

ARM_HOSTS = ("management.azure.com", "management.core.windows.net")
LOGIN_HOST = "login.microsoftonline.com"
ARM_HOST = ARM_HOSTS[0]
BATCH_SUFFIX = ".batch.azure.com"
_BATCH_HOST = re.compile(r"^([a-z0-9]{3,24})\.([a-z0-9-]{1,63})\.batch\.azure\.com$")

Role = Literal["arm", "login", "batch"]


def normalize(host: str) -> str:
    """``Management.Azure.com:443`` or ``management.azure.com.`` -> ``management.azure.com`` (other ports stay)."""
    host = host.strip().lower()
    if host.endswith(":443"):
        host = host[:-4]
    return host.rstrip(".")


def role(host: str) -> Role | None:
    """What an Azure hostname is (``host`` as :func:`normalize` leaves it; a port other than 443: None)."""
    if host in ARM_HOSTS:
        return "arm"
    if host == LOGIN_HOST:
        return "login"
    if _BATCH_HOST.match(host):
        return "batch"
    return None


def batch_account(host: str) -> str | None:
    """The account a Batch data-plane hostname names (``acct.eastus.batch.azure.com`` -> ``acct``)."""
    match = _BATCH_HOST.match(host)
    return match.group(1) if match else None


def batch_host(account: str, region: str) -> str:
    """The hostname of an account's Batch data plane, as Azure spells it (``accountEndpoint``)."""
    return f"{account}.{region.replace(' ', '').lower()}{BATCH_SUFFIX}"
