"""The relay on the real PostgreSQL and NATS: commit order, rollbacks, NATS outages, one leader."""

from __future__ import annotations

import asyncio
import contextlib
import functools

import psycopg
import pytest

from account_service.domain import AddMember
from account_service.eventstore import MIGRATIONS, EventStore
from account_service.relay import Relay
from account_service.service import AccountService
from deploy.embedded import free_port, start_nats
from shared.bus import NatsLink
from shared.db import migrate, open_pool
from shared.events import Envelope, MemberAdded, PlanChanged
from tests.support.polling import eventually

pytestmark = pytest.mark.integration


@pytest.fixture
async def db(new_database):
    url = new_database("acctrelay")
    pool = await open_pool(url, min_size=1, max_size=6)
    await migrate(pool, "account_service", MIGRATIONS)
    try:
        yield url, EventStore(pool)
    finally:
        await pool.close()


@contextlib.asynccontextmanager
async def nats_link(url: str, stream: str, prefix: str):
    link = NatsLink(url, "account-relay-test", stream=stream, subjects=[f"{prefix}.>"])
    await link.start(wait=5)
    try:
        yield link
    finally:
        await link.close()


async def stream_envelopes(link: NatsLink, stream: str) -> list[tuple[str, str, Envelope]]:
    """(subject, Nats-Msg-Id, envelope) of every message in the stream, in stream order."""
    js = await link.wait_connected(5)
    info = await js.stream_info(stream)
    out = []
    if info.state.messages:
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(stream, seq)
            out.append((msg.subject, msg.headers["Nats-Msg-Id"], Envelope.from_json(msg.data)))
    return out


async def drain_until(relay: Relay, conn, n: int, timeout: float = 20.0) -> int:
    """Drain until `n` events were published. The xmin horizon is server-wide, so another
    database's open write transaction may hold events back for a moment (never lose them)."""
    total = 0

    async def more() -> bool:
        nonlocal total
        total += await relay.drain(conn)
        return total >= n

    await eventually(more, timeout)
    return total


async def create(service: AccountService, email: str = "ann@example.com", plan: str = "enterprise") -> str:
    outcome = await service.create_account(actor="u1", actor_email=email, name="Durand", country="FR",
                                           company_id=None, plan=plan, referral_code=None)
    return outcome.state.account_id


def check_exactly_once_in_order(messages, stored_by_account, prefix):
    ids = [m[1] for m in messages]
    assert len(ids) == len(set(ids)), "an event was published twice"
    expected_ids = {e.event_id for events in stored_by_account.values() for e in events}
    assert set(ids) == expected_ids, "an event is missing (or one was published that is not stored)"
    for subject, msg_id, env in messages:
        assert msg_id == env.id
        assert subject == f"{prefix}.{env.subject}.{env.type}"
    for acct, events in stored_by_account.items():
        versions = [env.streamversion for _, _, env in messages if env.subject == acct]
        assert versions == [e.version for e in events] == list(range(1, len(events) + 1))


async def test_publishes_every_event_with_its_envelope(db, nats_names):
    url, store = db
    service = AccountService(store)
    acct = await create(service)
    await service.handle(acct, AddMember("u1", "bob@example.com", "user"), actor_email="ann@example.com")
    async with nats_link(nats_names.url, nats_names.stream, nats_names.prefix) as link:
        relay = Relay(url, nats_names.url, subject_prefix=nats_names.prefix)
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            assert await drain_until(relay, conn, 3) == 3
            assert await relay.drain(conn) == 0  # the checkpoint moved on
        await relay.close()
        messages = await stream_envelopes(link, nats_names.stream)
    stored = await store.read_stream(acct)
    check_exactly_once_in_order(messages, {acct: stored}, nats_names.prefix)
    assert [m[2] for m in messages] == [e.envelope() for e in stored]  # same envelopes as the audit log
    assert messages[2][2].data["email"] == "bob@example.com"


async def test_a_transaction_that_commits_out_of_position_order_is_still_relayed(db, nats_names):
    """T1 takes positions first but commits last; T2 commits in between. A relay tailing
    by position alone would publish T2's events, move past T1's positions and skip them."""
    url, store = db
    service = AccountService(store)
    a, b = await create(service, "a@example.com"), await create(service, "b@example.com")
    async with nats_link(nats_names.url, nats_names.stream, nats_names.prefix) as link:
        relay = Relay(url, nats_names.url, subject_prefix=nats_names.prefix)
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as relay_conn, \
                await psycopg.AsyncConnection.connect(url) as slow:
            assert await drain_until(relay, relay_conn, 4) == 4

            # T1 (slow) appends to A and stays open; T2 appends to B and commits.
            t1 = await store.append_in(slow, a, 2, [PlanChanged(account_id=a, plan="business")])
            t2 = await store.append(b, 2, [PlanChanged(account_id=b, plan="solo")])
            assert t1[0].position < t2[0].position and t1[0].xid < t2[0].xid
            # While T1 runs, T2's event is held back: the checkpoint cannot pass T1's position.
            assert await relay.drain(relay_conn) == 0
            await slow.commit()
            assert await drain_until(relay, relay_conn, 2) == 2

            # A rolled-back transaction is never published; those after it are.
            await store.append_in(slow, a, 3, [MemberAdded(account_id=a, email="x@example.com", role="user",
                                                           rights=())])
            t4 = await store.append(b, 3, [PlanChanged(account_id=b, plan="team")])
            await slow.rollback()
            assert await drain_until(relay, relay_conn, 1) == 1
            assert await relay.drain(relay_conn) == 0
        await relay.close()
        messages = await stream_envelopes(link, nats_names.stream)
    assert [m[1] for m in messages[-3:]] == [t1[0].event_id, t2[0].event_id, t4[0].event_id]
    stored = {acct: await store.read_stream(acct) for acct in (a, b)}
    check_exactly_once_in_order(messages, stored, nats_names.prefix)


async def test_nats_down_during_writes_then_back_every_event_once_in_order(db, nats_names, tmp_path):
    url, store = db
    service = AccountService(store)
    port = free_port()
    server = start_nats(tmp_path / "nats", port)
    stream, prefix = "ACCT_OUTAGE", nats_names.prefix
    try:
        async with nats_link(server.url, stream, prefix) as link:
            relay = Relay(url, server.url, subject_prefix=prefix, stream=stream, poll_interval=0.2,
                          publish_timeout=1.0)
            task = asyncio.create_task(relay.run())
            try:
                accounts = [await create(service, f"owner{i}@example.com") for i in range(3)]

                published = functools.partial(_count, link, stream)

                await eventually(lambda: _ge(published, 6))
                server.stop()  # NATS goes away; writes must keep succeeding
                await eventually(lambda: not link.connected, timeout=10)
                for i in range(8):
                    for acct in accounts:
                        await service.handle(acct, AddMember("u1", f"m{i}@example.com", "user"),
                                             actor_email=f"owner{accounts.index(acct)}@example.com")
                accounts.append(await create(service, "late@example.com"))
                assert not link.connected
                server = start_nats(tmp_path / "nats", port)  # same port, same store
                total = 3 * 2 + 3 * 8 + 2
                await eventually(lambda: _ge(published, total), timeout=30)
                messages = await stream_envelopes(link, stream)
            finally:
                await _cancel(task)
            stored = {acct: await store.read_stream(acct) for acct in accounts}
            assert len(messages) == total
            check_exactly_once_in_order(messages, stored, prefix)
    finally:
        server.stop()


async def test_nats_killed_in_the_middle_of_a_drain_keeps_each_account_in_order(db, tmp_path):
    """Wherever the kill lands (mid-batch or between batches), the stream ends with
    every event once and each account's events in version order."""
    url, store = db
    service = AccountService(store)
    accounts = [await create(service, f"k{i}@example.com") for i in range(4)]
    for n in range(60):
        for acct in accounts:
            await store.append(acct, 2 + n, [PlanChanged(account_id=acct, plan=("business", "team")[n % 2])])
    total = 4 * 62
    port = free_port()
    server = start_nats(tmp_path / "nats", port)
    stream, prefix = "ACCT_KILL", "acctkill"
    try:
        async with nats_link(server.url, stream, prefix) as link:
            relay = Relay(url, server.url, subject_prefix=prefix, stream=stream, batch_size=10,
                          poll_interval=0.2, publish_timeout=1.0)
            task = asyncio.create_task(relay.run())
            try:
                published = functools.partial(_count, link, stream)

                await eventually(lambda: _ge(published, 1), interval=0.001)
                server.proc.kill()
                server.proc.wait()
                server = start_nats(tmp_path / "nats", port)
                await eventually(lambda: _ge(published, total), timeout=30)
                messages = await stream_envelopes(link, stream)
            finally:
                await _cancel(task)
        stored = {acct: await store.read_stream(acct) for acct in accounts}
        assert len(messages) == total
        check_exactly_once_in_order(messages, stored, prefix)
    finally:
        server.stop()


async def _ge(fn, n: int) -> bool:
    try:
        return await fn() >= n
    except Exception:  # noqa: BLE001 - NATS still reconnecting
        return False


async def test_one_leader_relays_and_another_takes_over(db, nats_names):
    url, store = db
    service = AccountService(store)
    async with nats_link(nats_names.url, nats_names.stream, nats_names.prefix) as link:
        first = Relay(url, nats_names.url, subject_prefix=nats_names.prefix, poll_interval=0.1)
        second = Relay(url, nats_names.url, subject_prefix=nats_names.prefix, poll_interval=0.1)
        t1 = asyncio.create_task(first.run())
        await eventually(lambda: first.is_leader)
        t2 = asyncio.create_task(second.run())
        try:
            a = await create(service)
            await eventually(lambda: _ge(lambda: _count(link, nats_names.stream), 2))
            assert first.is_leader and not second.is_leader
            await _cancel(t1)
            await eventually(lambda: second.is_leader)
            await service.handle(a, AddMember("u1", "bob@example.com", "user"), actor_email="ann@example.com")
            await eventually(lambda: _ge(lambda: _count(link, nats_names.stream), 3))
        finally:
            await _cancel(t1, t2)
        messages = await stream_envelopes(link, nats_names.stream)
    check_exactly_once_in_order(messages, {a: await store.read_stream(a)}, nats_names.prefix)


async def _count(link: NatsLink, stream: str) -> int:
    return len(await stream_envelopes(link, stream))


async def _cancel(*tasks: asyncio.Task) -> None:
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_an_event_held_back_by_another_transaction_goes_out_when_it_ends_not_at_the_next_poll(db, nats_names):
    """The xmin horizon is server-wide: an unrelated write transaction (here one that
    writes no event, so no NOTIFY follows it) holds a committed event back. The relay
    must look again shortly, not sleep until its next poll (an hour here)."""
    url, store = db
    service = AccountService(store)
    async with nats_link(nats_names.url, nats_names.stream, nats_names.prefix) as link:
        relay = Relay(url, nats_names.url, subject_prefix=nats_names.prefix, poll_interval=3600)
        task = asyncio.create_task(relay.run())
        try:
            await eventually(lambda: relay.is_leader)
            async with await psycopg.AsyncConnection.connect(url) as other:
                await other.execute("SELECT pg_current_xact_id()")  # an open transaction with an xid
                await create(service)  # commits, NOTIFYs, but is held back by `other`
                await asyncio.sleep(0.3)
                assert await _count(link, nats_names.stream) == 0
                await other.rollback()
            await eventually(lambda: _ge(lambda: _count(link, nats_names.stream), 2), timeout=5)
        finally:
            await _cancel(task)
            await relay.close()
