"""End-to-end tests of features the broker gained with protocol 1.1 (RETRY_LATER, DONE's
cost option, CURVE). Each one is skipped, with the reason, when `conveyor broker --help`
does not list the flag that comes with the feature; the frames themselves are checked
against a scripted broker in test_fake_broker.py."""
from __future__ import annotations

import time

import pytest
import zmq.auth

import conveyor
from conftest import HEARTBEAT_MS, broker_help


def test_retry_later_end_to_end(make_broker):
    if "--rate-limit" not in broker_help():
        pytest.skip("the broker does not support RETRY_LATER yet (`conveyor broker --help` has no --rate-limit)")
    b = make_broker()
    starts = []

    def h(task, ctx):
        starts.append(time.monotonic())
        if len(starts) == 1:
            ctx.retry_later(0.3)  # "the API said 429, retry after 0.3 s"
        return b"after the rate limit"

    w = conveyor.Worker(b.workers, heartbeat_interval=HEARTBEAT_MS / 1000)
    w.add_handler("llm", h)
    w.start()
    try:
        with conveyor.Client(b.clients, timeout=5) as c:
            t = c.submit("llm", b"prompt")
            assert c.wait(t.task_id, timeout=15) == b"after the rate limit"
            assert len(starts) == 2 and starts[1] - starts[0] >= 0.25
            assert c.status(t.task_id).state == "succeeded"
    finally:
        w.stop(grace=0.5)


def test_curve_end_to_end(make_broker, tmp_path):
    if "--curve-dir" not in broker_help():
        pytest.skip("the broker does not support CURVE yet (`conveyor broker --help` has no --curve-dir)")
    # The broker's layout (`conveyor broker --help`): DIR/broker.key_secret, and the
    # public keys it lets in under DIR/clients/, DIR/workers/, DIR/subscribers/.
    d, own = tmp_path / "curve", tmp_path / "own"
    for sub in ("", "clients", "workers", "subscribers"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    own.mkdir()
    zmq.auth.create_certificates(str(d), "broker")
    for name in ("web", "pdfworker", "dashboard"):
        zmq.auth.create_certificates(str(own), name)
    for name, role in (("web", "clients"), ("pdfworker", "workers"), ("dashboard", "subscribers")):
        (d / role / f"{name}.key").write_bytes((own / f"{name}.key").read_bytes())
    for secret in [*d.glob("*.key_secret"), *own.glob("*.key_secret")]:
        secret.chmod(0o600)  # the broker refuses readable secret keys
    b = make_broker("--curve-dir", str(d))
    server = d / "broker.key"
    w = conveyor.Worker(b.workers, heartbeat_interval=HEARTBEAT_MS / 1000,
                        curve_key=own / "pdfworker.key_secret", curve_server_key=server)
    w.add_handler("sec", lambda task, ctx: task.payload[::-1])
    w.start()
    try:
        assert w.registered.wait(10)
        with conveyor.subscribe(b.events, ("stats",), timeout=5, curve_key=own / "dashboard.key_secret",
                                curve_server_key=server) as sub:
            topic, stats = next(sub)
            assert topic == "stats" and stats["workers_connected"] == 1
        with conveyor.Client(b.clients, timeout=5, curve_key=own / "web.key_secret", curve_server_key=server) as c:
            assert c.wait(c.submit("sec", b"terces").task_id, timeout=10) == b"secret"
        with conveyor.Client(b.clients, timeout=0.5) as plain:  # no keys: not let in
            with pytest.raises(conveyor.BrokerUnavailable):
                plain.ping()
        with conveyor.Client(b.clients, timeout=0.5, curve_key=own / "pdfworker.key_secret",
                             curve_server_key=server) as wrong_role:  # a worker key is not a client key
            with pytest.raises(conveyor.BrokerUnavailable):
                wrong_role.ping()
    finally:
        w.stop(grace=0.5)


def test_cost_reported_by_done_counts_against_the_budget(make_broker):
    if "--cost-limit" not in broker_help():
        pytest.skip("the broker does not support DONE cost options yet (`conveyor broker --help` has no --cost-limit)")
    b = make_broker("--cost-limit", "llm=1000/min")

    def h(task, ctx):
        ctx.cost(600)
        ctx.cost(600)  # adds up: 1200 units for this attempt
        return b"answer"

    w = conveyor.Worker(b.workers, heartbeat_interval=HEARTBEAT_MS / 1000)
    w.add_handler("llm", h)
    w.start()
    try:
        with conveyor.Client(b.clients, timeout=5) as c:
            assert c.wait(c.submit("llm").task_id, timeout=10) == b"answer"
            blocked = c.submit("llm")
            deadline = time.monotonic() + 5
            while (st := c.status(blocked.task_id)).waiting_for != "cost_limit" and time.monotonic() < deadline:
                time.sleep(0.05)
            assert (st.state, st.waiting_for) == ("queued", "cost_limit")
            # One report spends at most the whole budget (§7.4): 1200 units count as 1000.
            assert c.stats()["types"]["llm"]["cost_limit"]["in_window"] == 1000
            c.cancel(blocked.task_id)
    finally:
        w.stop(grace=0.5)
