"""ops/pg-throwaway through Tests/python/pgserver.py: the server the PostgreSQL journal's tests use."""
from __future__ import annotations

import os

from pgserver import postgres_server, psql, running


def test_throwaway_server_answers_restarts_survives_a_kill_and_is_stopped_by_pid():
    with postgres_server() as pg:
        assert pg.url == f"postgres://conveyor@127.0.0.1:{pg.port}/conveyor"
        assert pg.password == "conveyor-test"
        assert (pg.dir / "pid").read_text().strip() == str(pg.pid)
        assert running(pg.pid)
        assert psql(pg, "SELECT 1") == "1"
        assert psql(pg, "SHOW fsync") == "on"
        assert psql(pg, "SHOW synchronous_commit") == "on"
        # loopback only
        assert psql(pg, "SHOW listen_addresses") == "127.0.0.1"
        psql(pg, "CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)")

        # starting a running server again describes it and starts nothing
        first, port = pg.pid, pg.port
        pg.start()
        assert (pg.pid, pg.port) == (first, port)

        # restart: a new postmaster on the same port and data
        pg.restart()
        assert pg.pid != first and pg.port == port and pg.url.endswith(f":{port}/conveyor")
        assert not running(first)
        assert psql(pg, "SELECT 1") == "1"
        assert psql(pg, "SELECT x FROM kept") == "42"

        # kill -9 and restart: crash recovery keeps the committed row
        second = pg.pid
        pg.kill()
        assert not running(second)
        pg.restart()
        assert pg.port == port and running(pg.pid)
        assert psql(pg, "SELECT x FROM kept") == "42"
        last, directory = pg.pid, pg.dir
    assert not running(last)
    assert not os.path.exists(directory)


def test_two_servers_run_at_once():
    with postgres_server() as a, postgres_server() as b:
        assert a.port != b.port and a.pid != b.pid
        psql(a, "CREATE TABLE only_in_a (x int)")
        assert psql(a, "SELECT count(*) FROM pg_tables WHERE tablename = 'only_in_a'") == "1"
        assert psql(b, "SELECT count(*) FROM pg_tables WHERE tablename = 'only_in_a'") == "0"
