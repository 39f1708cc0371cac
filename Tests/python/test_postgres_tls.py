"""The broker's PostgreSQL journal over TLS (``sslmode`` in the journal URL): with
``verify-full`` against the server's CA it connects encrypted and serves; against the
wrong CA it refuses to start, saying why; ``require`` encrypts without checking."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import conveyor
from conftest import BrokerProcess, _binary
from pgserver import postgres_server, psql


@pytest.fixture(scope="module")
def tls_server():
    with postgres_server(ssl=True) as server:
        yield server


def journal_url(server, schema: str, query: str) -> str:
    return f"{server.url}?schema={schema}&{query}"


def encrypted_sessions(server) -> str:
    """ssl flag of every other client session on the journal's database."""
    return psql(server, "SELECT string_agg(s.ssl::text, ',') FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) "
                        "WHERE a.datname = current_database() AND a.pid <> pg_backend_pid() AND a.backend_type = 'client backend'")


def test_verify_full_connects_encrypted_and_serves(tls_server, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("PGPASSWORD", tls_server.password)
    # By host name, as the certificate names it: the name is checked too.
    url = journal_url(tls_server, "tls_ok", f"sslmode=verify-full&sslrootcert={tls_server.dir / 'ca.pem'}").replace(
        "@127.0.0.1:", "@localhost:")
    b = BrokerProcess(tmp_path / "b", "--journal", url, durability="fsync")
    b.start()
    try:
        with conveyor.Client(b.clients, timeout=10) as c:
            s = c.submit("t", b"over tls")
            assert c.status(s.task_id).state == "queued"
            assert c.stats()["journal"] == "postgres"
        assert encrypted_sessions(tls_server) == "true", "the broker's session is TLS"
    finally:
        b.stop()


def test_verify_full_refuses_a_server_its_ca_did_not_sign(tls_server, tmp_path: Path):
    other = tmp_path / "other-ca.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=other-ca",
                    "-keyout", str(tmp_path / "other.key"), "-out", str(other)], check=True, capture_output=True)
    url = journal_url(tls_server, "tls_bad", f"sslmode=verify-full&sslrootcert={other}")
    p = subprocess.run([str(_binary()), "broker", "--journal", url, "--clients", "tcp://127.0.0.1:*",
                        "--workers", "tcp://127.0.0.1:*", "--events", "tcp://127.0.0.1:*"],
                       capture_output=True, text=True, timeout=60, env=tls_server.env(), stdin=subprocess.DEVNULL)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "cannot open journal" in p.stderr and "connecting failed" in p.stderr and "sslmode=verify-full" in p.stderr, p.stderr


def test_require_encrypts_without_checking_the_certificate(tls_server, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("PGPASSWORD", tls_server.password)
    b = BrokerProcess(tmp_path / "r", "--journal", journal_url(tls_server, "tls_req", "sslmode=require"), durability="fsync")
    b.start()
    try:
        with conveyor.Client(b.clients, timeout=10) as c:
            c.ping()
        assert encrypted_sessions(tls_server) == "true"
    finally:
        b.stop()
