"""Batch data plane: job schedules (add, list, get, exists, update, patch, delete, disable, enable, terminate, and
the jobs a schedule made). Reads honour If-Match / If-None-Match / If-(Un)Modified-Since like pools; so do
writes (412 ``ConditionNotMet``). The jobs themselves are made by the job schedule loop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from shoal.api.batch.common import BatchRequest, accepted, authenticate, created, entity_headers, page, read_body
from shoal.api.batch.pools import _filter_select
from shoal.api.deps import in_thread
from shoal.core import batch_conditions, errors
from shoal.domain.batch import job_schedules as rules
from shoal.domain.batch import jobs as job_rules
from shoal.schemas import batch_bodies as bodies

router = APIRouter(prefix="/batch/{account}/jobschedules")
READ = "Microsoft.Batch/batchAccounts/jobSchedules/read"
WRITE = "Microsoft.Batch/batchAccounts/jobSchedules/write"
DELETE = "Microsoft.Batch/batchAccounts/jobSchedules/delete"
JOB_READ = "Microsoft.Batch/batchAccounts/jobs/read"


def schedule_url(br: BatchRequest, schedule_id: str) -> str:
    return f"{br.account_url}/jobschedules/{schedule_id}"


def _render(br: BatchRequest, js: Any) -> dict[str, Any]:
    return rules.render(js, schedule_url(br, js.schedule_id), lambda job_id: f"{br.account_url}/jobs/{job_id}")


def _condition(request: Request, etag: str, modified: Any) -> int | None:
    return batch_conditions.check(request.method, etag, modified, request.headers)


def _precondition(request: Request, js: Any) -> None:
    if _condition(request, js.etag, js.last_modified) == batch_conditions.PRECONDITION_FAILED:
        raise errors.ConditionNotMet("A condition in the request (If-Match, If-None-Match, If-Modified-Since or "
                                     "If-Unmodified-Since) is not met.")


@router.post("")
async def add_job_schedule(request: Request, account: str) -> Response:
    br = authenticate(request, account)
    body = await read_body(request, shape=bodies.JobSchedule)

    def work() -> tuple[str, str, Any]:
        with br.svc.db.write() as s:
            br.authorize(s, WRITE)
            js = rules.create(s, br.svc.clock, br.account.key, body)
            return js.schedule_id, js.etag, js.last_modified

    schedule_id, etag, modified = await in_thread(work)
    br.svc.nudge("jobschedules")
    return created(schedule_url(br, schedule_id), etag, modified)


@router.get("")
async def list_job_schedules(request: Request, account: str) -> JSONResponse:
    br = authenticate(request, account)

    def work() -> list[dict[str, Any]]:
        with br.svc.db.read() as s:
            br.authorize(s, READ)
            return [_render(br, js) for js in rules.list_schedules(s, br.account.key)]

    return page(request, _filter_select(request, await in_thread(work)), f"{br.account_url}/$metadata#jobschedules")


@router.get("/{schedule_id}")
async def get_job_schedule(request: Request, account: str, schedule_id: str) -> Response:
    br = authenticate(request, account)

    def work() -> tuple[dict[str, Any], str, Any]:
        with br.svc.db.read() as s:
            br.authorize(s, READ)
            js = rules.get(s, br.account.key, schedule_id)
            return _render(br, js), js.etag, js.last_modified

    body, etag, modified = await in_thread(work)
    status = _condition(request, etag, modified)
    if status is not None:
        return Response(status_code=status, headers=entity_headers(etag, modified))
    if request.query_params.get("$select"):
        body = _filter_select(request, [body])[0]
    return JSONResponse(body, headers=entity_headers(etag, modified))


@router.head("/{schedule_id}")
async def job_schedule_exists(request: Request, account: str, schedule_id: str) -> Response:
    br = authenticate(request, account)

    def work() -> tuple[str, Any] | None:
        with br.svc.db.read() as s:
            br.authorize(s, READ)
            js = rules.find(s, br.account.key, schedule_id)
            return (js.etag, js.last_modified) if js is not None else None

    found = await in_thread(work)
    if found is None:
        return Response(status_code=404)
    status = _condition(request, *found)
    return Response(status_code=status or 200, headers=entity_headers(*found))


async def _change(request: Request, account: str, schedule_id: str, change: Callable[[Any, Any, dict[str, Any]],
                  None], *, body_shape: type[bodies.Wire] | None = None, permission: str = WRITE
                  ) -> tuple[BatchRequest, str, Any]:
    """Apply one change to a schedule (after its conditions); its new ETag and last-modified time."""
    br = authenticate(request, account)
    body = await read_body(request, shape=body_shape) if body_shape is not None else {}

    def work() -> tuple[str, Any]:
        with br.svc.db.write() as s:
            br.authorize(s, permission)
            js = rules.get(s, br.account.key, schedule_id)
            _precondition(request, js)
            change(js, br.svc.clock, body)
            return js.etag, js.last_modified

    etag, modified = await in_thread(work)
    br.svc.nudge("jobschedules")
    return br, etag, modified


@router.patch("/{schedule_id}")
async def patch_job_schedule(request: Request, account: str, schedule_id: str) -> Response:
    br, etag, modified = await _change(request, account, schedule_id,
                                       lambda js, clock, body: rules.update(js, clock, body, replace=False),
                                       body_shape=bodies.JobScheduleUpdate)
    return Response(status_code=200, headers=entity_headers(etag, modified, schedule_url(br, schedule_id)))


@router.put("/{schedule_id}")
async def update_job_schedule(request: Request, account: str, schedule_id: str) -> Response:
    br, etag, modified = await _change(request, account, schedule_id,
                                       lambda js, clock, body: rules.update(js, clock, body, replace=True),
                                       body_shape=bodies.JobScheduleUpdate)
    return Response(status_code=200, headers=entity_headers(etag, modified, schedule_url(br, schedule_id)))


@router.delete("/{schedule_id}")
async def delete_job_schedule(request: Request, account: str, schedule_id: str) -> Response:
    br, etag, modified = await _change(request, account, schedule_id,
                                       lambda js, clock, _body: rules.delete(js, clock), permission=DELETE)
    return accepted(schedule_url(br, schedule_id), etag, modified)


@router.post("/{schedule_id}/disable")
async def disable_job_schedule(request: Request, account: str, schedule_id: str) -> Response:
    br, etag, modified = await _change(request, account, schedule_id, lambda js, clock, _body: rules.disable(js, clock))
    return Response(status_code=204, headers=entity_headers(etag, modified, schedule_url(br, schedule_id)))


@router.post("/{schedule_id}/enable")
async def enable_job_schedule(request: Request, account: str, schedule_id: str) -> Response:
    br, etag, modified = await _change(request, account, schedule_id, lambda js, clock, _body: rules.enable(js, clock))
    return Response(status_code=204, headers=entity_headers(etag, modified, schedule_url(br, schedule_id)))


@router.post("/{schedule_id}/terminate")
async def terminate_job_schedule(request: Request, account: str, schedule_id: str) -> Response:
    br, etag, modified = await _change(request, account, schedule_id,
                                       lambda js, clock, _body: rules.terminate(js, clock))
    return accepted(schedule_url(br, schedule_id), etag, modified)


@router.get("/{schedule_id}/jobs")
async def list_jobs_from_schedule(request: Request, account: str, schedule_id: str) -> JSONResponse:
    br = authenticate(request, account)

    def work() -> list[dict[str, Any]]:
        with br.svc.db.read() as s:
            br.authorize(s, JOB_READ)
            js = rules.get(s, br.account.key, schedule_id)
            return [job_rules.render(j, f"{br.account_url}/jobs/{j.job_id}") for j in rules.jobs_of(s, js)]

    return page(request, _filter_select(request, await in_thread(work)), f"{br.account_url}/$metadata#jobs")
