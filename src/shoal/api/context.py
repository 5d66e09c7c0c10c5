"""What routes are given: a narrow view of the process's wiring.

The CLI builds one wiring object for ``shoal serve`` (``services.py``: settings, database, clock, token service,
host agent and the control loops); the app factory receives it, and routes see it only as the protocols below.
So the API depends on the store's database (units of work), the token service and the domain's protocols (the
host agent, blob containers), never on the runtime or the loops that the wiring builds (an import-linter
contract, with indirect imports checked, keeps it so).
"""

from __future__ import annotations

from typing import Protocol

from shoal.auth.tokens import TokenService
from shoal.core.catalog import Catalog
from shoal.core.clock import Clock
from shoal.domain.compute.kinds import ComputeContext
from shoal.domain.containers import BlobContainers
from shoal.domain.host import HostAgent
from shoal.store.db import Database


class RouteSettings(Protocol):
    """The settings routes read."""

    @property
    def base_url(self) -> str: ...
    @property
    def regions(self) -> tuple[str, ...]: ...
    @property
    def page_size(self) -> int: ...
    @property
    def subscription_core_quota(self) -> int: ...
    @property
    def cluster_token(self) -> str | None: ...
    @property
    def node_address_space(self) -> str: ...
    @property
    def shared_host_address(self) -> str | None: ...
    def region_display_name(self, region: str) -> str: ...


class Context(Protocol):
    """Everything a route may use."""

    @property
    def settings(self) -> RouteSettings: ...
    @property
    def db(self) -> Database:
        """Units of work: ``with db.read() as s`` / ``db.write()``, handed to domain functions (use cases that
        own their unit of work take the database itself)."""
    @property
    def clock(self) -> Clock: ...
    @property
    def tokens(self) -> TokenService: ...
    @property
    def tenant_id(self) -> str: ...
    @property
    def subscription_id(self) -> str: ...
    @property
    def catalog(self) -> Catalog: ...
    @property
    def host(self) -> HostAgent | None:
        """The host agent (plain-data calls); None in a process started without one."""
    @property
    def blobs(self) -> BlobContainers: ...

    def compute_context(self) -> ComputeContext: ...
    def container_key(self) -> bytes: ...
    def nudge(self, *names: str) -> None:
        """Wake a control loop (all of them without a name): a request records intent, the loops act on it."""
    def kill_task(self, task_key: str) -> None: ...
    def host_fenced(self, name: str) -> bool:
        """A node host says it fenced itself: whether it is a host of this server's cluster (now lost)."""


class App(Context, Protocol):
    """What the app factory also needs: starting and stopping the control loops with the server."""

    def start(self) -> None: ...
    def stop(self) -> None: ...
