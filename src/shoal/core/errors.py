"""One exception type per Azure error code.

Every error a request can end with is an :class:`AzureError` subclass carrying the HTTP status, the
Azure error code and a message that says what to do next. The API layer renders the same error in the
ARM envelope (``{"error": {...}}``) or the Batch data-plane envelope, depending on the plane that
served the request; the domain never knows which.
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


class InvalidResourceId(AzureError):
    status, code = 400, "InvalidResourceId"


class InvalidRoleAssignmentId(AzureError):
    status, code = 400, "InvalidRoleAssignmentId"


class InvalidRoleDefinitionId(AzureError):
    status, code = 400, "InvalidRoleDefinitionId"


class PrincipalNotFound(AzureError):
    status, code = 400, "PrincipalNotFound"


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


# --- 405 / 409 / 412 / 413 ---------------------------------------------------------------------
class MethodNotAllowed(AzureError):
    status, code = 405, "MethodNotAllowed"


class Conflict(AzureError):
    status, code = 409, "Conflict"


class ResourceGroupBeingDeleted(AzureError):
    status, code = 409, "ResourceGroupBeingDeleted"


class RoleAssignmentExists(AzureError):
    status, code = 409, "RoleAssignmentExists"


class OperationNotAllowed(AzureError):
    status, code = 409, "OperationNotAllowed"


class PreconditionFailed(AzureError):
    status, code = 412, "PreconditionFailed"


class RequestBodyTooLarge(AzureError):
    status, code = 413, "RequestBodyTooLarge"


# --- 5xx ---------------------------------------------------------------------------------------
class InternalServerError(AzureError):
    status, code = 500, "InternalServerError"


class ServiceUnavailable(AzureError):
    status, code = 503, "ServiceUnavailable"
