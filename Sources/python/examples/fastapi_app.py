#!/usr/bin/env python3
"""A FastAPI app whose routes and JSON are those of the in-process worker pool it
replaces; the work itself is done by Conveyor workers (e.g. ``analysis_worker.py``).

    CONVEYOR_BROKER=tcp://127.0.0.1:5555 uvicorn fastapi_app:app --port 8000

Routes (the old pool's contract):

* ``POST /summarize?priority=0-3`` JSON ``{"url": ...}`` → task type ``youtube``
* ``POST /analyze-pdf?priority=…`` JSON ``{"url"|"path", "title"?}`` or a multipart
  upload (part ``file``, optional ``title``; needs python-multipart) → ``pdf``
* ``POST /analyze-document?priority=…`` the same bodies → ``document``
* ``GET /api/tasks/{id}/status`` → the broker's status object (404 if unknown)
* ``DELETE /api/tasks/{id}`` → cancel
* ``GET /api/queue/stats`` → the broker's stats object

A submission answers ``{"task_id", "status": "created", "priority": "HIGH",
"queue_position", "state", "type", "message"}``. Errors are
``{"error_type", "message", "field"?}``: 400 bad input, 404 unknown task, 413 payload
too large, 503 ``queue_full`` with ``Retry-After: 5`` or ``broker_unavailable`` with
``Retry-After: 1``. ``priority`` is 0–3 or low/normal/high/urgent (default normal);
an ``Idempotency-Key`` header is passed to the broker.
"""
from __future__ import annotations

import base64
import json
import os
import re
from contextlib import asynccontextmanager
from typing import Any, Dict, Optional

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

import conveyor

BROKER = os.environ.get("CONVEYOR_BROKER", "tcp://127.0.0.1:5555")
_TASK_ID = re.compile(r"^[0-9a-fA-F]{16}$")


class APIError(Exception):
    def __init__(self, status: int, error_type: str, message: str, field: Optional[str] = None,
                 retry_after: Optional[int] = None):
        super().__init__(message)
        self.status, self.error_type, self.message, self.field, self.retry_after = (
            status, error_type, message, field, retry_after)


def _error_response(e: APIError) -> JSONResponse:
    body: Dict[str, Any] = {"error_type": e.error_type, "message": e.message}
    if e.field:
        body["field"] = e.field
    headers = {"Retry-After": str(e.retry_after)} if e.retry_after else None
    return JSONResponse(body, status_code=e.status, headers=headers)


def _from_conveyor(e: conveyor.ConveyorError) -> APIError:
    if isinstance(e, conveyor.QueueFull):
        return APIError(503, "queue_full", e.message or "the queue is full", retry_after=5)
    if isinstance(e, conveyor.BrokerUnavailable):
        return APIError(503, "broker_unavailable", str(e) or "the broker did not answer", retry_after=1)
    if isinstance(e, conveyor.NotFound):
        return APIError(404, "not_found", e.message)
    if isinstance(e, conveyor.NotCancellable):
        return APIError(409, "not_cancellable", e.message)
    if isinstance(e, conveyor.Rejected):
        status = {"payload_too_large": 413, "shutting_down": 503}.get(e.code, 400)
        return APIError(status, e.code, e.message, retry_after=1 if status == 503 else None)
    return APIError(502, "broker_error", str(e))


def _priority(value: Optional[str]) -> conveyor.Priority:
    if value is None or value == "":
        return conveyor.Priority.NORMAL
    try:
        return conveyor.Priority.parse(value)
    except ValueError:
        raise APIError(400, "bad_request", "priority must be 0-3 or low, normal, high, urgent", "priority") from None


def _message(priority: conveyor.Priority, position: int, delayed: bool) -> str:
    if delayed:
        return f"Task scheduled with {priority.name} priority."
    ahead = ("it is next in line" if position == 0 else "1 task ahead of it" if position == 1
             else f"{position} tasks ahead of it")
    return f"Task queued with {priority.name} priority; {ahead}."


def create_app(broker: str = BROKER, *, timeout: float = 5.0) -> FastAPI:
    """The app, talking to the broker's client endpoint ``broker``."""
    client = conveyor.AsyncClient(broker, timeout=timeout)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await client.connect()
        yield
        await client.aclose()

    app = FastAPI(title="Analysis API (Conveyor)", lifespan=lifespan)
    app.state.conveyor = client

    @app.exception_handler(APIError)
    async def on_api_error(request: Request, e: APIError) -> JSONResponse:
        return _error_response(e)

    @app.exception_handler(conveyor.ConveyorError)
    async def on_conveyor_error(request: Request, e: conveyor.ConveyorError) -> JSONResponse:
        return _error_response(_from_conveyor(e))

    async def enqueue(request: Request, task_type: str, payload: bytes) -> Dict[str, Any]:
        priority = _priority(request.query_params.get("priority"))
        key = request.headers.get("idempotency-key") or None
        t = await client.submit(task_type, payload, priority=priority, idempotency_key=key)
        return {"task_id": t.task_id, "status": "created", "priority": priority.name,
                "queue_position": None if t.state == "delayed" else t.queue_position, "state": t.state,
                "type": task_type, "message": _message(priority, t.queue_position, t.state == "delayed")}

    async def json_body(request: Request) -> Dict[str, Any]:
        raw = await request.body()
        try:
            obj = json.loads(raw)
        except ValueError:
            raise APIError(400, "bad_request", "the body must be a JSON object", "body") from None
        if not isinstance(obj, dict):
            raise APIError(400, "bad_request", "the body must be a JSON object", "body")
        return obj

    async def document_payload(request: Request) -> bytes:
        ctype = request.headers.get("content-type", "")
        if ctype.startswith("multipart/form-data"):
            form = await request.form()  # python-multipart
            upload = form.get("file")
            if upload is None or not hasattr(upload, "read"):
                upload = next((v for v in form.values() if hasattr(v, "read")), None)
            if upload is None:
                raise APIError(400, "bad_request", "upload a file in a part named 'file'", "file")
            data = await upload.read()
            title = form.get("title")
            return json.dumps({"filename": upload.filename, "content_type": upload.content_type or
                               "application/octet-stream", "title": title if isinstance(title, str) else None,
                               "size": len(data), "content_base64": base64.b64encode(data).decode()}).encode()
        obj = await json_body(request)
        url, path = obj.get("url"), obj.get("path")
        if isinstance(url, str) and re.match(r"^https?://\S+$", url):
            return await request.body()
        if isinstance(path, str) and path:
            return await request.body()
        raise APIError(400, "bad_request", "give an http(s) 'url' or a 'path' (or upload a file)", "url")

    @app.post("/summarize")
    async def summarize(request: Request) -> Dict[str, Any]:
        obj = await json_body(request)
        url = obj.get("url")
        if not isinstance(url, str) or not re.match(r"^https?://\S+$", url):
            raise APIError(400, "bad_request", "'url' must be an absolute http or https URL", "url")
        return await enqueue(request, "youtube", await request.body())

    @app.post("/analyze-pdf")
    async def analyze_pdf(request: Request) -> Dict[str, Any]:
        return await enqueue(request, "pdf", await document_payload(request))

    @app.post("/analyze-document")
    async def analyze_document(request: Request) -> Dict[str, Any]:
        return await enqueue(request, "document", await document_payload(request))

    def task_id(value: str) -> str:
        if not _TASK_ID.match(value):
            raise APIError(400, "bad_request", "a task id is 16 hexadecimal digits", "id")
        return value.lower()

    @app.get("/api/tasks/{tid}/status")
    async def task_status(tid: str) -> Dict[str, Any]:
        return (await client.status(task_id(tid))).raw

    @app.delete("/api/tasks/{tid}")
    async def cancel_task(tid: str) -> Dict[str, Any]:
        i = task_id(tid)
        previous = await client.cancel(i)
        return {"task_id": i, "status": "cancelled", "previous_state": previous,
                "message": f"Task cancelled (it was {previous})."}

    @app.get("/api/queue/stats")
    async def queue_stats() -> Dict[str, Any]:
        return await client.stats()

    @app.get("/healthz")
    async def healthz() -> Dict[str, Any]:
        await client.ping()
        return {"status": "ok", "broker": broker}

    return app


app = create_app()
