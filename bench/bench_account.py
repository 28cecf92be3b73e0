"""Account service throughput on this machine (loopback PostgreSQL and NATS, bounded).

    .venv/bin/python -m bench.bench_account [--events 6000] [--writers 8]

Measures:
- events appended per second by the event store (concurrent writers, each
  commit one event on its own account's stream, optimistic concurrency and
  NOTIFY included), and full commands per second (load the stream, decide,
  append) through AccountService;
- events relayed per second: a backlog drained from the events table to
  JetStream with acks awaited per batch, checkpoint written per batch.

Uses a scratch database and a scratch stream, both removed at the end.
Environment: BENCH_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/postgres),
NATS_URL (default nats://127.0.0.1:4222).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid

import psycopg

from account_service.domain import AddMember
from account_service.eventstore import MIGRATIONS, EventStore
from account_service.relay import Relay
from account_service.service import AccountService
from shared.bus import NatsLink
from shared.db import drop_database, ensure_database, migrate, open_pool, with_database
from shared.events import PlanChanged


async def main(events: int, writers: int) -> None:
    admin = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    nats_url = os.environ.get("NATS_URL", "nats://127.0.0.1:4222")
    tag = uuid.uuid4().hex[:8]
    url = with_database(admin, f"bench_account_{tag}")
    stream, prefix = f"BENCH_ACCT_{tag}".upper(), f"benchacct{tag}"
    await ensure_database(url)
    pool = await open_pool(url, min_size=writers, max_size=writers + 2)
    link = NatsLink(nats_url, "bench-account", stream=stream, subjects=[f"{prefix}.>"])
    try:
        await migrate(pool, "account_service", MIGRATIONS)
        store = EventStore(pool)
        service = AccountService(store)

        # accounts to write to: one per writer
        accounts = []
        for i in range(writers):
            out = await service.create_account(actor="bench", actor_email=f"w{i}@example.com", name=f"Bench {i}",
                                               country="FR", company_id=None, plan="enterprise", referral_code=None)
            accounts.append(out.state.account_id)

        # 1. raw appends: each writer appends one event per commit to its own stream
        per_writer = events // writers

        async def writer(acct: str) -> None:
            version = 2
            for _ in range(per_writer):
                await store.append(acct, version, [PlanChanged(account_id=acct, plan="business")])
                version += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(writer(a) for a in accounts))
        appended = per_writer * writers
        append_rate = appended / (time.perf_counter() - t0)

        # 2. full commands (load + decide + append), fewer: each reloads its stream
        commands = min(events // 4, 1000) // writers

        async def commander(acct: str, i: int) -> None:
            for n in range(commands):
                await service.handle(acct, AddMember("bench", f"m{n}@example.com", "viewer"),
                                     actor_email=f"w{i}@example.com")

        fresh = []
        for i in range(writers):
            out = await service.create_account(actor="bench", actor_email=f"w{i}@example.com", name=f"Cmd {i}",
                                               country="FR", company_id=None, plan="enterprise", referral_code=None)
            fresh.append(out.state.account_id)
        t0 = time.perf_counter()
        await asyncio.gather(*(commander(a, i) for i, a in enumerate(fresh)))
        command_rate = commands * writers / (time.perf_counter() - t0)

        # 3. the relay drains the whole backlog to JetStream
        async with pool.connection() as conn:
            backlog = (await (await conn.execute("SELECT count(*) FROM events")).fetchone())[0]
        await link.start(wait=5)
        results = {}
        for batch in (100, 500):
            relay = Relay(url, nats_url, subject_prefix=prefix, name=f"bench-{batch}", batch_size=batch)
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                await relay._jetstream()  # connect before timing
                t0 = time.perf_counter()
                relayed = await relay.drain(conn)
                results[batch] = relayed / (time.perf_counter() - t0)
            await relay.close()
            assert relayed == backlog, (relayed, backlog)
        js = await link.wait_connected(5)
        info = await js.stream_info(stream)
        # the second relay republished the same events: JetStream dropped them by Nats-Msg-Id
        assert info.state.messages == backlog, (info.state.messages, backlog)

        print(f"appends  : {appended} events, {writers} concurrent writers, one event per commit: "
              f"{append_rate:,.0f} events/s")
        print(f"commands : {commands * writers} AddMember commands (load + decide + append): "
              f"{command_rate:,.0f} commands/s")
        for batch, rate in results.items():
            print(f"relay    : {backlog} events to JetStream, batch {batch}: {rate:,.0f} events/s")
        print("(JetStream deduplicated the second pass: stream holds each event once)")
    finally:
        await link.close()
        await pool.close()
        await drop_database(url)
        try:
            import nats

            nc = await nats.connect(nats_url, connect_timeout=2, max_reconnect_attempts=1)
            await nc.jetstream().delete_stream(stream)
            await nc.close()
        except Exception:  # noqa: BLE001
            pass


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=6000)
    parser.add_argument("--writers", type=int, default=8)
    args = parser.parse_args()
    asyncio.run(main(args.events, args.writers))
