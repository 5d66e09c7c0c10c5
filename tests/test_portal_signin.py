"""The portal's sign-in rules without a browser: one-time links sign in once and expire; secrets are checked as
the token endpoint checks them."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from shoal.core.clock import ManualClock
from shoal.domain import identity, portal_signin
from shoal.store.db import Database, sqlite_url


@pytest.fixture
def state(tmp_path: Path) -> Iterator[tuple[Database, ManualClock, identity.DevIdentity]]:
    db = Database(sqlite_url(tmp_path / "shoal.db"))
    db.migrate()
    clock = ManualClock()
    with db.write() as s:
        dev = identity.bootstrap(s, clock)
    yield db, clock, dev
    db.dispose()


def test_a_link_signs_its_principal_in_once(state: tuple[Database, ManualClock, identity.DevIdentity]) -> None:
    db, clock, dev = state
    code = portal_signin.create_link(db, clock, dev.client_id)
    who = portal_signin.use_link(db, clock, code)
    assert who is not None and who.client_id == dev.client_id and who.display_name == "shoal-admin"
    assert portal_signin.use_link(db, clock, code) is None
    assert portal_signin.use_link(db, clock, "not-a-code") is None
    assert portal_signin.use_link(db, clock, "") is None


def test_a_link_expires_and_expired_links_are_swept(state: tuple[Database, ManualClock, identity.DevIdentity]
                                                    ) -> None:
    db, clock, dev = state
    old = portal_signin.create_link(db, clock, dev.client_id)
    clock.advance(portal_signin.LINK_LIFETIME + timedelta(seconds=1))
    fresh = portal_signin.create_link(db, clock, dev.client_id)  # sweeps the expired one
    assert portal_signin.use_link(db, clock, old) is None
    assert portal_signin.use_link(db, clock, fresh) is not None


def test_secrets_are_checked_as_the_token_endpoint_checks_them(
        state: tuple[Database, ManualClock, identity.DevIdentity]) -> None:
    db, _, dev = state
    assert dev.client_secret is not None
    assert portal_signin.check_secret(db, dev.tenant_id, dev.client_id, dev.client_secret).client_id == dev.client_id
    with pytest.raises(identity.TokenGrantError) as info:
        portal_signin.check_secret(db, dev.tenant_id, dev.client_id, "wrong")
    assert info.value.code == 7000215
    with pytest.raises(identity.TokenGrantError) as info:
        portal_signin.check_secret(db, dev.tenant_id, "00000000-0000-0000-0000-000000000000", "x")
    assert info.value.code == 700016
