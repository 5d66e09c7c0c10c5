"""Role assignments and access checks at ARM scopes."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from shoal.auth import rbac
from shoal.core import errors, ids
from shoal.core.clock import Clock
from shoal.domain import resource_groups
from shoal.store import models

ROLE_DEFINITION_PREFIX = "/providers/Microsoft.Authorization/roleDefinitions/"


@dataclass(frozen=True)
class Caller:
    """The authenticated principal of a request."""

    object_id: str
    app_id: str
    tenant_id: str


def parse_scope(raw: str) -> ids.ResourceId:
    """A role assignment's scope: an ARM id whose resource group, if any, has a valid name."""
    scope = ids.parse("/" + raw.strip("/"), what="scope")
    if scope.resource_group:
        resource_groups.check_name(scope.resource_group)
    return scope


def role_definition_resource_id(subscription_id: str | None, role: rbac.RoleDefinition) -> str:
    prefix = f"/subscriptions/{subscription_id}" if subscription_id else ""
    return f"{prefix}{ROLE_DEFINITION_PREFIX}{role.id}"


def parse_role_definition_id(value: str) -> rbac.RoleDefinition:
    """Accept ``.../roleDefinitions/{guid}`` (any scope prefix) or a bare GUID."""
    guid = value.rstrip("/").rsplit("/", 1)[-1]
    if "/" in value and "/roledefinitions/" not in value.lower():
        raise errors.InvalidRoleDefinitionId(
            f"The role definition ID '{value}' is not valid. Use "
            f"/subscriptions/{{sub}}{ROLE_DEFINITION_PREFIX}{{roleDefinitionGuid}}.")
    role = rbac.role_by_id(guid)
    if role is None:
        raise errors.RoleDefinitionDoesNotExist(
            f"The specified role definition with ID '{guid}' does not exist. Built-in roles: "
            + ", ".join(f"{r.name} ({r.id})" for r in rbac.BUILT_IN_ROLES) + ".")
    return role


# Built once: each authorized request asks it (building a statement costs more than running it here).
_COVERING = select(models.RoleAssignment).where(models.RoleAssignment.principal_id == bindparam("principal"),
                                                models.RoleAssignment.scope_key.in_(bindparam("keys", expanding=True)))


def assignments_covering(session: Session, principal_id: str, scope: str) -> list[models.RoleAssignment]:
    return list(session.scalars(_COVERING, {"principal": principal_id, "keys": list(rbac.scope_prefixes(scope))}))


def check_access(session: Session, caller: Caller, action: str, scope: str) -> None:
    """Raise 403 ``AuthorizationFailed`` unless one of the caller's roles at or above ``scope`` allows it."""
    for ra in assignments_covering(session, caller.object_id, scope):
        role = rbac.role_by_id(ra.role_definition_id)
        if role and role.allows(action):
            return
    raise errors.AuthorizationFailed(
        f"The client '{caller.app_id}' with object id '{caller.object_id}' does not have authorization to "
        f"perform action '{action}' over scope '{scope}' or the scope is invalid. If access was recently "
        "granted, please refresh your credentials.")


def allowed(session: Session, caller: Caller, action: str, scope: str) -> bool:
    try:
        check_access(session, caller, action, scope)
    except errors.AuthorizationFailed:
        return False
    return True


def has_any_access(session: Session, caller: Caller, scope: str) -> bool:
    return bool(assignments_covering(session, caller.object_id, scope))


def get_assignment(session: Session, scope: str, name: str) -> models.RoleAssignment:
    ra = session.get(models.RoleAssignment, name.lower())
    if ra is None or ra.scope_key != scope.rstrip("/").lower():
        raise errors.RoleAssignmentNotFound(f"The role assignment '{name}' is not found.")
    return ra


def delete_assignment(session: Session, scope: str, name: str) -> models.RoleAssignment | None:
    """Delete the role assignment ``name`` at ``scope``; the deleted row, or None when there was none."""
    try:
        row = get_assignment(session, scope, name)
    except errors.RoleAssignmentNotFound:
        return None
    session.delete(row)
    return row


def create_assignment(session: Session, clock: Clock, caller: Caller, scope: str, name: str,
                      role_definition_id: str, principal_id: str, principal_type: str | None,
                      description: str | None) -> tuple[models.RoleAssignment, bool]:
    """Create a role assignment; returns (row, created). Same name and content again is idempotent."""
    try:
        name = str(uuid.UUID(name))
    except ValueError as exc:
        raise errors.InvalidRoleAssignmentId(
            f"The role assignment ID '{name}' is not valid. The role assignment ID must be a GUID.") from exc
    role = parse_role_definition_id(role_definition_id)
    try:
        principal_id = str(uuid.UUID(principal_id))
    except (ValueError, TypeError) as exc:
        raise errors.InvalidParameter(
            f"The principal ID '{principal_id}' is not valid. It must be the object id (a GUID) of a principal."
        ) from exc
    principal = session.scalars(select(models.Principal).where(
        models.Principal.object_id == principal_id)).first()
    if principal is None:
        raise errors.PrincipalNotFound(
            f"Principal {principal_id.replace('-', '')} does not exist in the directory {caller.tenant_id}. "
            "Check that you have the correct principal ID (`shoal principal list` shows object ids).")
    scope_key = scope.rstrip("/").lower()
    existing = session.get(models.RoleAssignment, name)
    if existing is not None:
        if (existing.scope_key, existing.role_definition_id, existing.principal_id) == (
                scope_key, role.id, principal_id):
            return existing, False
        raise errors.RoleAssignmentExists(
            "The role assignment already exists with a different scope, role or principal. "
            "Delete it first or choose another name.")
    duplicate = session.scalars(select(models.RoleAssignment).where(
        models.RoleAssignment.scope_key == scope_key, models.RoleAssignment.role_definition_id == role.id,
        models.RoleAssignment.principal_id == principal_id)).first()
    if duplicate is not None:
        raise errors.RoleAssignmentExists(
            f"The role assignment already exists. The ID of the existing role assignment is {duplicate.name}.")
    row = models.RoleAssignment(
        name=name, scope=scope.rstrip("/") or "/", scope_key=scope_key or "/", role_definition_id=role.id,
        principal_id=principal_id, principal_type=principal_type or "ServicePrincipal", description=description,
        created_by=caller.object_id, created_at=clock.now())
    session.add(row)
    return row, True


def list_assignments(session: Session, scope: str, *, at_scope_only: bool, principal_id: str | None,
                     ) -> list[models.RoleAssignment]:
    """Assignments that apply at ``scope`` (its ancestors) plus, unless ``atScope()``, those below it."""
    rows = session.scalars(select(models.RoleAssignment).order_by(models.RoleAssignment.created_at)).all()
    key = scope.rstrip("/").lower() or "/"
    out = []
    for ra in rows:
        covers = rbac.scope_covers(ra.scope_key if ra.scope_key != "/" else "", key)
        below = key == "/" or ra.scope_key.startswith(key + "/")
        if (covers or (below and not at_scope_only)) and (principal_id is None or ra.principal_id == principal_id):
            out.append(ra)
    return out


def delete_assignments_under(session: Session, scope: str) -> None:
    """Role assignments vanish with the scope they were made at (resource group or resource deletion)."""
    key = scope.rstrip("/").lower()
    for ra in session.scalars(select(models.RoleAssignment).where(models.RoleAssignment.scope_key.like(key + "%"))):
        if ra.scope_key == key or ra.scope_key.startswith(key + "/"):
            session.delete(ra)
