"""What the host agent's file calls (node and task files) can fail with: shared by the agent and its callers."""

from __future__ import annotations


class NodeFileError(Exception):
    """``kind``: "notfound", "notempty" or "invalid"; the message says what was wrong."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
