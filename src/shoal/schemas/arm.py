"""Wire models of the ARM core's request bodies: resource groups (with their tags) and role assignments.

Responses are rendered by explicit converters. These bodies are ARM's own, so a missing required property is
``InvalidRequestContent`` (ARM's deserializer), not a resource provider's ``InvalidParameter``.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from shoal.schemas.arm_bodies import Tags, Wire, one_of


class WireModel(BaseModel):
    """Lenient base of the domain's envelope (``domain/compute/kinds.py``), built from checked bodies."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class CoreWire(Wire):
    model_config = ConfigDict(strict=True, extra="allow", populate_by_name=True)
    missing_code: ClassVar[str] = "InvalidRequestContent"


class ResourceGroupPut(CoreWire):
    location: str = Field(min_length=1, max_length=64)
    tags: Tags | None = None
    managed_by: str | None = Field(default=None, alias="managedBy")
    properties: dict[str, Any] | None = None


class ResourceGroupPatch(CoreWire):
    tags: Tags | None = None
    managed_by: str | None = Field(default=None, alias="managedBy")
    properties: dict[str, Any] | None = None


PrincipalType = Annotated[str, AfterValidator(one_of("User", "Group", "ServicePrincipal", "ForeignGroup",
                                                     "Device"))]


class RoleAssignmentProperties(CoreWire):
    role_definition_id: str = Field(alias="roleDefinitionId", min_length=1)
    principal_id: str = Field(alias="principalId", min_length=1)
    principal_type: PrincipalType | None = Field(default=None, alias="principalType")
    description: str | None = None
    condition: str | None = None
    condition_version: str | None = Field(default=None, alias="conditionVersion")
    delegated_managed_identity_resource_id: str | None = Field(default=None,
                                                               alias="delegatedManagedIdentityResourceId")


class RoleAssignmentPut(CoreWire):
    properties: RoleAssignmentProperties
