"""One-time sign-in links for the portal (what `shoal serve` prints, as Jupyter prints its token).

A link carries a random code; the store keeps only its SHA-256, the principal it signs in and when it expires.
Using a link deletes it, and only the request whose delete removed the row signs in, so a link signs in once
even when several servers share the database. Expired links are swept whenever a link is made.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from shoal.core.clock import Clock
from shoal.domain import identity
from shoal.store import models
from shoal.store.db import Database

LINK_LIFETIME = timedelta(minutes=15)
_PREFIX = "portal-link:"


@dataclass(frozen=True)
class SignedIn:
    """The principal a sign-in names."""

    object_id: str
    client_id: str
    display_name: str


def _key(code: str) -> str:
    return _PREFIX + hashlib.sha256(code.encode()).hexdigest()


def _sweep(s: Session, now: datetime) -> None:
    for row in s.scalars(select(models.Setting).where(models.Setting.key.like(_PREFIX + "%"))):
        try:
            expires = datetime.fromisoformat(json.loads(row.value)["expires"])
        except (ValueError, KeyError, TypeError):
            expires = now
        if expires <= now:
            s.delete(row)


def create_link(db: Database, clock: Clock, client_id: str, lifetime: timedelta = LINK_LIFETIME) -> str:
    """A new single-use code that signs ``client_id`` in until ``lifetime`` has passed."""
    now = clock.now()
    code = secrets.token_urlsafe(32)
    with db.write() as s:
        _sweep(s, now)
        s.add(models.Setting(key=_key(code), value=json.dumps({"clientId": client_id,
                                                               "expires": (now + lifetime).isoformat()})))
    return code


def use_link(db: Database, clock: Clock, code: str) -> SignedIn | None:
    """The principal a code signs in, once; None for an unknown, used or expired code."""
    if not code or len(code) > 200:
        return None
    key = _key(code)
    with db.write() as s:
        row = s.get(models.Setting, key)
        if row is None:
            return None
        value = json.loads(row.value)
        # The delete is the claim: of two servers using one code at once, only one deletes the row.
        result = s.execute(delete(models.Setting).where(models.Setting.key == key))
        if getattr(result, "rowcount", 0) != 1 or datetime.fromisoformat(value["expires"]) <= clock.now():
            return None
        principal = s.get(models.Principal, str(value["clientId"]))
        if principal is None:
            return None
        return SignedIn(principal.object_id, principal.client_id, principal.display_name)


def check_secret(db: Database, tenant_id: str, client_id: str, secret: str) -> SignedIn:
    """Client credentials checked as the token endpoint checks them (:class:`identity.TokenGrantError` with
    Entra's codes and messages when they are wrong)."""
    with db.read() as s:
        principal = identity.authenticate_client(s, tenant_id, client_id or None, secret or None)
        return SignedIn(principal.object_id, principal.client_id, principal.display_name)
