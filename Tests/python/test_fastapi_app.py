"""Sources/python/examples/fastapi_app.py against a real broker and a Python worker."""
from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from conftest import HEARTBEAT_MS, PKG, wait_until

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

EXAMPLES = PKG / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"conveyor_example_{name}", EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


fastapi_app = _load("fastapi_app")
analysis_worker = _load("analysis_worker")


@pytest.fixture
def api(broker):
    with TestClient(fastapi_app.create_app(broker.clients, timeout=5)) as http:
        yield http


@pytest.fixture
def analysis(broker):
    w = analysis_worker.build_worker(broker.workers, concurrency=2, heartbeat_interval=HEARTBEAT_MS / 1000)
    w.start()
    assert w.registered.wait(10)
    yield w
    w.stop(grace=0.5)


def _wait_final(api, task_id, timeout=15):
    return wait_until(lambda: (r := api.get(f"/api/tasks/{task_id}/status").json())["state"]
                      in ("succeeded", "failed", "timed_out", "cancelled") and r, timeout, 0.05, "a final state")


def test_summarize_keeps_the_old_routes_and_json(api, analysis):
    r = api.post("/summarize?priority=2", json={"url": "https://www.youtube.com/watch?v=dQw4w9WgXcQ"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) >= {"task_id", "status", "priority", "queue_position", "message"}
    assert body["status"] == "created" and body["priority"] == "HIGH" and body["type"] == "youtube"
    assert isinstance(body["queue_position"], int) and body["message"].startswith("Task queued with HIGH priority")
    st = _wait_final(api, body["task_id"])
    assert st["state"] == "succeeded" and st["priority"] == "HIGH"
    assert json.loads(st["result"])["video_id"] == "dQw4w9WgXcQ"
    assert st["progress"] == {"percent": 80, "message": "summarising"}


def test_analyze_pdf_json_and_upload_and_document(api, analysis, tmp_path):
    pdf = tmp_path / "report.pdf"
    pdf.write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Pages >>\n2 0 obj << /Type /Page >>\n3 0 obj << /Type /Page >>\n")
    r = api.post("/analyze-pdf?priority=urgent", json={"path": str(pdf), "title": "Q3"})
    assert r.status_code == 200 and r.json()["priority"] == "URGENT"
    st = _wait_final(api, r.json()["task_id"])
    assert st["state"] == "succeeded" and json.loads(st["result"])["pages"] == 2

    r = api.post("/analyze-pdf", files={"file": ("up.pdf", pdf.read_bytes(), "application/pdf")}, data={"title": "x"})
    assert r.status_code == 200, r.text
    assert r.json()["priority"] == "NORMAL"
    res = json.loads(_wait_final(api, r.json()["task_id"])["result"])
    assert (res["source"], res["pages"], res["is_pdf"]) == ("up.pdf", 2, True)

    doc = tmp_path / "notes.txt"
    doc.write_text("one two three\nfour")
    r = api.post("/analyze-document?priority=0", json={"path": str(doc)})
    assert r.status_code == 200 and r.json()["priority"] == "LOW"
    assert json.loads(_wait_final(api, r.json()["task_id"])["result"]) == {"characters": 18, "words": 4, "lines": 2}


def test_errors_bad_input_not_found_and_stats(api, broker):
    r = api.post("/summarize?priority=9", json={"url": "https://x.test/v"})
    assert r.status_code == 400 and r.json() == {"error_type": "bad_request", "field": "priority",
                                                   "message": r.json()["message"]}
    assert api.post("/summarize", json={"url": "not a url"}).json()["field"] == "url"
    assert api.post("/analyze-pdf", content=b"[1]", headers={"content-type": "application/json"}).status_code == 400
    assert api.get("/api/tasks/0123456789abcdef/status").status_code == 404
    assert api.get("/api/tasks/nope/status").status_code == 400
    stats = api.get("/api/queue/stats").json()
    assert stats["max_queue_size"] == 100 and "queue_by_priority" in stats
    assert api.get("/healthz").json()["status"] == "ok"
    # cancel through the app
    r = api.post("/analyze-document", json={"path": "/nonexistent"})
    tid = r.json()["task_id"]
    c = api.delete(f"/api/tasks/{tid}")
    assert c.status_code == 200 and c.json()["previous_state"] == "queued"
    assert api.delete(f"/api/tasks/{tid}").status_code == 409


def test_queue_full_is_503_with_retry_after(make_broker):
    b = make_broker("--max-queue", "1")
    with TestClient(fastapi_app.create_app(b.clients, timeout=5)) as api:
        assert api.post("/summarize", json={"url": "https://x.test/1"}).status_code == 200
        r = api.post("/summarize", json={"url": "https://x.test/2"})
        assert r.status_code == 503 and r.headers["retry-after"] == "5"
        assert r.json()["error_type"] == "queue_full"
        stats = api.get("/api/queue/stats").json()
        assert stats["queue_size"] == 1 and stats["submissions_rejected"] == 1


def test_broker_down_is_503_broker_unavailable():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with TestClient(fastapi_app.create_app(f"tcp://127.0.0.1:{port}", timeout=0.3)) as api:
        r = api.post("/summarize", json={"url": "https://x.test/1"})
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert r.json()["error_type"] == "broker_unavailable"
