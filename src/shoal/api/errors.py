"""One place that turns every failure into the envelope the client's plane expects."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from shoal.api.middleware import is_data_plane
from shoal.core import errors, odata
from shoal.core.timefmt import format_timestamp

log = logging.getLogger(__name__)


def arm_error_body(err: errors.AzureError) -> dict[str, Any]:
    body: dict[str, Any] = {"code": err.code, "message": err.message}
    if err.target:
        body["target"] = err.target
    details = [{"code": d.code, "message": d.message, **({"target": d.target} if d.target else {})}
               for d in err.details]
    details += [{"code": k, "message": v} for k, v in err.values.items()]
    if details:
        body["details"] = details
    return {"error": body}


def batch_error_body(err: errors.AzureError, request_id: str, now: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "odata.metadata": "$metadata#Microsoft.Azure.Batch.Protocol.Entities.Container.errors/@Element",
        "code": err.code,
        "message": {"lang": "en-US", "value": f"{err.message}\nRequestId:{request_id}\nTime:{now}"},
    }
    values = [{"key": k, "value": v} for k, v in err.values.items()]
    values += [{"key": d.code, "value": d.message} for d in err.details]
    if values:
        body["values"] = values
    return body


def render(request: Request, err: errors.AzureError) -> Response:
    if request.method == "HEAD":
        return Response(status_code=err.status, headers=err.headers)
    if is_data_plane(request.url.path):
        rid = str(getattr(request.state, "request_id", ""))
        from datetime import UTC, datetime

        body = batch_error_body(err, rid, format_timestamp(datetime.now(UTC)))
    else:
        body = arm_error_body(err)
    return JSONResponse(body, status_code=err.status, headers=err.headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(errors.AzureError)
    async def _azure(request: Request, exc: errors.AzureError) -> Response:
        return render(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return render(request, errors.InvalidRequestContent(
            f"The request content was invalid and could not be deserialized: {first.get('msg', 'invalid')}"
            + (f" at '{where}'." if where else ".")))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            err: errors.AzureError = errors.NotFound(
                f"The requested path '{request.url.path}' is not an operation Shoal serves. Check the URL and "
                "the resource type.")
        elif exc.status_code == 405:
            err = errors.MethodNotAllowed(
                f"The HTTP method '{request.method}' is not supported for '{request.url.path}'.")
        else:
            err = errors.BadRequest(str(exc.detail), status=exc.status_code)
        return render(request, err)

    @app.exception_handler(odata.ODataError)
    async def _query(request: Request, exc: odata.ODataError) -> Response:
        # A $filter, $select or $expand the route did not check itself: still the client's error.
        option = next((o for o in ("$select", "$expand", "$filter") if o in str(exc)), "$select")
        value = request.query_params.get(option, "")
        err: errors.AzureError
        if is_data_plane(request.url.path):
            err = errors.InvalidQueryParameterValue(
                f"The value for one of the query parameters is invalid: {exc}",
                values={"QueryParameterName": option, "QueryParameterValue": value[:400]})
        else:
            err = errors.InvalidQueryParameter(f"The query option {option} is invalid: {exc}")
        return render(request, err)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return render(request, errors.InternalServerError(
            "The server encountered an internal error. Please retry the request; if it persists, see the "
            f"Shoal server log for request id {getattr(request.state, 'request_id', '')}."))
