"""What the host agent's calls fail with, shared by the agent (``runtime/``) and its callers (``domain/``,
``reconcilers/``): plain exceptions with plain data, so a remote host agent can send them back over a wire."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class AgentError(Exception):
    """Work the agent could not do; the message says what went wrong and what to try."""


class HostUnavailable(AgentError):
    """The machine's host cannot be reached (lost, or not answering): work sent there is lost, not failed."""


class LayerError(Exception):
    """Bad input (path traversal, device file, corrupt archive, digest mismatch...); the message says what."""


@dataclass
class TransferError(Exception):
    """A download or upload that failed, as the task's ``failureInfo`` will show it."""

    code: str
    message: str
    category: str = "usererror"
    details: tuple[tuple[str, str], ...] = ()

    def failure_info(self) -> dict[str, Any]:
        return {"category": self.category, "code": self.code, "message": self.message,
                "details": [{"name": k, "value": v} for k, v in self.details]}


class MountFailed(AgentError):
    """A node's file system (its pool's ``mountConfiguration``) that could not be mounted: the node's boot
    fails and the node is ``unusable`` with ``MountConfigurationError``. ``path`` is inside the node. Its
    arguments are its fields, so it pickles (a remote host agent sends it back as it is)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(path, reason)
        self.path, self.reason = path, reason

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"
