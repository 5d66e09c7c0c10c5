"""Access tokens checked in-process (``auth/tokens.py``): a token whose signature was checked once is remembered,
but every request still checks its times, audience and tenant, and a token signed with a key the service no
longer holds is refused again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shoal.auth.tokens import SigningKeyPair, TokenService
from shoal.core import errors
from shoal.core.clock import Clock

BATCH = ("https://batch.core.windows.net/",)


class ManualClock(Clock):
    def __init__(self) -> None:
        self.at = datetime(2026, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        return self.at


def test_a_remembered_token_is_still_checked_for_time_audience_tenant_and_key() -> None:
    clock = ManualClock()
    service = TokenService("https://login.shoal.test", [SigningKeyPair.generate()], clock)
    token, _ = service.issue(tenant_id="t1", object_id="o1", app_id="a1", audience=BATCH[0])
    first = service.verify(f"Bearer {token}", BATCH, "t1")
    assert service.verify(f"Bearer {token}", BATCH, "t1") == first  # the second time from what was remembered
    with pytest.raises(errors.InvalidAuthenticationTokenAudience):
        service.verify(f"Bearer {token}", ("https://management.azure.com/",), "t1")
    with pytest.raises(errors.InvalidAuthenticationTokenTenant):
        service.verify(f"Bearer {token}", BATCH, "t2")
    header, payload, signature = token.split(".")
    with pytest.raises(errors.InvalidAuthenticationToken):  # another signature is another token: checked
        service.verify(f"Bearer {header}.{payload}.{signature[:-6]}AAAAAA", BATCH, "t1")
    clock.at += timedelta(hours=1, seconds=1)
    with pytest.raises(errors.ExpiredAuthenticationToken):
        service.verify(f"Bearer {token}", BATCH, "t1")
    clock.at -= timedelta(hours=1)
    assert service.verify(f"Bearer {token}", BATCH, "t1") == first
    service.keys = [SigningKeyPair.generate()]  # the key that signed it is gone
    with pytest.raises(errors.InvalidAuthenticationToken):
        service.verify(f"Bearer {token}", BATCH, "t1")
