"""What the control plane asks of a host: the host agent's calls, as plain data in and out.

``runtime/`` implements these (``runtime/agent.py``); a host agent on another machine will serve the same
calls. Domain use cases and routes depend on these protocols, never on runtime code.
"""

from __future__ import annotations

from typing import Any, Protocol


class NodeFiles(Protocol):
    """A node's files below its temporary drive (paths relative to /mnt), opened without following links."""

    def list_node_files(self, machine_id: str, root: str, *, recursive: bool) -> list[dict[str, Any]]: ...
    def stat_node_file(self, machine_id: str, root: str, path: str) -> dict[str, Any]: ...
    def read_node_file(self, machine_id: str, root: str, path: str, start: int = 0,
                       end: int | None = None) -> tuple[dict[str, Any], bytes]: ...
    def delete_node_file(self, machine_id: str, root: str, path: str, *, recursive: bool) -> None: ...
