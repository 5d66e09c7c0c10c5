"""Tenants, subscriptions, service principals and the client-credentials grant."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from shoal.auth import secrets as secret_hashing
from shoal.core import errors
from shoal.core.clock import Clock
from shoal.store import models


@dataclass(frozen=True)
class DevIdentity:
    """What a newcomer needs to sign in: created on first start."""

    tenant_id: str
    subscription_id: str
    client_id: str
    client_secret: str | None  # known only right after creation (stored hashed)


class TokenGrantError(Exception):
    """An OAuth2 error answered by the token endpoint in Entra's format."""

    def __init__(self, status: int, error: str, code: int, description: str) -> None:
        super().__init__(description)
        self.status, self.error, self.code, self.description = status, error, code, description


def get_setting(session: Session, key: str) -> str | None:
    row = session.get(models.Setting, key)
    return row.value if row else None


def set_setting(session: Session, key: str, value: str) -> None:
    row = session.get(models.Setting, key)
    if row:
        row.value = value
    else:
        session.add(models.Setting(key=key, value=value))


def legacy_signing_key(session: Session) -> str | None:
    """The newest token signing key the database still holds (state from before keys moved to a file)."""
    row = session.scalars(select(models.SigningKey).order_by(models.SigningKey.created_at.desc())).first()
    return row.private_pem if row is not None else None


def forget_legacy_signing_keys(session: Session) -> None:
    """The key is in its file now: the database holds no key anyone who reads it could sign with."""
    for row in session.scalars(select(models.SigningKey)):
        session.delete(row)


def list_subscriptions(session: Session) -> list[models.Subscription]:
    return list(session.scalars(select(models.Subscription).order_by(models.Subscription.id)))


def require_subscription(session: Session, subscription_id: str) -> models.Subscription:
    sub = session.get(models.Subscription, subscription_id.lower())
    if sub is None:
        raise errors.SubscriptionNotFound(f"The subscription '{subscription_id}' could not be found.")
    return sub


def find_tenant(session: Session, tenant_id: str) -> models.Tenant | None:
    return session.get(models.Tenant, tenant_id)


def create_principal(session: Session, clock: Clock, tenant_id: str, display_name: str) -> tuple[
        models.Principal, str]:
    secret = secret_hashing.new_secret()
    row = models.Principal(
        client_id=str(uuid.uuid4()), object_id=str(uuid.uuid4()), tenant_id=tenant_id,
        display_name=display_name, secret_hashes=[secret_hashing.hash_secret(secret)], created_at=clock.now(),
    )
    session.add(row)
    return row, secret


def add_secret(session: Session, client_id: str) -> str:
    """Add a new client secret to a principal (old ones stay valid) and return it."""
    principal = session.get(models.Principal, client_id)
    if principal is None:
        raise KeyError(client_id)
    secret = secret_hashing.new_secret()
    principal.secret_hashes = [*principal.secret_hashes, secret_hashing.hash_secret(secret)]
    return secret


def list_principals(session: Session) -> list[models.Principal]:
    return list(session.scalars(select(models.Principal).order_by(models.Principal.created_at)))


def find_principal(session: Session, id_or_name: str) -> models.Principal | None:
    """By client id, object id or display name (case-insensitive)."""
    for p in list_principals(session):
        if id_or_name.lower() in (p.client_id.lower(), p.object_id.lower(), p.display_name.lower()):
            return p
    return None


def delete_principal(session: Session, principal: models.Principal) -> None:
    for ra in session.scalars(select(models.RoleAssignment).where(
            models.RoleAssignment.principal_id == principal.object_id)):
        session.delete(ra)
    session.delete(principal)


def bootstrap(session: Session, clock: Clock, tenant_name: str = "Shoal") -> DevIdentity:
    """Create the dev tenant, subscription and first principal (Owner of the subscription) once."""
    from shoal.auth.rbac import OWNER  # local: rbac is pure, this keeps import order obvious

    tenant_id = get_setting(session, "dev_tenant_id")
    if tenant_id is None:
        tenant_id = str(uuid.uuid4())
        sub_id = str(uuid.uuid4())
        now = clock.now()
        session.add(models.Tenant(id=tenant_id, display_name=f"{tenant_name} dev tenant",
                                  default_domain="shoal.local", created_at=now))
        session.flush()
        session.add(models.Subscription(id=sub_id, tenant_id=tenant_id, display_name="Shoal dev subscription",
                                        state="Enabled", created_at=now))
        principal, secret = create_principal(session, clock, tenant_id, "shoal-admin")
        session.add(models.RoleAssignment(
            name=str(uuid.uuid4()), scope=f"/subscriptions/{sub_id}", scope_key=f"/subscriptions/{sub_id}",
            role_definition_id=OWNER.id, principal_id=principal.object_id, principal_type="ServicePrincipal",
            description="Owner of the dev subscription, created on first start", created_at=now,
        ))
        set_setting(session, "dev_tenant_id", tenant_id)
        set_setting(session, "dev_subscription_id", sub_id)
        set_setting(session, "dev_client_id", principal.client_id)
        session.flush()
        return DevIdentity(tenant_id, sub_id, principal.client_id, secret)
    return DevIdentity(tenant_id, get_setting(session, "dev_subscription_id") or "",
                       get_setting(session, "dev_client_id") or "", None)


def authenticate_client(session: Session, tenant_id: str, client_id: str | None,
                        client_secret: str | None) -> models.Principal:
    """Check client credentials; raise :class:`TokenGrantError` with Entra's codes on failure."""
    if not client_id:
        raise TokenGrantError(400, "invalid_request", 900144,
                              "AADSTS900144: The request body must contain the following parameter: 'client_id'.")
    principal = session.get(models.Principal, client_id.strip().lower())
    if principal is None or principal.tenant_id != tenant_id:
        raise TokenGrantError(
            400, "unauthorized_client", 700016,
            f"AADSTS700016: Application with identifier '{client_id}' was not found in the directory "
            f"'{tenant_id}'. This can happen if the application has not been installed by the administrator "
            "of the tenant. Create it with `shoal principal create`.")
    if not client_secret:
        raise TokenGrantError(
            401, "invalid_client", 7000218,
            "AADSTS7000218: The request body must contain the following parameter: 'client_assertion' or "
            "'client_secret'.")
    if not any(secret_hashing.verify_secret(client_secret, h) for h in principal.secret_hashes):
        raise TokenGrantError(
            401, "invalid_client", 7000215,
            f"AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the "
            f"client secret value, not the client secret ID, for a secret added to app '{client_id}'.")
    return principal
