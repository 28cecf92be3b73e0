"""Switching speed of the identity service, measured on loopback.

Starts `python -m identity_service` (IDENTITY_WORKERS workers) against a fresh
database and its own NATS stream, sets up one person who belongs to two
accounts (events published to NATS as the account service's relay would),
then measures with a lean keep-alive HTTP/1.1 client (no httpx overhead):

1. baseline: `GET /ping`, a trivial endpoint of the same server;
2. switch: `POST /sessions/current/switch` alternating between the two
   accounts (every call is a real switch: lookup, decision, signature, write);
3. create-then-switch: `POST /accounts` on a real `python -m account_service`
   (event store, relay, NATS), then at once switch into the new account with
   `min_version` (the read model has usually not applied it yet); with
   `--no-account-service`, the account's events are published directly;
   then again after short idle pauses (the projector's pull has been idling,
   as on a quiet system).

Bounded: each phase runs for `--seconds`; everything binds 127.0.0.1 and is
torn down at the end (database dropped, stream deleted).

    .venv/bin/python bench/bench_switch.py --workers 2 --seconds 5 --concurrency 8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from deploy.embedded import free_port, wait_for_port  # noqa: E402
from shared.db import drop_database, with_database  # noqa: E402


class Conn:
    """One keep-alive HTTP/1.1 connection; requests are pre-encoded bytes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Conn:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        return cls(r, w)

    async def call(self, raw: bytes) -> tuple[int, bytes]:
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        body = await self.reader.readexactly(length) if length else b""
        return status, body

    def close(self) -> None:
        self.writer.close()


def request(method: str, path: str, body: dict | None = None, token: str | None = None) -> bytes:
    data = json.dumps(body).encode() if body is not None else b""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: keep-alive",
             f"Content-Length: {len(data)}"]
    if body is not None:
        lines.append("Content-Type: application/json")
    if token:
        lines.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


def percentiles(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)
    pick = lambda q: s[min(len(s) - 1, int(q * len(s)))] * 1000  # noqa: E731
    return {"p50_ms": round(pick(0.50), 2), "p90_ms": round(pick(0.90), 2), "p99_ms": round(pick(0.99), 2),
            "max_ms": round(s[-1] * 1000, 2), "mean_ms": round(statistics.fmean(s) * 1000, 2)}


async def load(port: int, requests: list[bytes] | list[list[bytes]], seconds: float, concurrency: int) -> dict:
    """Closed-loop load: `concurrency` connections, each sending the next request as soon as
    the previous answered, for `seconds`. `requests` is one list for all, or one list per connection."""
    conns = [await Conn.open(port) for _ in range(concurrency)]
    latencies: list[float] = []
    errors: dict[int, int] = {}
    stop_at = time.perf_counter() + seconds

    async def worker(i: int, conn: Conn) -> None:
        n = i
        mine = requests[i % len(requests)] if isinstance(requests[0], list) else requests
        while time.perf_counter() < stop_at:
            raw = mine[n % len(mine)]
            n += 1
            t = time.perf_counter()
            status, _ = await conn.call(raw)
            latencies.append(time.perf_counter() - t)
            if status >= 400:
                errors[status] = errors.get(status, 0) + 1

    start = time.perf_counter()
    await asyncio.gather(*(worker(i, c) for i, c in enumerate(conns)))
    elapsed = time.perf_counter() - start
    for c in conns:
        c.close()
    return {"requests": len(latencies), "per_second": round(len(latencies) / elapsed), "errors": errors,
            **percentiles(latencies)}


async def main(args) -> dict:
    from shared.bus import NatsLink, OutgoingMessage, publish_batch
    from shared.events import AccountCreated, MemberAdded, envelope, subject_for

    run = uuid.uuid4().hex[:8]
    db_url = with_database(args.postgres_url, f"bench_identity_{run}")
    stream, prefix = f"BENCH_{run}".upper(), f"bench{run}"
    port = free_port()
    env = {**os.environ, "IDENTITY_DATABASE_URL": db_url, "NATS_URL": args.nats_url, "NATS_STREAM": stream,
           "NATS_SUBJECT_PREFIX": prefix, "IDENTITY_PORT": str(port), "IDENTITY_URL": f"http://127.0.0.1:{port}",
           "IDENTITY_WORKERS": str(args.workers), "LOG_LEVEL": "warning", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "identity_service"], env=env, cwd=ROOT,
                            start_new_session=True)
    procs = [proc]
    acc_db = with_database(args.postgres_url, f"bench_account_{run}")
    acc_port = free_port()
    if args.account_service:
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "account_service"], cwd=ROOT, start_new_session=True,
            env={**env, "ACCOUNT_DATABASE_URL": acc_db, "ACCOUNT_PORT": str(acc_port)}))
    link = NatsLink(args.nats_url, "bench", stream=stream, subjects=[f"{prefix}.>"])
    results: dict = {"workers": args.workers, "concurrency": args.concurrency, "seconds": args.seconds}
    try:
        wait_for_port(port, timeout=60, proc=proc)
        if args.account_service:
            wait_for_port(acc_port, timeout=60, proc=procs[1])
        await asyncio.sleep(1.0 if args.workers > 1 else 0.2)  # every worker up
        await link.start(wait=10)
        js = await link.wait_connected(10)
        c = await Conn.open(port)
        email = f"bench-{run}@example.com"
        status, _ = await c.call(request("POST", "/users", {"email": email, "password": "bench password"}))
        assert status == 201, status
        status, body = await c.call(request("POST", "/sessions", {"email": email, "password": "bench password"}))
        session = json.loads(body)["session_token"]

        async def create_account(name: str) -> tuple[str, int]:
            acct = str(uuid.uuid4())
            evs = [envelope(AccountCreated(account_id=acct, name=name, country="FR", referral_code=acct[:8]),
                            streamversion=1),
                   envelope(MemberAdded(account_id=acct, email=email, role="admin",
                                        rights=("settings:write",)), streamversion=2)]
            await publish_batch(js, [OutgoingMessage(subject_for(prefix, acct, e.type), e.to_json(), e.id)
                                     for e in evs])
            return acct, 2

        accounts = [await create_account(f"Company {i}") for i in range(2)]
        versions = {a: v for a, v in accounts}
        for acct, v in accounts:
            status, body = await c.call(request("POST", "/sessions/current/switch",
                                                {"account_id": acct, "min_version": v}, session))
            assert status == 200, body
        # one person per connection, each a member of both accounts, each with her own session
        sessions = []
        for i in range(args.concurrency):
            person = f"bench-{run}-{i}@example.com"
            status, _ = await c.call(request("POST", "/users", {"email": person, "password": "bench password"}))
            assert status == 201, status
            status, body = await c.call(request("POST", "/sessions", {"email": person, "password": "bench password"}))
            sessions.append(json.loads(body)["session_token"])
            extra = []
            for acct, _ in accounts:
                v = versions[acct] = versions[acct] + 1
                extra.append(envelope(MemberAdded(account_id=acct, email=person, role="user",
                                                  rights=("quotes:write",)), streamversion=v))
            await publish_batch(js, [OutgoingMessage(subject_for(prefix, e.subject, e.type), e.to_json(), e.id)
                                     for e in extra])
        for acct, _ in accounts:
            status, body = await c.call(request("POST", "/sessions/current/switch",
                                                {"account_id": acct, "min_version": versions[acct]}, session))
            assert status == 200, body
        switches = [[request("POST", "/sessions/current/switch", {"account_id": a}, s) for a, _ in accounts]
                    for s in sessions]

        await load(port, [request("GET", "/ping")], 1.0, args.concurrency)  # warm-up
        await load(port, switches, 1.0, args.concurrency)
        results["baseline_ping"] = await load(port, [request("GET", "/ping")], args.seconds, args.concurrency)
        results["switch"] = await load(port, switches, args.seconds, args.concurrency)

        # create-then-switch, one at a time (as a person would)
        c.close()
        c = await Conn.open(port)  # the first one idled past the keep-alive timeout
        switch_only, total = [], []
        via = "account_service" if args.account_service else "direct publish to NATS (relay excluded)"
        if args.account_service:
            a = await Conn.open(acc_port)
            status, body = await c.call(request("POST", "/sessions", {"email": email, "password": "bench password"}))
            token = json.loads(body)["access_token"]
        plan = [0.0] * args.creates + [random.uniform(0.2, 1.6) for _ in range(args.idle_creates)]
        idle_switch, idle_total = [], []
        for i, pause in enumerate(plan):
            if pause:  # a quiet system: the projector's fetch has been idling
                await asyncio.sleep(pause)
            t0 = time.perf_counter()
            if args.account_service:
                status, body = await a.call(request("POST", "/accounts", {"name": f"New {i}", "country": "FR"}, token))
                assert status == 201, body
                acct, v = json.loads(body)["account_id"], json.loads(body)["version"]
            else:
                acct, v = await create_account(f"New {i}")
            t1 = time.perf_counter()
            status, body = await c.call(request("POST", "/sessions/current/switch",
                                                {"account_id": acct, "min_version": v}, session))
            t2 = time.perf_counter()
            assert status == 200, body
            (idle_switch if pause else switch_only).append(t2 - t1)
            (idle_total if pause else total).append(t2 - t0)
        results["create_then_switch"] = {"count": args.creates, "create_via": via,
                                         "switch_with_min_version": percentiles(switch_only),
                                         "create_plus_switch": percentiles(total)}
        if idle_switch:
            results["create_then_switch_after_idle"] = {
                "count": len(idle_switch), "idle_seconds": "0.2-1.6", "create_via": via,
                "switch_with_min_version": percentiles(idle_switch), "create_plus_switch": percentiles(idle_total)}
        c.close()
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        try:
            js = link.js
            if js is not None:
                await js.delete_stream(stream)
                await js.delete_key_value(f"{stream}_REVOKED")
        except Exception:  # noqa: BLE001
            pass
        await link.close()
        await drop_database(db_url)
        if args.account_service:
            await drop_database(acc_db)
    return results


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--postgres-url", default=os.environ.get("TEST_POSTGRES_URL",
                                                            "postgresql://postgres@127.0.0.1:5432/postgres"))
    p.add_argument("--nats-url", default=os.environ.get("TEST_NATS_URL", "nats://127.0.0.1:4222"))
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--creates", type=int, default=200)
    p.add_argument("--idle-creates", type=int, default=30,
                   help="create-then-switch again after 0.2-1.6 s of quiet each (as real users do)")
    p.add_argument("--no-account-service", dest="account_service", action="store_false",
                   help="create accounts by publishing their events directly instead of POST /accounts")
    a = p.parse_args()
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(main(a)), indent=2))
