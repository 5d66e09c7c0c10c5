"""Shoal's URLs as the API shows them and as the nodes reach them (their gateway, with networks of their own)."""

from __future__ import annotations


class Urls:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.node_base_url = base_url

    def account(self, account_key: str) -> str:
        """The data-plane URL of the Batch account with this key."""
        return f"{self.base_url}/batch/{account_key.rsplit('/', 1)[-1]}"

    def for_nodes(self, url: str) -> str:
        """A URL of this Shoal as the nodes reach it."""
        return self.node_base_url + url[len(self.base_url):] if url.startswith(self.base_url) else url
