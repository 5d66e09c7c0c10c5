"""Batch data plane: jobs and their tasks (add, collections, get, list, update, delete, terminate, files)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from shoal.api import files
from shoal.api.batch.common import BatchRequest, accepted, authenticate, created, entity_headers, page, read_body
from shoal.api.batch.pools import _filter_select
from shoal.api.deps import in_thread
from shoal.core import errors
from shoal.domain.batch import counts, jobtasks, multi_instance
from shoal.domain.batch import files as file_rules
from shoal.domain.batch import jobs as job_rules
from shoal.domain.batch import tasks as task_rules
from shoal.schemas import batch_bodies as bodies

router = APIRouter(prefix="/batch/{account}/jobs")
READ, WRITE = "Microsoft.Batch/batchAccounts/jobs/read", "Microsoft.Batch/batchAccounts/jobs/write"
DELETE = "Microsoft.Batch/batchAccounts/jobs/delete"


def job_url(br: BatchRequest, job_id: str) -> str:
    return f"{br.account_url}/jobs/{job_id}"


def task_url(br: BatchRequest, job_id: str, task_id: str) -> str:
    return f"{job_url(br, job_id)}/tasks/{task_id}"


# --- jobs ------------------------------------------------------------------------------------------------------
@router.post("")
async def add_job(request: Request, account: str) -> Response:
    br = authenticate(request, account)
    body = await read_body(request, shape=bodies.Job)

    def work() -> tuple[str, str, Any]:
        with br.svc.db.write() as s:
            br.authorize(s, WRITE)
            job = job_rules.create(s, br.svc.clock, br.account.key, body)
            return job.job_id, job.etag, job.last_modified

    job_id, etag, modified = await in_thread(work)
    br.svc.nudge("tasks")
    return created(job_url(br, job_id), etag, modified)


@router.get("")
async def list_jobs(request: Request, account: str) -> JSONResponse:
    br = authenticate(request, account)

    def work() -> list[dict[str, Any]]:
        with br.svc.db.read() as s:
            br.authorize(s, READ)
            return [job_rules.render(j, job_url(br, j.job_id)) for j in job_rules.list_jobs(s, br.account.key)]

    return page(request, _filter_select(request, await in_thread(work)), f"{br.account_url}/$metadata#jobs")


@router.get("/{job_id}")
async def get_job(request: Request, account: str, job_id: str) -> JSONResponse:
    br = authenticate(request, account)

    def work() -> tuple[dict[str, Any], str, Any]:
        with br.svc.db.read() as s:
            br.authorize(s, READ)
            job = job_rules.get(s, br.account.key, job_id)
            return job_rules.render(job, job_url(br, job.job_id)), job.etag, job.last_modified

    body, etag, modified = await in_thread(work)
    if request.query_params.get("$select"):
        body = _filter_select(request, [body])[0]
    return JSONResponse(body, headers=entity_headers(etag, modified))


async def _job_change(request: Request, account: str, job_id: str, action: str) -> Response:
    br = authenticate(request, account)
    body = await read_body(request, required=action in ("patch", "update"), shape=bodies.Job)

    def work() -> tuple[str, Any]:
        with br.svc.db.write() as s:
            br.authorize(s, DELETE if action == "delete" else WRITE)
            job = job_rules.get(s, br.account.key, job_id)
            clock = br.svc.clock
            if action in ("patch", "update"):
                job_rules.update(job, clock, body, replace=action == "update")
            elif action == "delete":
                if job.state != "deleting":
                    job_rules.set_state(job, clock, "deleting")
            elif action == "terminate":
                job_rules.terminate(job, clock, body.get("terminateReason"))
            elif action == "disable":
                job_rules.disable(job, clock, str(body.get("disableTasks", "")).lower())
            elif action == "enable":
                job_rules.set_state(job, clock, "enabling")
            job_rules.touch(job, clock)
            return job.etag, job.last_modified

    etag, modified = await in_thread(work)
    br.svc.nudge("tasks")
    url = job_url(br, job_id)
    if action in ("patch", "update"):
        return Response(status_code=200, headers=entity_headers(etag, modified, url))
    return accepted(url, etag, modified)


@router.patch("/{job_id}")
async def patch_job(request: Request, account: str, job_id: str) -> Response:
    return await _job_change(request, account, job_id, "patch")


@router.put("/{job_id}")
async def update_job(request: Request, account: str, job_id: str) -> Response:
    return await _job_change(request, account, job_id, "update")


@router.delete("/{job_id}")
async def delete_job(request: Request, account: str, job_id: str) -> Response:
    return await _job_change(request, account, job_id, "delete")


def _register_job_action(action: str) -> None:
    async def endpoint(request: Request, account: str, job_id: str) -> Response:
        return await _job_change(request, account, job_id, action)

    router.add_api_route(f"/{{job_id}}/{action}", endpoint, methods=["POST"])


for _action in ("terminate", "disable", "enable"):
    _register_job_action(_action)


@router.get("/{job_id}/taskcounts")
async def task_counts(request: Request, account: str, job_id: str) -> JSONResponse:
    br = authenticate(request, account)

    def work() -> dict[str, Any]:
        with br.svc.db.read() as s:
            br.authorize(s, READ)
            return counts.task_counts(s, job_rules.get(s, br.account.key, job_id))

    return JSONResponse(await in_thread(work))


@router.get("/{job_id}/jobpreparationandreleasetaskstatus")
async def preparation_and_release_status(request: Request, account: str, job_id: str) -> JSONResponse:
    br = authenticate(request, account)

    def work() -> list[dict[str, Any]]:
        with br.svc.db.read() as s:
            br.authorize(s, READ)
            job = job_rules.get(s, br.account.key, job_id)
            return jobtasks.status_list(s, job)

    return page(request, _filter_select(request, await in_thread(work)),
                f"{br.account_url}/$metadata#jobpreparationandreleasetaskstatuslist")


# --- tasks -----------------------------------------------------------------------------------------------------
@router.post("/{job_id}/tasks")
async def add_task(request: Request, account: str, job_id: str) -> Response:
    br = authenticate(request, account)
    body = await read_body(request, shape=bodies.TaskAdd)

    def work() -> tuple[str, str, Any]:
        with br.svc.db.write() as s:
            br.authorize(s, WRITE)
            task = task_rules.add(s, br.svc.clock, job_rules.get(s, br.account.key, job_id), body)
            return task.task_id, task.etag, task.last_modified

    task_id, etag, modified = await in_thread(work)
    br.svc.nudge("tasks")
    return created(task_url(br, job_id, task_id), etag, modified)


@router.post("/{job_id}/addtaskcollection")
async def add_task_collection(request: Request, account: str, job_id: str) -> JSONResponse:
    br = authenticate(request, account)
    raw = await request.body()
    if len(raw) >= task_rules.MAX_COLLECTION_BYTES:
        raise errors.RequestBodyTooLarge("The request body is larger than 1 MB: send at most 100 tasks and less than "
                                         "1 MB per collection.")
    body = await read_body(request, shape=bodies.TaskCollection)

    def work() -> list[dict[str, Any]]:
        with br.svc.db.write() as s:
            br.authorize(s, WRITE)
            job = job_rules.get(s, br.account.key, job_id)
            results = task_rules.add_collection(s, br.svc.clock, job, len(raw), body.get("value"))
            for r in results:
                if r["status"] == "success":
                    r["location"] = task_url(br, job_id, r["taskId"])
            return results

    results = await in_thread(work)
    br.svc.nudge("tasks")
    return JSONResponse({"value": results})


@router.get("/{job_id}/tasks")
async def list_tasks(request: Request, account: str, job_id: str) -> JSONResponse:
    br = authenticate(request, account)

    def work() -> list[dict[str, Any]]:
        with br.svc.db.read() as s:
            br.authorize(s, READ)
            job = job_rules.get(s, br.account.key, job_id)
            return [task_rules.render(t, task_url(br, job.job_id, t.task_id)) for t in task_rules.list_tasks(s, job)]

    return page(request, _filter_select(request, await in_thread(work)), f"{br.account_url}/$metadata#tasks")


@router.get("/{job_id}/tasks/{task_id}")
async def get_task(request: Request, account: str, job_id: str, task_id: str) -> JSONResponse:
    br = authenticate(request, account)

    def work() -> tuple[dict[str, Any], str, Any]:
        with br.svc.db.read() as s:
            br.authorize(s, READ)
            job = job_rules.get(s, br.account.key, job_id)
            task = task_rules.get(s, job, task_id)
            return task_rules.render(task, task_url(br, job.job_id, task.task_id)), task.etag, task.last_modified

    body, etag, modified = await in_thread(work)
    if request.query_params.get("$select"):
        body = _filter_select(request, [body])[0]
    return JSONResponse(body, headers=entity_headers(etag, modified))


async def _task_change(request: Request, account: str, job_id: str, task_id: str, action: str) -> Response:
    br = authenticate(request, account)
    body = await read_body(request, required=False, shape=bodies.TaskUpdate)

    def work() -> tuple[str, str, Any]:
        with br.svc.db.write() as s:
            br.authorize(s, WRITE)
            job = job_rules.get(s, br.account.key, job_id)
            task = task_rules.get(s, job, task_id)
            clock = br.svc.clock
            if action == "update":
                if "constraints" in body:
                    task.spec = {**task.spec, "constraints": body["constraints"]}
            elif action == "terminate":
                task_rules.terminate(task, clock)
            elif action == "reactivate":
                task_rules.reactivate(task, clock)
            elif action == "delete":
                key = task.key
                task_rules.delete(s, task, clock)
                return "delete", key, None
            return action, task.key, task.attempt

    kind, key, attempt = await in_thread(work)
    if attempt and kind in ("terminate", "delete"):
        br.svc.kill_task(key)
    if kind == "delete":
        br.svc.kill_task(key)
    br.svc.nudge("tasks")
    url = task_url(br, job_id, task_id)
    if action == "update":
        return Response(status_code=200, headers={"DataServiceId": url})
    if action in ("terminate", "reactivate"):
        return Response(status_code=204, headers={"DataServiceId": url})
    return Response(status_code=200)


@router.put("/{job_id}/tasks/{task_id}")
async def update_task(request: Request, account: str, job_id: str, task_id: str) -> Response:
    return await _task_change(request, account, job_id, task_id, "update")


@router.delete("/{job_id}/tasks/{task_id}")
async def delete_task(request: Request, account: str, job_id: str, task_id: str) -> Response:
    return await _task_change(request, account, job_id, task_id, "delete")


@router.post("/{job_id}/tasks/{task_id}/terminate")
async def terminate_task(request: Request, account: str, job_id: str, task_id: str) -> Response:
    return await _task_change(request, account, job_id, task_id, "terminate")


@router.post("/{job_id}/tasks/{task_id}/reactivate")
async def reactivate_task(request: Request, account: str, job_id: str, task_id: str) -> Response:
    return await _task_change(request, account, job_id, task_id, "reactivate")


@router.get("/{job_id}/tasks/{task_id}/subtasksinfo")
async def subtasks(request: Request, account: str, job_id: str, task_id: str) -> JSONResponse:
    """The subtasks of a multi-instance task's latest attempt (empty for any other task, as in Azure)."""
    br = authenticate(request, account)

    def work() -> list[dict[str, Any]]:
        with br.svc.db.read() as s:
            br.authorize(s, READ)
            job = job_rules.get(s, br.account.key, job_id)
            return multi_instance.render(task_rules.get(s, job, task_id))

    return JSONResponse({"value": await in_thread(work)})


@router.get("/{job_id}/tasks/{task_id}/files")
async def list_task_files(request: Request, account: str, job_id: str, task_id: str) -> JSONResponse:
    br = authenticate(request, account)

    def work() -> list[dict[str, Any]]:
        with br.svc.db.read() as s:
            br.authorize(s, READ)
            tree = file_rules.task_tree(s, br.account.key, job_id, task_id)
        recursive = (request.query_params.get("recursive") or "").lower() == "true"
        return files.listing(br.svc.host, tree, f"{task_url(br, job_id, task_id)}/files", recursive=recursive)

    return page(request, _filter_select(request, await in_thread(work)), f"{br.account_url}/$metadata#files")


@router.api_route("/{job_id}/tasks/{task_id}/files/{file_path:path}", methods=["GET", "HEAD", "DELETE"])
async def task_file(request: Request, account: str, job_id: str, task_id: str, file_path: str) -> Response:
    br = authenticate(request, account)

    def work() -> Response:
        with br.svc.db.read() as s:
            br.authorize(s, WRITE if request.method == "DELETE" else READ)
            tree = file_rules.task_tree(s, br.account.key, job_id, task_id)
        return files.handle(request.method, br.svc.host, tree, f"{task_url(br, job_id, task_id)}/files", file_path,
                            ocp_range=request.headers.get("ocp-range"),
                            recursive=(request.query_params.get("recursive") or "").lower() == "true")

    return await in_thread(work)
