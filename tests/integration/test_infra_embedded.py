"""The embedded path of tests/infra.py, for real: what `make test` falls back
to on a machine with neither explicit servers nor Docker (and what `make run`
uses). CI takes the explicit path, so this test keeps the other one honest."""

from __future__ import annotations

import asyncio
import uuid

import psycopg
import pytest
from psycopg import sql

from tests.infra import start_embedded
from tests.support.processes import alive

pytestmark = pytest.mark.integration


async def _publish_and_read(url: str) -> bytes:
    import nats
    from nats.js.api import StreamConfig

    nc = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=1)
    try:
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name="EMBEDDED_CHECK", subjects=["embedded.>"]))
        ack = await js.publish("embedded.a1.Hello", b'{"hello": "world"}', headers={"Nats-Msg-Id": "m-1"})
        dup = await js.publish("embedded.a1.Hello", b'{"hello": "world"}', headers={"Nats-Msg-Id": "m-1"})
        assert dup.duplicate and dup.seq == ack.seq
        sub = await js.pull_subscribe("embedded.>", durable="checker", stream="EMBEDDED_CHECK")
        (msg,) = await sub.fetch(1, timeout=5)
        await msg.ack()
        return msg.data
    finally:
        await nc.close()


def test_embedded_servers_start_serve_and_stop_leaving_nothing(tmp_path):
    infra = start_embedded(tmp_path)
    pids: list[int] = []
    try:
        assert infra.source == "embedded"
        with psycopg.connect(infra.postgres_url, autocommit=True) as conn:
            (pg_pid,) = conn.execute("SELECT pg_backend_pid()").fetchone()
            (postmaster,) = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'").fetchone()
            pids.append(pg_pid)
            name = f"mc_embedded_{uuid.uuid4().hex[:8]}"
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        with psycopg.connect(infra.database_url(name)) as conn:
            conn.execute("CREATE TABLE t (x int)")
            conn.execute("INSERT INTO t VALUES (42)")
            assert conn.execute("SELECT x FROM t").fetchone() == (42,)
        postmaster_pid = int((tmp_path / "pg" / "postmaster.pid").read_text().split()[0])
        pids += [postmaster, postmaster_pid]

        assert asyncio.run(_publish_and_read(infra.nats_url)) == b'{"hello": "world"}'
        nats_port = int(infra.nats_url.rsplit(":", 1)[1])
    finally:
        infra.close()

    assert not (tmp_path / "pg" / "postmaster.pid").exists(), "PostgreSQL still has its pid file"
    left = [pid for pid in pids if alive(pid)]
    assert not left, f"processes still running after close(): {left}"
    from deploy.embedded import port_free

    assert port_free(nats_port), "the embedded NATS still listens"
