"""Live pages through server-sent events: one stream per open page, no polling from the browser.

A stream reads its view again every :data:`PASS_SECONDS` (one small query), and sends only what changed since
its last event: a pool's heatmap gets the nodes whose state changed, appeared or left (never the whole grid
again), a job its counts and the tasks whose state changed, a task the bytes its stdout/stderr gained and its
state. The first event of a stream is the whole view, so a reconnecting browser (``EventSource`` reconnects by
itself) catches up. Streams end after :data:`STREAM_SECONDS` (the browser reconnects) and as soon as the server
begins to stop, so an open page never holds up a shutdown. Every pass reads with the principal's rights: a role
removed meanwhile ends the stream with the API's error.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from shoal.api.deps import in_thread, services
from shoal.api.portal import render, sessions
from shoal.core import errors
from shoal.domain import portal_views
from shoal.domain.batch import files as batch_files

router = APIRouter(prefix="/portal", include_in_schema=False)
PASS_SECONDS = 0.5
STREAM_SECONDS = 300.0
TIMELINE_SECONDS = 5.0
OUTPUT_CHUNK = 64 * 1024
OUTPUT_FILES = ("stdout.txt", "stderr.txt")
_stopping = False

Step = Callable[[], Awaitable[list[str]]]


def stop_streams() -> None:
    """End every open stream at its next pass (the server is stopping)."""
    global _stopping
    _stopping = True


def event(name: str, data: Any) -> str:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def _run(request: Request, step: Step) -> AsyncIterator[str]:
    yield "retry: 1000\n\n"
    deadline = time.monotonic() + STREAM_SECONDS
    while not _stopping and time.monotonic() < deadline:
        try:
            chunks = await step()
        except errors.AzureError as exc:
            yield event("failed", {"code": exc.code, "message": exc.message})
            return
        for chunk in chunks:
            yield chunk
        if chunks and chunks[-1].startswith("event: end\n"):
            return
        if await request.is_disconnected():
            return
        await asyncio.sleep(PASS_SECONDS)


def _stream(request: Request, make: Callable[[sessions.PortalSession], Step]) -> Response:
    session = sessions.current(request)
    if session is None:
        return render.secure(Response("Sign in first.", status_code=401, media_type="text/plain"))
    headers = {**render.SECURITY_HEADERS, "X-Accel-Buffering": "no"}
    return StreamingResponse(_run(request, make(session)), media_type="text/event-stream", headers=headers)


def _pool_summary(live: portal_views.PoolLive) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for _, state in live.nodes:
        counts[state] = counts.get(state, 0) + 1
    return {**asdict(live.summary), "resizeErrors": live.resize_errors, "autoscale": live.autoscale,
            "counts": counts, "nodes": len(live.nodes)}


@router.get("/batch/{account}/pools/{pool_id}/events")
async def pool_events(request: Request, account: str, pool_id: str) -> Response:
    svc = services(request)

    def make(session: sessions.PortalSession) -> Step:
        sent: dict[str, str] | None = None
        last_summary: dict[str, Any] | None = None

        async def step() -> list[str]:
            nonlocal sent, last_summary
            live = await in_thread(lambda: portal_views.pool_live(svc.db, session.caller, account, pool_id))
            out = []
            now = dict(live.nodes)
            if sent is None:
                out.append(event("nodes", {"full": True, "set": live.nodes}))
            else:
                changed = [[node_id, state] for node_id, state in live.nodes if sent.get(node_id) != state]
                removed = [node_id for node_id in sent if node_id not in now]
                if changed or removed:
                    out.append(event("nodes", {"set": changed, "remove": removed}))
            sent = now
            summary = _pool_summary(live)
            if summary != last_summary:
                out.append(event("pool", summary))
                last_summary = summary
            return out

        return step

    return _stream(request, make)


@router.get("/batch/{account}/jobs/{job_id}/events")
async def job_events(request: Request, account: str, job_id: str) -> Response:
    svc = services(request)

    def make(session: sessions.PortalSession) -> Step:
        sent: dict[str, str] = {}
        last: dict[str, Any] | None = None
        drawn = 0.0  # when the timeline was last sent (monotonic)

        async def step() -> list[str]:
            nonlocal sent, last, drawn
            state, counts, states = await in_thread(lambda: portal_views.job_live(svc.db, session.caller, account,
                                                                                   job_id))
            out = []
            summary = {"state": state, "counts": counts}
            # The chart of counts over time: again when the counts change, and while the job runs, as time passes.
            stale = time.monotonic() - drawn >= TIMELINE_SECONDS and state != "completed"
            if summary != last or stale:
                timeline = await in_thread(lambda: portal_views.job_timeline(svc.db, session.caller, account,
                                                                             job_id, svc.clock.now()))
                out.append(event("timeline", asdict(timeline)))
                drawn = time.monotonic()
            if summary != last:
                out.append(event("job", summary))
                last = summary
            changed = {task_id: s for task_id, s in states.items() if sent.get(task_id) != s}
            if changed:
                out.append(event("tasks", changed))
            sent = states
            return out

        return step

    return _stream(request, make)


@router.get("/batch/{account}/jobs/{job_id}/tasks/{task_id}/events")
async def task_events(request: Request, account: str, job_id: str, task_id: str) -> Response:
    """The task's state, and its stdout/stderr as they grow (from the start of each file); ``end`` once the task
    has completed and both files are read to their end."""
    svc = services(request)

    def make(session: sessions.PortalSession) -> Step:
        offsets = dict.fromkeys(OUTPUT_FILES, 0)
        decoders = {name: codecs.getincrementaldecoder("utf-8")(errors="replace") for name in OUTPUT_FILES}
        last: dict[str, Any] | None = None

        def read(tree: batch_files.Tree, name: str) -> tuple[bytes, bool]:
            """New bytes of one file (read as the Batch file API reads it) and whether it was read to its end."""
            try:
                info, data = batch_files.read_file(svc.host, tree, name, offsets[name],
                                                   offsets[name] + OUTPUT_CHUNK - 1, suffix=False)
            except errors.FileNotFound:
                return b"", True  # not written yet
            offsets[name] += len(data)
            return data, offsets[name] >= info["size"]

        async def step() -> list[str]:
            nonlocal last
            view = await in_thread(lambda: portal_views.task(svc.db, session.caller, account, job_id, task_id))
            where = await in_thread(lambda: portal_views.task_files(svc.db, session.caller, account, job_id,
                                                                    task_id))
            out = []
            summary = asdict(view)
            if summary != last:
                out.append(event("task", summary))
                last = summary
            at_end = True
            if where is not None:
                for name in OUTPUT_FILES:
                    data, done = await in_thread(lambda name=name: read(where, name))  # type: ignore[misc]
                    at_end = at_end and done
                    text = decoders[name].decode(data)
                    if text:
                        out.append(event("output", {"file": name, "text": text}))
            if view.state == "completed" and at_end:
                out.append(event("end", {}))
            return out

        return step

    return _stream(request, make)
