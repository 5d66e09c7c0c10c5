"""One exception type per Azure error code.

Every error a request can end with is an :class:`AzureError` subclass carrying the HTTP status, the
Azure error code and a message that says what to do next. The API layer renders the same error in the
ARM envelope (``{"error": {...}}``) or the Batch data-plane envelope, depending on the plane that
served the request; the domain never knows which.

The classes are grouped by plane (ARM and Entra first, then the Batch data plane), then by status. A code has
one class; the only exception is a plane that answers the same code with another status
(:class:`BatchAuthenticationFailed`), which subclasses the code's class. Raise the class, never
``AzureError(code=...)``: that form is left for codes that are data (an operation's stored error).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ErrorDetail:
    code: str
    message: str
    target: str | None = None


class AzureError(Exception):
    """Base of all errors rendered to clients. Subclasses fix ``status`` and ``code``."""

    status: int = 500
    code: str = "InternalServerError"

    def __init__(
        self,
        message: str,
        *,
        target: str | None = None,
        details: list[ErrorDetail] | None = None,
        values: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        code: str | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.target = target
        self.details = details or []
        # Data-plane errors carry name/value pairs (``values``); ARM renders them as details.
        self.values = values or {}
        self.headers = headers or {}
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status


# === ARM, Entra and the codes both planes share ================================================

# --- 400 ---------------------------------------------------------------------------------------
class BadRequest(AzureError):
    status, code = 400, "BadRequest"


class InvalidRequestContent(AzureError):
    status, code = 400, "InvalidRequestContent"


class MissingApiVersionParameter(AzureError):
    status, code = 400, "MissingApiVersionParameter"


class InvalidApiVersionParameter(AzureError):
    status, code = 400, "InvalidApiVersionParameter"


class InvalidResourceName(AzureError):
    status, code = 400, "InvalidResourceName"


class InvalidResourceGroupLocation(AzureError):
    status, code = 409, "InvalidResourceGroupLocation"


class LocationNotAvailableForResourceGroup(AzureError):
    status, code = 400, "LocationNotAvailableForResourceGroup"


class LocationRequired(AzureError):
    status, code = 400, "LocationRequired"


class InvalidParameter(AzureError):
    status, code = 400, "InvalidParameter"


class InvalidTemplate(AzureError):
    status, code = 400, "InvalidTemplate"


class InvalidDeploymentMode(AzureError):
    status, code = 400, "InvalidDeploymentMode"


class DeploymentFailed(AzureError):
    status, code = 400, "DeploymentFailed"


class InvalidResourceType(AzureError):
    status, code = 400, "InvalidResourceType"


class InvalidResourceId(AzureError):
    status, code = 400, "InvalidResourceId"


class InvalidRoleAssignmentId(AzureError):
    status, code = 400, "InvalidRoleAssignmentId"


class InvalidRoleDefinitionId(AzureError):
    status, code = 400, "InvalidRoleDefinitionId"


class PrincipalNotFound(AzureError):
    status, code = 400, "PrincipalNotFound"


class InvalidQueryParameter(AzureError):
    status, code = 400, "InvalidQueryParameter"


class InvalidResourceGroup(AzureError):
    status, code = 400, "InvalidResourceGroup"


class LocationNotAvailableForResourceType(AzureError):
    status, code = 400, "LocationNotAvailableForResourceType"


class AccountNameInvalid(AzureError):
    status, code = 400, "AccountNameInvalid"


class OperationFailed(AzureError):
    """A long-running ARM operation that failed; 400 unless the failure was the server's own (then 500)."""

    status, code = 400, "OperationFailed"


# --- 401 / 403 ---------------------------------------------------------------------------------
class AuthenticationFailed(AzureError):
    status, code = 401, "AuthenticationFailed"


class InvalidAuthenticationToken(AzureError):
    status, code = 401, "InvalidAuthenticationToken"


class ExpiredAuthenticationToken(AzureError):
    status, code = 401, "ExpiredAuthenticationToken"


class InvalidAuthenticationTokenAudience(AzureError):
    status, code = 401, "InvalidAuthenticationTokenAudience"


class InvalidAuthenticationTokenTenant(AzureError):
    status, code = 401, "InvalidAuthenticationTokenTenant"


class AuthorizationFailed(AzureError):
    status, code = 403, "AuthorizationFailed"


# --- 404 ---------------------------------------------------------------------------------------
class NotFound(AzureError):
    status, code = 404, "NotFound"


class ResourceNotFound(AzureError):
    status, code = 404, "ResourceNotFound"


class ResourceGroupNotFound(AzureError):
    status, code = 404, "ResourceGroupNotFound"


class SubscriptionNotFound(AzureError):
    status, code = 404, "SubscriptionNotFound"


class RoleAssignmentNotFound(AzureError):
    status, code = 404, "RoleAssignmentNotFound"


class RoleDefinitionDoesNotExist(AzureError):
    status, code = 404, "RoleDefinitionDoesNotExist"


class OperationNotFound(AzureError):
    status, code = 404, "OperationNotFound"


class DeploymentNotFound(AzureError):
    status, code = 404, "DeploymentNotFound"


class InvalidResourceNamespace(AzureError):
    status, code = 404, "InvalidResourceNamespace"


class NoRegisteredProviderFound(AzureError):
    status, code = 404, "NoRegisteredProviderFound"


class PlatformImageNotFound(AzureError):
    status, code = 404, "PlatformImageNotFound"


class BlobNotFound(AzureError):
    status, code = 404, "BlobNotFound"


# --- 416 ---------------------------------------------------------------------------------------
class InvalidRange(AzureError):
    """A byte range that starts at or beyond the end of a blob (Azure Storage's answer)."""

    status, code = 416, "InvalidRange"


# --- 405 / 409 / 412 / 413 ---------------------------------------------------------------------
class MethodNotAllowed(AzureError):
    status, code = 405, "MethodNotAllowed"


class Conflict(AzureError):
    status, code = 409, "Conflict"


class DeploymentActive(AzureError):
    status, code = 409, "DeploymentActive"


class DeploymentCannotBeCancelled(AzureError):
    status, code = 409, "DeploymentCannotBeCancelled"


class DeploymentCanceled(AzureError):
    status, code = 400, "DeploymentCanceled"


class WhatIfNotSupported(AzureError):
    status, code = 400, "WhatIfNotSupported"


class ResourceGroupBeingDeleted(AzureError):
    status, code = 409, "ResourceGroupBeingDeleted"


class RoleAssignmentExists(AzureError):
    status, code = 409, "RoleAssignmentExists"


class OperationNotAllowed(AzureError):
    status, code = 409, "OperationNotAllowed"


class CannotDeleteResource(AzureError):
    status, code = 409, "CannotDeleteResource"


class AccountNameAlreadyExists(AzureError):
    status, code = 409, "AccountNameAlreadyExists"


class SubnetsExhausted(AzureError):
    status, code = 409, "SubnetsExhausted"


class SubnetIsFull(AzureError):
    status, code = 409, "SubnetIsFull"


class AllocationFailed(AzureError):
    status, code = 409, "AllocationFailed"


class PreconditionFailed(AzureError):
    status, code = 412, "PreconditionFailed"


class RequestBodyTooLarge(AzureError):
    status, code = 413, "RequestBodyTooLarge"


# --- 5xx ---------------------------------------------------------------------------------------
class InternalServerError(AzureError):
    status, code = 500, "InternalServerError"


class ServiceUnavailable(AzureError):
    status, code = 503, "ServiceUnavailable"


# === Microsoft.Network (the network resource provider's own codes, all 400) ===================
class NetcfgInvalidSubnet(AzureError):
    status, code = 400, "NetcfgInvalidSubnet"


class NetcfgSubnetRangesOverlap(AzureError):
    status, code = 400, "NetcfgSubnetRangesOverlap"


class NetcfgSubnetRangeOutsideVnet(AzureError):
    status, code = 400, "NetcfgSubnetRangeOutsideVnet"


class InvalidAddressPrefixFormat(AzureError):
    status, code = 400, "InvalidAddressPrefixFormat"


class InvalidResourceReference(AzureError):
    status, code = 400, "InvalidResourceReference"


class InUseSubnetCannotBeDeleted(AzureError):
    status, code = 400, "InUseSubnetCannotBeDeleted"


class InUseNetworkSecurityGroupCannotBeDeleted(AzureError):
    status, code = 400, "InUseNetworkSecurityGroupCannotBeDeleted"


class PublicIPAddressInUse(AzureError):
    status, code = 400, "PublicIPAddressInUse"


class NicInUse(AzureError):
    status, code = 400, "NicInUse"


class PrivateIPAddressNotInSubnet(AzureError):
    status, code = 400, "PrivateIPAddressNotInSubnet"


class PrivateIPAddressInUse(AzureError):
    status, code = 400, "PrivateIPAddressInUse"


class SecurityRuleInvalidPortRange(AzureError):
    status, code = 400, "SecurityRuleInvalidPortRange"


class SecurityRuleParameterContainsUnsupportedValue(AzureError):
    status, code = 400, "SecurityRuleParameterContainsUnsupportedValue"


class SecurityRuleInvalidPriority(AzureError):
    status, code = 400, "SecurityRuleInvalidPriority"


# === Batch data plane ==========================================================================
# The codes of the Batch REST reference. Data-plane errors carry their name/value pairs in ``values``.

# --- 400 ---------------------------------------------------------------------------------------
class InvalidPropertyValue(AzureError):
    status, code = 400, "InvalidPropertyValue"


class MissingRequiredProperty(AzureError):
    status, code = 400, "MissingRequiredProperty"


class PropertyCannotBeUpdated(AzureError):
    status, code = 400, "PropertyCannotBeUpdated"


class InvalidRequestBody(AzureError):
    status, code = 400, "InvalidRequestBody"


class InvalidHeaderValue(AzureError):
    status, code = 400, "InvalidHeaderValue"


class InvalidQueryParameterValue(AzureError):
    status, code = 400, "InvalidQueryParameterValue"


class MissingRequiredQueryParameter(AzureError):
    status, code = 400, "MissingRequiredQueryParameter"


class AutoScalingFormulaSyntaxError(AzureError):
    status, code = 400, "AutoScalingFormulaSyntaxError"


# --- 403 ---------------------------------------------------------------------------------------
class BatchAuthenticationFailed(AuthenticationFailed):
    """The data plane answers a request it cannot authenticate with 403, where ARM answers 401."""

    status = 403


# --- 404 ---------------------------------------------------------------------------------------
class AccountNotFound(AzureError):
    status, code = 404, "AccountNotFound"


class PoolNotFound(AzureError):
    status, code = 404, "PoolNotFound"


class NodeNotFound(AzureError):
    status, code = 404, "NodeNotFound"


class ApplicationNotFound(AzureError):
    status, code = 404, "ApplicationNotFound"


class ApplicationPackageNotFound(AzureError):
    status, code = 404, "ApplicationPackageNotFound"


class JobNotFound(AzureError):
    status, code = 404, "JobNotFound"


class JobScheduleNotFound(AzureError):
    status, code = 404, "JobScheduleNotFound"


class TaskNotFound(AzureError):
    status, code = 404, "TaskNotFound"


class FileNotFound(AzureError):
    status, code = 404, "FileNotFound"


class TaskFileNotFound(AzureError):
    status, code = 404, "TaskFileNotFound"


class NodeUserNotFound(AzureError):
    status, code = 404, "NodeUserNotFound"


# --- 409 ---------------------------------------------------------------------------------------
class PoolExists(AzureError):
    status, code = 409, "PoolExists"


class PoolBeingDeleted(AzureError):
    status, code = 409, "PoolBeingDeleted"


class PoolNotSteady(AzureError):
    status, code = 409, "PoolNotSteady"


class PoolAutoScaleEnabled(AzureError):
    status, code = 409, "PoolAutoScaleEnabled"


class AutoScaleNotEnabled(AzureError):
    status, code = 409, "AutoScaleNotEnabled"


class PoolQuotaReached(AzureError):
    status, code = 409, "PoolQuotaReached"


class InvalidApplicationPackageReferences(AzureError):
    status, code = 409, "InvalidApplicationPackageReferences"


class ApplicationUpdatesNotAllowed(AzureError):
    status, code = 409, "ApplicationUpdatesNotAllowed"


class ApplicationPackageBlobNotFound(AzureError):
    status, code = 409, "ApplicationPackageBlobNotFound"


class OperationInvalidForCurrentState(AzureError):
    status, code = 409, "OperationInvalidForCurrentState"


class NodeStateConflict(AzureError):
    status, code = 409, "NodeStateConflict"


class NodeUserExists(AzureError):
    status, code = 409, "NodeUserExists"


class NodeBeingCreated(AzureError):
    status, code = 409, "NodeBeingCreated"


class NodeBeingStarted(AzureError):
    status, code = 409, "NodeBeingStarted"


class NodeBeingRebooted(AzureError):
    status, code = 409, "NodeBeingRebooted"


class NodeBeingReimaged(AzureError):
    status, code = 409, "NodeBeingReimaged"


class NodeStateUnusable(AzureError):
    status, code = 409, "NodeStateUnusable"


class OperationNotValidOnNode(AzureError):
    status, code = 409, "OperationNotValidOnNode"


class PoolNotEligibleForOSVersionUpgrade(AzureError):
    status, code = 409, "PoolNotEligibleForOSVersionUpgrade"


class JobExists(AzureError):
    status, code = 409, "JobExists"


class JobBeingDeleted(AzureError):
    status, code = 409, "JobBeingDeleted"


class JobCompleted(AzureError):
    status, code = 409, "JobCompleted"


class JobStateConflict(AzureError):
    status, code = 409, "JobStateConflict"


class JobPreparationTaskNotSpecified(AzureError):
    status, code = 409, "JobPreparationTaskNotSpecified"


class JobScheduleExists(AzureError):
    status, code = 409, "JobScheduleExists"


class JobScheduleBeingDeleted(AzureError):
    status, code = 409, "JobScheduleBeingDeleted"


class JobScheduleBeingTerminated(AzureError):
    status, code = 409, "JobScheduleBeingTerminated"


class JobScheduleCompleted(AzureError):
    status, code = 409, "JobScheduleCompleted"


class JobScheduleDisabled(AzureError):
    status, code = 409, "JobScheduleDisabled"


class TaskExists(AzureError):
    status, code = 409, "TaskExists"


class TaskCompleted(AzureError):
    status, code = 409, "TaskCompleted"


class TaskNotCompleted(AzureError):
    status, code = 409, "TaskNotCompleted"


class TaskStateConflict(AzureError):
    status, code = 409, "TaskStateConflict"


class TaskDependenciesNotSpecifiedOnJob(AzureError):
    status, code = 409, "TaskDependenciesNotSpecifiedOnJob"


class TaskIdSameAsJobPreparationTask(AzureError):
    status, code = 409, "TaskIdSameAsJobPreparationTask"


class TaskIdSameAsJobReleaseTask(AzureError):
    status, code = 409, "TaskIdSameAsJobReleaseTask"


class TaskFilesCleanedup(AzureError):
    status, code = 409, "TaskFilesCleanedup"


class DirectoryNotEmpty(AzureError):
    status, code = 409, "DirectoryNotEmpty"


# --- 412 ---------------------------------------------------------------------------------------
class ConditionNotMet(AzureError):
    status, code = 412, "ConditionNotMet"
