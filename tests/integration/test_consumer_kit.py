"""The consumer kit (shared/consumer.py), exercised with the licensing projection
over a real PostgreSQL and a real JetStream: duplicates, disorder, gaps, rebuilds,
a NATS outage and a kill -9 mid-stream."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import nats
import pytest

from deploy.embedded import free_port, start_nats
from licensing_consumer.store import COMPONENT, MIGRATIONS, LicenceReader, LicensingProjection
from shared.bus import NatsLink
from shared.consumer import EventConsumer
from shared.db import migrate, open_pool
from tests.support.licensing_events import (
    Story,
    applied_versions,
    caught_up,
    publish,
    random_story,
)
from tests.support.polling import eventually

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


class Kit:
    """A database with the licensing schema, and consumers over one stream."""

    def __init__(self, pool, url: str, stream: str, prefix: str):
        self.pool, self.url, self.stream, self.prefix = pool, url, stream, prefix
        self.reader = LicenceReader(pool)

    @contextlib.asynccontextmanager
    async def running(self, *, batch: int = 100, url: str | None = None, fetch_timeout: float = 1.0):
        link = NatsLink(url or self.url, "kit-test", stream=self.stream, subjects=[f"{self.prefix}.>"])
        await link.start(wait=5)
        consumer = EventConsumer(pool=self.pool, link=link, stream=self.stream, subject_prefix=self.prefix,
                                 projection=LicensingProjection(), durable="licensing", batch=batch,
                                 fetch_timeout=fetch_timeout)
        stop = asyncio.Event()
        task = asyncio.create_task(consumer.run(stop))
        try:
            yield consumer
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
            await link.close()

    async def snapshot(self) -> tuple[dict, dict]:
        views = await self.reader.all_views()
        histories = {a: await self.reader.history(a) for a in views}
        return views, histories


async def make_kit(db_url: str, nats_url: str, stream: str, prefix: str) -> Kit:
    pool = await open_pool(db_url, min_size=1, max_size=4)
    await migrate(pool, COMPONENT, MIGRATIONS)
    return Kit(pool, nats_url, stream, prefix)


@pytest.fixture
async def kit(new_database, nats_names):
    k = await make_kit(new_database("kit"), nats_names.url, nats_names.stream, nats_names.prefix)
    yield k
    await k.pool.close()


async def test_stopping_releases_the_pull_subscription(kit):
    """A stopped consumer leaves no subscription behind: closing the connection
    afterwards must not wait for the server's late answer to the last pull."""
    link = NatsLink(kit.url, "kit-test", stream=kit.stream, subjects=[f"{kit.prefix}.>"])
    await link.start(wait=5)
    try:
        consumer = EventConsumer(pool=kit.pool, link=link, stream=kit.stream, subject_prefix=kit.prefix,
                                 projection=LicensingProjection())
        stop = asyncio.Event()
        task = asyncio.create_task(consumer.run(stop))
        await asyncio.sleep(1.5)  # at least one empty fetch
        stop.set()
        await asyncio.wait_for(task, 10)
        mux = link.nc._resp_sub_prefix.decode()  # the client's own request inbox stays
        left = [s.subject for s in link.nc._subs.values() if not s.subject.startswith(mux)]
        assert left == [], "the durable's pull subscription is still open after run() returned"
    finally:
        await link.close()


async def test_catches_up_from_the_start_and_redelivered_duplicates_count_once(kit):
    story = random_story(300, n_accounts=10)
    await publish(kit.url, kit.stream, kit.prefix, story.envelopes)
    # the same events again, as a relay retrying after JetStream's dedup window would store them
    again = story.envelopes[::3]
    await publish(kit.url, kit.stream, kit.prefix, again, msg_ids=[f"{e.id}-retry" for e in again])
    async with kit.running():
        await eventually(lambda: caught_up(kit.pool, story), what="catch-up")
        await asyncio.sleep(0.3)  # let the duplicates at the end be consumed too
    views, histories = await kit.snapshot()
    assert views == story.expected()
    for account, history in histories.items():
        own = [(h["type"], h["version"]) for h in history if h["type"] != "ReferralCreditEarned"]
        assert len(own) == len(set(own)), f"an event was applied twice on {account}"


async def test_an_event_after_an_idle_spell_is_applied_without_waiting_for_the_pull_to_expire(kit):
    """A pull for a whole batch that gets one message would hold it until the pull
    expires; an idle consumer must pull for one and hand it over at once."""
    story = Story()
    account = story.create("Acme")
    await publish(kit.url, kit.stream, kit.prefix, story.envelopes)
    async with kit.running(batch=100, fetch_timeout=8.0):
        await eventually(lambda: caught_up(kit.pool, story), what="catch-up")
        await asyncio.sleep(0.5)  # idle: the consumer now waits in a long pull
        story.add_member(account, "late@example.com")
        await publish(kit.url, kit.stream, kit.prefix, story.envelopes[-1:])
        # far less than the 8 s pull: the event must not sit in the client until it expires
        await eventually(lambda: caught_up(kit.pool, story), timeout=4.0, what="the late event")


async def test_events_out_of_order_in_the_stream_are_applied_in_version_order(kit):
    story = Story()
    account = story.create("Acme")
    for i in range(4):
        story.add_member(account, f"u{i}@example.com")
    shuffled = [story.envelopes[i] for i in (0, 1, 3, 2, 5, 4)]  # v1 v2 v4 v3 v6 v5
    await publish(kit.url, kit.stream, kit.prefix, shuffled)
    async with kit.running():
        await eventually(lambda: caught_up(kit.pool, story), what="catch-up")
    views, histories = await kit.snapshot()
    assert views == story.expected()
    assert [h["version"] for h in histories[account]] == [1, 2, 3, 4, 5, 6]


async def test_a_gap_waits_for_the_missing_event_then_heals(kit):
    story = Story()
    account = story.create("Acme")           # v1, v2
    story.add_member(account, "bob@example.com")   # v3
    story.add_member(account, "carol@example.com")  # v4
    first, second, third, fourth = story.envelopes
    await publish(kit.url, kit.stream, kit.prefix, [first, second, fourth])  # v3 missing
    async with kit.running():
        await eventually(lambda: applied_versions(kit.pool), what="the first events")
        await asyncio.sleep(0.5)
        assert await applied_versions(kit.pool) == {account: 2}  # v4 is not applied over the gap
        await publish(kit.url, kit.stream, kit.prefix, [third])
        await eventually(lambda: caught_up(kit.pool, story), what="the gap to heal")
    assert (await kit.snapshot())[0] == story.expected()


async def test_rebuild_from_scratch_equals_the_incremental_result(kit):
    story = random_story(400, n_accounts=12, seed=11)
    await publish(kit.url, kit.stream, kit.prefix, story.envelopes)
    async with kit.running() as consumer:
        await eventually(lambda: caught_up(kit.pool, story), what="catch-up")
        incremental = await kit.snapshot()
        assert incremental[0] == story.expected()
        applied = await consumer.rebuild()
    assert applied == len(story.envelopes)
    assert await kit.snapshot() == incremental


async def test_two_replicas_sharing_the_database_and_the_durable_stay_exact(kit):
    """Messages of one account split between two replicas: each applies in order or heals."""
    story = random_story(600, n_accounts=8, seed=13)
    await publish(kit.url, kit.stream, kit.prefix, story.envelopes)
    async with kit.running(batch=10), kit.running(batch=10):
        await eventually(lambda: caught_up(kit.pool, story), timeout=30, what="catch-up by two replicas")
    views, histories = await kit.snapshot()
    assert views == story.expected()
    for history in histories.values():
        own = [h["version"] for h in history if h["type"] != "ReferralCreditEarned"]
        assert own == sorted(set(own))


async def test_messages_a_dead_consumer_held_come_back_at_once(kit):
    """A process killed with fetched, unacked messages: its successor must not wait
    for `ack_wait` (30 s) to get them back, even when nothing later reveals a gap."""
    story = Story()
    account = story.create("Acme")
    story.add_member(account, "bob@example.com")
    await publish(kit.url, kit.stream, kit.prefix, story.envelopes[:1])
    async with kit.running():  # creates the durable, applies v1
        await eventually(lambda: applied_versions(kit.pool), what="v1")
    await publish(kit.url, kit.stream, kit.prefix, story.envelopes[1:])
    # a consumer that dies holding the account's last events (fetched, never acked)
    nc = await nats.connect(kit.url)
    held = await nc.jetstream().pull_subscribe(f"{kit.prefix}.>", durable="licensing", stream=kit.stream)
    assert len(await held.fetch(10, timeout=2)) == 2
    await nc.close()
    async with kit.running():
        await eventually(lambda: caught_up(kit.pool, story), timeout=10, what="the held events")
    assert (await kit.snapshot())[0] == story.expected()


async def test_resumes_exactly_after_a_nats_outage(kit, tmp_path):
    server = start_nats(tmp_path / "nats")
    port = server.port
    try:
        story = random_story(600, n_accounts=12, seed=5)
        half = len(story.envelopes) // 2
        await publish(server.url, kit.stream, kit.prefix, story.envelopes[:half])
        async with kit.running(batch=20, url=server.url):
            await eventually(lambda: applied_versions(kit.pool), what="some progress")
            server.stop()  # NATS goes away mid-stream
            await asyncio.sleep(1.5)
            server = start_nats(tmp_path / "nats", port)  # back, same store: stream and durable kept
            await publish(server.url, kit.stream, kit.prefix, story.envelopes[half:])
            await eventually(lambda: caught_up(kit.pool, story), timeout=30, what="catch-up after the outage")
        assert (await kit.snapshot())[0] == story.expected()
    finally:
        server.stop()


def _consumer_process(env: dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "licensing_consumer", *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)


async def test_kill_9_mid_stream_then_restart_gives_exact_licences(kit, new_database):
    story = random_story(2000, n_accounts=30, seed=3)
    await publish(kit.url, kit.stream, kit.prefix, story.envelopes)
    db_url = new_database("licensing_proc")
    env = {**os.environ, "LICENSING_DATABASE_URL": db_url, "NATS_URL": kit.url, "NATS_STREAM": kit.stream,
           "NATS_SUBJECT_PREFIX": kit.prefix, "LICENSING_PORT": str(free_port()), "LOG_LEVEL": "warning",
           "IDENTITY_URL": "http://127.0.0.1:9"}
    proc_kit = await make_kit(db_url, kit.url, kit.stream, kit.prefix)
    proc = _consumer_process(env)
    try:
        async def midway():
            if proc.poll() is not None:
                raise AssertionError(proc.stderr.read().decode())
            return sum((await applied_versions(proc_kit.pool)).values()) >= 400
        await eventually(midway, timeout=20, what="the consumer to be mid-stream")
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
        done = sum((await applied_versions(proc_kit.pool)).values())
        assert done < len(story.envelopes), "killed too late to prove anything"

        proc = _consumer_process(env)
        await eventually(lambda: caught_up(proc_kit.pool, story), timeout=25, what="catch-up after kill -9")
        assert (await proc_kit.snapshot())[0] == story.expected()
        incremental = await proc_kit.snapshot()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    # and the one-command rebuild gives the same read model
    rebuild = subprocess.run([sys.executable, "-m", "licensing_consumer", "rebuild"], cwd=ROOT, env=env,
                             capture_output=True, timeout=60)
    assert rebuild.returncode == 0, rebuild.stderr.decode()
    assert f"{len(story.envelopes)} events applied" in rebuild.stdout.decode()
    assert await proc_kit.snapshot() == incremental
    await proc_kit.pool.close()
