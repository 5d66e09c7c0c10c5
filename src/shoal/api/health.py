from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

router = APIRouter()


@router.get("/healthz", include_in_schema=False)
async def healthz() -> JSONResponse:
    """200 once the server is ready (the app only starts answering after start-up completed)."""
    return JSONResponse({"status": "ok"})
