"""Helpers shared by ARM routes: reading bodies, rendering resources, paging, LRO headers, ETags."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError

from shoal.core import apiversion, errors, jsonbody
from shoal.schemas import arm_bodies

M = TypeVar("M", bound=BaseModel)

MAX_BODY = 4 * 1024 * 1024


def api_version(request: Request) -> apiversion.ApiVersion:
    """The request's api-version (required on every ARM call; 400 without it)."""
    value = next((v for k, v in request.query_params.multi_items() if k.lower() == "api-version"), None)
    return apiversion.parse(value, request.url.path, locations=request.app.state.services.settings.regions)


async def read_json(request: Request, *, required: bool = True) -> Any:
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise errors.RequestBodyTooLarge(f"The request body is larger than {MAX_BODY} bytes.")
    if not raw.strip():
        if required:
            raise errors.InvalidRequestContent("The request content was invalid: the body is empty.")
        return None
    try:
        return jsonbody.loads(raw)
    except jsonbody.TooDeep as exc:
        raise errors.InvalidRequestContent(f"The request content was invalid: {exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise errors.InvalidRequestContent(
            f"The request content was invalid and could not be deserialized: {exc}.") from exc


async def read_resource(request: Request, model: type[arm_bodies.Wire] = arm_bodies.GenericResource, *,
                        required: bool = True) -> dict[str, Any]:
    """An ARM request body checked against its wire model (``schemas/arm_*.py``), as the model normalised it:
    the properties given (none added), enums in Azure's spelling, properties the model does not name kept."""
    data = await read_json(request, required=required)
    return arm_bodies.normalised(data if data is not None else {}, model)


async def read_model(request: Request, model: type[M], *, required: bool = True) -> M:
    """An ARM request body as its wire model (a ``schemas.arm_bodies.Wire``: ARM's errors name the property)."""
    data = await read_json(request, required=required)
    if data is None:
        data = {}
    if issubclass(model, arm_bodies.Wire):
        return arm_bodies.parse(data, model)
    if not isinstance(data, dict):
        raise errors.InvalidRequestContent("The request content was invalid: expected a JSON object.")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise arm_bodies.refusal(exc, "InvalidRequestContent") from exc


def ok(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=headers)


def page(request: Request, items: Sequence[dict[str, Any]], page_size: int) -> JSONResponse:
    """A list page with ``nextLink`` when more remain (``$skiptoken`` is an opaque offset)."""
    token = request.query_params.get("$skiptoken")
    try:
        start = int(base64.urlsafe_b64decode(token.encode()).decode()) if token else 0
    except ValueError as exc:
        raise errors.BadRequest(f"The $skiptoken '{token}' is invalid.") from exc
    top = request.query_params.get("$top")
    size = page_size
    if top is not None:
        try:
            size = max(1, min(int(top), page_size))
        except ValueError as exc:
            raise errors.BadRequest(f"The $top value '{top}' is not an integer.") from exc
    chunk = list(items[start:start + size])
    body: dict[str, Any] = {"value": chunk}
    if start + size < len(items) and top is None:
        next_token = base64.urlsafe_b64encode(str(start + size).encode()).decode()
        params = [(k, v) for k, v in request.query_params.multi_items() if k != "$skiptoken"]
        params.append(("$skiptoken", next_token))
        from urllib.parse import urlencode

        body["nextLink"] = str(request.url.replace(query=urlencode(params)))
    return JSONResponse(body)


def async_headers(base_url: str, status_path: str, result_path: str | None, api_version: str) -> dict[str, str]:
    """``Azure-AsyncOperation`` (+ ``Location``) with ``Retry-After: 1`` so SDKs poll every second."""
    headers = {"Azure-AsyncOperation": f"{base_url}{status_path}?api-version={api_version}", "Retry-After": "1"}
    if result_path:
        headers["Location"] = f"{base_url}{result_path}?api-version={api_version}"
    return headers


def location_headers(base_url: str, result_path: str, api_version: str) -> dict[str, str]:
    return {"Location": f"{base_url}{result_path}?api-version={api_version}", "Retry-After": "1"}


def accepted(headers: dict[str, str]) -> Response:
    return Response(status_code=202, headers=headers)
