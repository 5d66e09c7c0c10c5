"""Wire models of the ARM core (request bodies). Responses are rendered by explicit converters."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class WireModel(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class ResourceGroupPut(WireModel):
    location: str = Field(min_length=1, max_length=64)
    tags: dict[str, str] | None = None
    managed_by: str | None = Field(default=None, alias="managedBy")
    properties: dict[str, Any] | None = None


class ResourceGroupPatch(WireModel):
    tags: dict[str, str] | None = None
    managed_by: str | None = Field(default=None, alias="managedBy")


class RoleAssignmentProperties(WireModel):
    role_definition_id: str = Field(alias="roleDefinitionId", min_length=1)
    principal_id: str = Field(alias="principalId", min_length=1)
    principal_type: str | None = Field(default=None, alias="principalType")
    description: str | None = None
    condition: str | None = None
    condition_version: str | None = Field(default=None, alias="conditionVersion")


class RoleAssignmentPut(WireModel):
    properties: RoleAssignmentProperties
