#!/usr/bin/env python3
"""The analysis functions of a web service, served as Conveyor workers.

This is the migration recipe of the README: the functions the web app used to run in
its in-process worker pool (``analyse_pdf(path)``, …) stay as they are; a handler
per task type decodes the payload the web app sends (see ``fastapi_app.py``), calls
the function, reports progress, and returns its JSON-able result.

    python3 analysis_worker.py [--broker tcp://127.0.0.1:5556] [--concurrency 2]

The functions here are small stand-ins (no network, no PDF library) so that the
example runs anywhere; put your real ones in their place.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import json
import re
from typing import Any, Callable, Dict, Optional

import conveyor

# ---- the existing analysis code (unchanged by the migration) -----------------------


def analyse_pdf(path: str, data: Optional[bytes] = None) -> Dict[str, Any]:
    """What the service did before: read the PDF and describe it."""
    if data is None:
        with open(path, "rb") as f:
            data = f.read()
    return {
        "source": path,
        "bytes": len(data),
        "pages": len(re.findall(rb"/Type\s*/Page(?!s)", data)),
        "is_pdf": data.startswith(b"%PDF-"),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def analyse_document(text: str) -> Dict[str, Any]:
    words = re.findall(r"\w+", text)
    return {"characters": len(text), "words": len(words), "lines": text.count("\n") + (1 if text else 0)}


def summarize_video(url: str, progress: Callable[[int, str], None] = lambda p, m: None) -> Dict[str, Any]:
    progress(20, "fetching transcript")
    video_id = url.rsplit("v=", 1)[-1] if "v=" in url else url.rsplit("/", 1)[-1]
    progress(80, "summarising")
    return {"url": url, "video_id": video_id, "summary": f"A summary of video {video_id}."}


# ---- the handlers: payload in, the old function's result out -----------------------


def _document_input(payload: bytes) -> tuple:
    """The web app sends JSON: {"path"} / {"url"} as posted, or an upload
    {"filename", "content_base64", ...}. Returns (name, bytes or None)."""
    req = json.loads(payload)
    if "content_base64" in req:
        return req.get("filename") or "upload", base64.b64decode(req["content_base64"])
    if "path" in req:
        return req["path"], None
    raise ValueError("payload needs 'path' or an uploaded file (this example does not download URLs)")


def build_worker(endpoint: str = "tcp://127.0.0.1:5556", concurrency: int = 2, **kw: Any) -> conveyor.Worker:
    w = conveyor.Worker(endpoint, concurrency=concurrency, **kw)

    @w.handler("pdf")
    def pdf(task: conveyor.Task, ctx: conveyor.TaskContext) -> Dict[str, Any]:
        ctx.progress(10, "reading the file")
        name, data = _document_input(task.payload)
        result = analyse_pdf(name, data)
        ctx.progress(100, "analysed")
        return result

    @w.handler("document")
    def document(task: conveyor.Task, ctx: conveyor.TaskContext) -> Dict[str, Any]:
        name, data = _document_input(task.payload)
        if data is None:
            with open(name, "rb") as f:
                data = f.read()
        return analyse_document(data.decode("utf-8", "replace"))

    @w.handler("youtube")
    def youtube(task: conveyor.Task, ctx: conveyor.TaskContext) -> Dict[str, Any]:
        url = json.loads(task.payload)["url"]
        if ctx.cancelled.is_set():
            raise RuntimeError("cancelled before start")
        return summarize_video(url, ctx.progress)

    return w


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--broker", default="tcp://127.0.0.1:5556", help="the broker's worker endpoint")
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--heartbeat-ms", type=int, default=1000, help="must match the broker's --heartbeat-interval")
    a = ap.parse_args()
    build_worker(a.broker, a.concurrency, heartbeat_interval=a.heartbeat_ms / 1000).run()


if __name__ == "__main__":
    main()
