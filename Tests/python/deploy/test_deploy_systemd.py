"""ops/systemd: the units pass `systemd-analyze verify`, carry the settings DEPLOY.md promises,
use only flags the binary has, and their ExecStart lines really start a working system."""

import json
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

import pytest

from deploy_support import (INSTALLED_BIN, REPO, UNITS, UNITS_DIR, conveyor_bin, exec_start_argv,
                            exec_start_variables, help_flags, parse_unit, unit_environment, values)

HANDLERS = REPO / "ops" / "handlers"
INSTANCES = ["document", "pdf", "youtube"]
HARDENING = {
    "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
    "PrivateDevices": "yes", "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes",
    "ProtectControlGroups": "yes", "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "LockPersonality": "yes", "MemoryDenyWriteExecute": "yes", "RestrictRealtime": "yes",
    "SystemCallArchitectures": "native", "CapabilityBoundingSet": "",
}


def unit(name):
    return parse_unit(UNITS_DIR / name)


def one(u, section, key):
    vs = values(u, section, key)
    assert len(vs) == 1, (section, key, vs)
    return vs[0]


def seconds(text):
    m = re.fullmatch(r"(\d+)(s|min)?", text)
    assert m, text
    return int(m.group(1)) * (60 if m.group(2) == "min" else 1)


# --------------------------------------------------------------------------- systemd-analyze verify


def test_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd; ops/install-deps --for-tests does it)")
    binary = conveyor_bin()
    for name in UNITS:
        text = (UNITS_DIR / name).read_text()
        assert INSTALLED_BIN in text
        # verify checks that ExecStart's program exists: point it at the built binary.
        (tmp_path / name).write_text(text.replace(INSTALLED_BIN, str(binary)))
    targets = [str(tmp_path / "conveyor-broker.service"), str(tmp_path / "conveyor-gateway.service")]
    targets += [str(tmp_path / ("conveyor-worker@%s.service" % i)) for i in INSTANCES]
    opts = ["--man=no"]
    if "--recursive-errors" in subprocess.run([analyze, "--help"], capture_output=True, text=True, timeout=30).stdout:
        opts.append("--recursive-errors=no")  # judge our units, not the host's
    proc = subprocess.run([analyze, "verify"] + opts + targets, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, SYSTEMD_LOG_LEVEL="notice"))
    output = (proc.stdout + proc.stderr).strip()
    ours = [line for line in output.splitlines() if "conveyor" in line]
    assert proc.returncode == 0 and not ours, "systemd-analyze verify:\n" + output


def test_verify_catches_a_broken_unit(tmp_path):
    # The test above means something only if verify complains about what we care about.
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    text = (UNITS_DIR / "conveyor-broker.service").read_text()
    broken = tmp_path / "conveyor-broker.service"
    broken.write_text(text.replace(INSTALLED_BIN, str(tmp_path / "missing-binary")).replace("KillSignal=", "KilSignal="))
    proc = subprocess.run([analyze, "verify", "--man=no", str(broken)], capture_output=True, text=True, timeout=60)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "missing-binary" in output and "KilSignal" in output, output


# --------------------------------------------------------------------------- the settings DEPLOY.md promises


@pytest.mark.parametrize("name", UNITS)
def test_common_service_settings(name):
    u = unit(name)
    assert one(u, "Service", "Restart") == "on-failure"
    assert 1 <= seconds(one(u, "Service", "RestartSec")) <= 30
    assert one(u, "Service", "KillSignal") == "SIGTERM"
    assert one(u, "Service", "KillMode") == "mixed"
    assert one(u, "Service", "User") == "conveyor" and one(u, "Service", "Group") == "conveyor"
    files = values(u, "Service", "EnvironmentFile")
    assert files[0] == "/etc/conveyor/conveyor.env"
    assert all(f.startswith("-/etc/conveyor/") for f in files[1:])  # per-unit overrides, optional
    for key, want in HARDENING.items():
        assert one(u, "Service", key) == want, key
    assert one(u, "Install", "WantedBy") == "multi-user.target"
    (cmd,) = values(u, "Service", "ExecStart")
    assert cmd.startswith(INSTALLED_BIN + " ")


def test_broker_journal_in_state_directory():
    u = unit("conveyor-broker.service")
    assert one(u, "Service", "StateDirectory") == "conveyor"
    argv = exec_start_argv(u, unit_environment(u))
    assert argv[:2] == [INSTALLED_BIN, "broker"]
    assert argv[argv.index("--data-dir") + 1] == "/var/lib/conveyor"  # %S/conveyor
    assert seconds(one(u, "Service", "TimeoutStopSec")) >= 10


def test_worker_template_defaults():
    u = unit("conveyor-worker@.service")
    assert values(u, "Service", "EnvironmentFile") == ["/etc/conveyor/conveyor.env", "-/etc/conveyor/worker-%i.env"]
    for instance in INSTANCES:
        env = unit_environment(u, instance)
        assert env["WORKER_TYPES"] == instance
        exe, script = env["WORKER_EXEC"].split()
        assert exe == "/usr/bin/python3" and script == "/usr/local/lib/conveyor/handlers/%s.py" % instance
        assert (HANDLERS / ("%s.py" % instance)).is_file()  # the handler the default runs exists
        argv = exec_start_argv(u, env, instance)
        assert argv[argv.index("--types") + 1] == instance
        assert argv[argv.index("--exec") + 1] == env["WORKER_EXEC"]  # ${WORKER_EXEC}: one word
        assert argv[argv.index("--name") + 1] == "testhost-%s" % instance
    # stopping waits for the drain: TimeoutStopSec above the default grace
    grace = float(unit_environment(u, "document")["WORKER_GRACE"])
    assert seconds(one(u, "Service", "TimeoutStopSec")) > grace


@pytest.mark.parametrize("name", UNITS)
def test_exec_start_variables_have_defaults(name):
    u = unit(name)
    env = unit_environment(u, "document")
    for var in exec_start_variables(u):
        assert var in env, "%s: ExecStart uses ${%s} but no Environment= line gives it a default" % (name, var)


# --------------------------------------------------------------------------- flags exist in the binary


@pytest.mark.parametrize("name", UNITS)
def test_exec_start_flags_exist(name):
    u = unit(name)
    argv = exec_start_argv(u, unit_environment(u, "document"), "document")
    sub = argv[1]
    known = help_flags(sub)
    assert "--help" in known and "--log-level" in known, known  # the help output was parsed
    used = [w.split("=", 1)[0] for w in argv[2:] if w.startswith("--")]
    unknown = [f for f in used if f not in known]
    assert not unknown, "%s uses %s, which `conveyor %s --help` does not list" % (name, unknown, sub)


def test_help_flag_parser_sees_renames():
    assert "--data-dir" in help_flags("broker") and "--exec" in help_flags("worker")
    assert "--data-directory" not in help_flags("broker")


# --------------------------------------------------------------------------- the ExecStart lines at work


def read_line(proc, timeout):
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    buf = b""
    try:
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                raise AssertionError("no ready line from %s within %s s" % (proc.args[1], timeout))
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                raise AssertionError("%s exited with %s before its ready line" % (proc.args[1], proc.poll()))
            buf += chunk
    finally:
        sel.close()
    return buf.split(b"\n", 1)[0].decode()


def http(method, url, body=None, headers=None, timeout=10):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_units_exec_start_run_a_working_system(tmp_path):
    """Broker, gateway and a worker started from the units' ExecStart lines and Environment=
    defaults (paths moved into the test's directory, endpoints on loopback ephemeral ports),
    then a document uploaded over HTTP comes back analysed."""
    binary = str(conveyor_bin())
    procs = []
    logs = []

    def launch(name, instance, env_extra, rewrite=None):
        u = unit(name)
        env = unit_environment(u, instance)
        env.update(env_extra)
        argv = exec_start_argv(u, env, instance)
        assert argv[0] == INSTALLED_BIN
        argv[0] = binary
        if rewrite:
            argv = rewrite(argv)
        log = open(tmp_path / ("%s-%s.log" % (name, instance)), "wb")
        logs.append(log)
        full = {k: v for k, v in os.environ.items() if not k.startswith(("CONVEYOR_", "WORKER_"))}
        full.update(env)
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, env=full)
        procs.append(p)
        return p

    def data_dir(argv):
        i = argv.index("--data-dir")
        return argv[:i + 1] + [str(tmp_path / "state")] + argv[i + 2:]

    try:
        broker = launch("conveyor-broker.service", "", {
            "CONVEYOR_CLIENTS_ENDPOINT": "tcp://127.0.0.1:*", "CONVEYOR_WORKERS_ENDPOINT": "tcp://127.0.0.1:*",
            "CONVEYOR_EVENTS_ENDPOINT": "tcp://127.0.0.1:*", "CONVEYOR_DURABILITY": "none"}, rewrite=data_dir)
        m = re.fullmatch(r"conveyor broker ready clients=(\S+) workers=(\S+) events=(\S+)", read_line(broker, 30))
        assert m
        clients, workers, events = m.groups()

        token = uuid.uuid4().hex
        gateway = launch("conveyor-gateway.service", "", {
            "CONVEYOR_GATEWAY_HOST": "127.0.0.1", "CONVEYOR_GATEWAY_PORT": "0", "CONVEYOR_BROKER": clients,
            "CONVEYOR_EVENTS_ENDPOINT": events, "CONVEYOR_API_TOKENS": token})
        m = re.match(r"conveyor gateway ready (http://127\.0\.0\.1:\d+)", read_line(gateway, 30))
        assert m
        base = m.group(1)

        def local_handler(argv):
            i = argv.index("--exec")
            exe, script = argv[i + 1].split()
            argv[i + 1] = "%s %s" % (sys.executable, HANDLERS / os.path.basename(script))
            return argv

        worker = launch("conveyor-worker@.service", "document", {"CONVEYOR_WORKERS_ENDPOINT": workers},
                        rewrite=local_handler)

        deadline = time.monotonic() + 20
        while http("GET", base + "/healthz")[0] != 200:
            assert time.monotonic() < deadline, "gateway never healthy"
            time.sleep(0.2)

        text = (REPO / "Tests" / "python" / "handlers" / "fixtures" / "sample.txt").read_bytes()
        boundary = "conveyorboundary%s" % uuid.uuid4().hex
        body = (("--%s\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nQueue notes\r\n"
                 "--%s\r\nContent-Disposition: form-data; name=\"file\"; filename=\"notes.txt\"\r\n"
                 "Content-Type: text/plain\r\n\r\n") % (boundary, boundary)).encode() + text + \
            ("\r\n--%s--\r\n" % boundary).encode()
        headers = {"Content-Type": "multipart/form-data; boundary=" + boundary, "Authorization": "Bearer " + token}
        status, reply = http("POST", base + "/analyze-document?priority=high", body, headers)
        assert status in (200, 201, 202), (status, reply)
        task_id = json.loads(reply)["task_id"]

        deadline = time.monotonic() + 60
        while True:
            status, reply = http("GET", "%s/api/tasks/%s/status" % (base, task_id), headers={"Authorization": "Bearer " + token})
            assert status == 200, (status, reply)
            st = json.loads(reply)
            if st["state"] not in ("queued", "running", "delayed"):
                break
            assert time.monotonic() < deadline, st
            time.sleep(0.2)
        assert st["state"] == "succeeded", st
        result = st["result"]
        result = json.loads(result if isinstance(result, str) else json.dumps(result))
        assert result["title"] == "Queue notes" and result["filename"] == "notes.txt"
        assert result["stats"]["words"] == 49 and result["keywords"][:3] == ["task", "tasks", "broker"]

        # systemctl stop: SIGTERM to the main process only (KillMode=mixed); an idle worker
        # drains and exits at once, well within TimeoutStopSec.
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
        broker.send_signal(signal.SIGTERM)
        assert broker.wait(30) == 0
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)
            p.stdout.close()
        for log in logs:
            log.close()
