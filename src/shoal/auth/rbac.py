"""Built-in role definitions and Azure's action-matching rules (pure, no I/O).

An action such as ``Microsoft.Compute/images/read`` is allowed by a role when it matches one of the
role's ``actions`` and none of its ``notActions``; patterns use ``*`` as a wildcard and compare
case-insensitively, exactly as Azure RBAC does. A role assignment applies at its scope and every scope
below it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache


@dataclass(frozen=True)
class RoleDefinition:
    id: str  # the role definition's GUID
    name: str
    description: str
    actions: tuple[str, ...]
    not_actions: tuple[str, ...] = ()
    data_actions: tuple[str, ...] = field(default_factory=tuple)

    def allows(self, action: str) -> bool:
        return any(_matches(p, action) for p in self.actions) and not any(
            _matches(p, action) for p in self.not_actions
        )


OWNER = RoleDefinition(
    "8e3af657-a8ff-443c-a75c-2fe8c4bcb635", "Owner",
    "Grants full access to manage all resources, including the ability to assign roles in Azure RBAC.",
    ("*",),
)
CONTRIBUTOR = RoleDefinition(
    "b24988ac-6180-42a0-ab88-20f7382dd24c", "Contributor",
    "Grants full access to manage all resources, but does not allow you to assign roles in Azure RBAC, "
    "manage assignments in Azure Blueprints, or share image galleries.",
    ("*",),
    (
        "Microsoft.Authorization/*/Delete", "Microsoft.Authorization/*/Write",
        "Microsoft.Authorization/elevateAccess/Action", "Microsoft.Blueprint/blueprintAssignments/write",
        "Microsoft.Blueprint/blueprintAssignments/delete", "Microsoft.Compute/galleries/share/action",
        "Microsoft.Purview/consents/write", "Microsoft.Purview/consents/delete",
        "Microsoft.Resources/deploymentStacks/manageDenySetting/action",
        "Microsoft.Subscription/cancel/action", "Microsoft.Subscription/enable/action",
    ),
)
READER = RoleDefinition(
    "acdd72a7-3385-48ef-bd42-f606fba81ae7", "Reader",
    "View all resources, but does not allow you to make any changes.",
    ("*/read",),
)

BUILT_IN_ROLES: tuple[RoleDefinition, ...] = (OWNER, CONTRIBUTOR, READER)


def role_by_id(role_id: str) -> RoleDefinition | None:
    return next((r for r in BUILT_IN_ROLES if r.id == role_id.lower()), None)


def role_by_name(name: str) -> RoleDefinition | None:
    return next((r for r in BUILT_IN_ROLES if r.name.lower() == name.lower()), None)


@lru_cache(maxsize=512)
def _pattern(pattern: str) -> re.Pattern[str]:
    return re.compile("^" + ".*".join(re.escape(p) for p in pattern.split("*")) + "$", re.IGNORECASE)


def _matches(pattern: str, action: str) -> bool:
    return bool(_pattern(pattern).match(action))


def scope_covers(assignment_scope: str, target_scope: str) -> bool:
    """True when an assignment at ``assignment_scope`` applies to ``target_scope`` (case-insensitive)."""
    a = assignment_scope.rstrip("/").lower()
    t = target_scope.rstrip("/").lower()
    return a == "" or t == a or t.startswith(a + "/")


def scope_prefixes(target_scope: str) -> list[str]:
    """Every scope key that covers ``target_scope``: itself and each ancestor, plus the root ``/``."""
    parts = target_scope.strip("/").split("/")
    out = ["/"]
    for i in range(1, len(parts) + 1):
        out.append("/" + "/".join(parts[:i]).lower())
    return out
