"""The consumer kit: apply account events to a read model exactly once, in order.

Both the identity projector and the licensing consumer stand on this, so the
hard parts live once:

- a durable JetStream pull consumer (ack explicit) tolerant of NATS outages;
- per-account bookkeeping: the last applied `streamversion` of each account is
  stored in the consumer's own database, in the same transaction as the
  projection's effects, and the message is acked only after that commit;
- an older version is a duplicate (ack, skip); a newer-than-next one is a gap:
  the kit reads the account's missing events back from the stream and applies
  them in version order (healing), then carries on;
- `rebuild()` empties the read model and replays the whole stream;
- graceful shutdown (`stop` event), metrics (applied, duplicates, gaps, lag).

A projection is any object with a `name`, an async `apply(conn, envelope)`
(run inside the kit's transaction; ignore unknown types) and an async
`reset(conn)` (empty the read model, for rebuilds).
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable
from typing import Protocol

from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from prometheus_client import Counter, Gauge
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from pydantic import ValidationError

from shared.bus import NatsLink
from shared.events import Envelope

log = logging.getLogger(__name__)

POSITIONS_MIGRATION = """
CREATE TABLE IF NOT EXISTS consumer_positions (
    consumer   text        NOT NULL,
    account_id text        NOT NULL,
    version    integer     NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, account_id)
);
"""

APPLIED = Counter("consumer_events_applied_total", "Events applied to the read model", ["consumer"])
DUPLICATES = Counter("consumer_events_duplicate_total", "Events skipped as already applied", ["consumer"])
GAPS = Counter("consumer_gaps_total", "Events that arrived before their predecessors", ["consumer"])
REJECTED = Counter("consumer_events_rejected_total", "Messages that are not valid events", ["consumer"])
LAG = Gauge("consumer_lag_messages", "Messages in the stream not yet delivered to the consumer", ["consumer"])


class Projection(Protocol):
    name: str

    async def apply(self, conn: AsyncConnection, event: Envelope) -> None: ...

    async def reset(self, conn: AsyncConnection) -> None: ...


class Outcome(enum.Enum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    GAP = "gap"


async def applied_version(conn: AsyncConnection, consumer: str, account_id: str) -> int:
    cur = await conn.execute(
        "SELECT version FROM consumer_positions WHERE consumer = %s AND account_id = %s", (consumer, account_id)
    )
    row = await cur.fetchone()
    return row[0] if row else 0


async def apply_event(
    pool: AsyncConnectionPool,
    projection: Projection,
    event: Envelope,
    *,
    notify_channel: str | None = None,
) -> Outcome:
    """Apply one event in one transaction with its position; exactly once, in order."""
    consumer, account_id, version = projection.name, event.account_id, event.streamversion
    async with pool.connection() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO consumer_positions (consumer, account_id, version) VALUES (%s, %s, 0) "
            "ON CONFLICT DO NOTHING",
            (consumer, account_id),
        )
        cur = await conn.execute(
            "SELECT version FROM consumer_positions WHERE consumer = %s AND account_id = %s FOR UPDATE",
            (consumer, account_id),
        )
        (last,) = await cur.fetchone()
        if version <= last:
            return Outcome.DUPLICATE
        if version > last + 1:
            return Outcome.GAP
        await projection.apply(conn, event)
        await conn.execute(
            "UPDATE consumer_positions SET version = %s, updated_at = now() WHERE consumer = %s AND account_id = %s",
            (version, consumer, account_id),
        )
        if notify_channel:
            await conn.execute("SELECT pg_notify(%s, %s)", (notify_channel, f"{account_id}:{version}"))
    return Outcome.APPLIED


class EventConsumer:
    """Runs a projection from the account stream on a durable pull consumer."""

    def __init__(
        self,
        *,
        pool: AsyncConnectionPool,
        link: NatsLink,
        stream: str,
        subject_prefix: str,
        projection: Projection,
        durable: str | None = None,
        batch: int = 100,
        fetch_timeout: float = 1.0,
        notify_channel: str | None = None,
        on_applied: Callable[[str, int], None] | None = None,
    ):
        self.pool = pool
        self.link = link
        self.stream = stream
        self.prefix = subject_prefix
        self.projection = projection
        self.durable = durable or projection.name
        self.batch = batch
        self.fetch_timeout = fetch_timeout
        self.notify_channel = notify_channel
        self.on_applied = on_applied
        self._labels = (projection.name,)

    # -- one event -----------------------------------------------------------------

    async def _apply(self, event: Envelope) -> Outcome:
        outcome = await apply_event(self.pool, self.projection, event, notify_channel=self.notify_channel)
        if outcome is Outcome.APPLIED:
            APPLIED.labels(*self._labels).inc()
            if self.on_applied:
                self.on_applied(event.account_id, event.streamversion)
        elif outcome is Outcome.DUPLICATE:
            DUPLICATES.labels(*self._labels).inc()
        return outcome

    async def handle(self, event: Envelope) -> Outcome:
        """Apply `event`; on a gap, heal its account from the stream first."""
        outcome = await self._apply(event)
        if outcome is Outcome.GAP:
            GAPS.labels(*self._labels).inc()
            log.info("%s: gap before %s v%d; reading the account back from the stream",
                     self.projection.name, event.account_id, event.streamversion)
            await self.replay(event.account_id)
            outcome = await self._apply(event)
        return outcome

    # -- reading back from the stream -----------------------------------------------

    async def _read_stream(self, filter_subject: str):
        """Yield the events of `filter_subject` from the stream's start (ephemeral consumer)."""
        js = await self.link.wait_connected()
        sub = await js.pull_subscribe(
            filter_subject, stream=self.stream,
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.NONE,
                inactive_threshold=30.0, filter_subject=filter_subject,
            ),
        )
        try:
            remaining = (await sub.consumer_info()).num_pending
            while remaining > 0:
                try:
                    msgs = await sub.fetch(min(remaining, 256), timeout=5)
                except TimeoutError:
                    break
                for msg in msgs:
                    remaining = msg.metadata.num_pending
                    try:
                        yield Envelope.from_json(msg.data)
                    except ValidationError:
                        REJECTED.labels(*self._labels).inc()
        finally:
            await sub.unsubscribe()

    async def replay(self, account_id: str | None = None) -> int:
        """Apply every not-yet-applied event of one account (or all), in version order.

        Returns the number of events applied. Events a relay retry stored out of
        order are buffered per account until their predecessors arrive.
        """
        subject = f"{self.prefix}.{account_id}.>" if account_id else f"{self.prefix}.>"
        pending: dict[str, dict[int, Envelope]] = {}
        applied = 0
        async for event in self._read_stream(subject):
            waiting = pending.setdefault(event.account_id, {})
            waiting[event.streamversion] = event
            # apply this account's buffered events while they are next in line
            for version in sorted(waiting):
                outcome = await self._apply(waiting[version])
                if outcome is Outcome.GAP:
                    break
                del waiting[version]
                applied += outcome is Outcome.APPLIED
        stuck = {acct: sorted(v) for acct, v in pending.items() if v}
        if stuck:
            log.warning("%s: events still waiting for missing predecessors: %s", self.projection.name, stuck)
        return applied

    async def rebuild(self) -> int:
        """Empty the read model and its positions, then replay the whole stream."""
        async with self.pool.connection() as conn, conn.transaction():
            await self.projection.reset(conn)
            await conn.execute("DELETE FROM consumer_positions WHERE consumer = %s", (self.projection.name,))
        return await self.replay()

    # -- the durable loop -------------------------------------------------------------

    def _durable_config(self) -> ConsumerConfig:
        return ConsumerConfig(
            durable_name=self.durable, deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT, ack_wait=30.0, max_deliver=-1,
            max_ack_pending=10_000, filter_subject=f"{self.prefix}.>",
        )

    async def _subscribe(self, *, reclaim: bool = False):
        js = await self.link.wait_connected()
        if reclaim:
            if await self._read_model_is_empty():
                await self._restart_from_the_start(js)
            else:
                await self._reclaim_in_flight(js)
        return await js.pull_subscribe(
            f"{self.prefix}.>", durable=self.durable, stream=self.stream, config=self._durable_config(),
        )

    async def _read_model_is_empty(self) -> bool:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT 1 FROM consumer_positions WHERE consumer = %s LIMIT 1", (self.projection.name,)
            )
            return await cur.fetchone() is None

    async def _restart_from_the_start(self, js) -> None:
        """An empty read model (a new or wiped database) must see the stream from its
        first event, whatever position the durable remembers from an earlier database."""
        try:
            await js.delete_consumer(self.stream, self.durable)
            log.info("%s: empty read model: durable %s restarts from the stream's start",
                     self.projection.name, self.durable)
        except NotFoundError:
            pass

    async def _reclaim_in_flight(self, js) -> None:
        """Messages a dead predecessor fetched but never acked would come back only
        after `ack_wait`; an account whose last events they are would stay stale
        until then. Start the durable again just after its ack floor so they come at
        once (any applied meanwhile are duplicates, skipped)."""
        try:
            info = await js.consumer_info(self.stream, self.durable)
            if not info.num_ack_pending:
                return
            config = self._durable_config()
            config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
            config.opt_start_seq = info.ack_floor.stream_seq + 1
            await js.delete_consumer(self.stream, self.durable)
            await js.add_consumer(self.stream, config)
            log.info("%s: %d in-flight messages of a previous run reclaimed from stream seq %d",
                     self.projection.name, info.num_ack_pending, config.opt_start_seq)
        except NotFoundError:
            return  # a new durable: nothing was in flight
        except Exception as e:  # noqa: BLE001 - e.g. a replica recreated it meanwhile: redelivery covers it
            log.warning("%s: could not reclaim in-flight messages (%s)", self.projection.name, e)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set. Unacked messages are redelivered later."""
        sub = None
        reclaim = True  # once per run: what a crashed predecessor held comes back now
        backlog = self.batch  # unknown at start: assume a catch-up
        try:
            while not stop.is_set():
                try:
                    if sub is None:
                        sub = await self._subscribe(reclaim=reclaim)
                        reclaim = False
                    # nats-py hands over a pull's messages only when the batch is full
                    # or the pull expires: catching up, pull what is known to wait;
                    # idle, pull for one, so a new event is applied the moment it comes.
                    try:
                        msgs = await sub.fetch(min(self.batch, max(backlog, 1)), timeout=self.fetch_timeout)
                    except TimeoutError:
                        continue
                    for msg in msgs:
                        if stop.is_set():
                            break  # left unacked: redelivered to whoever runs next
                        backlog = await self._handle_message(msg)
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # noqa: BLE001 - NATS or the database is away; keep going
                    log.warning("%s: consumer loop error (%s: %s); retrying",
                                self.projection.name, type(e).__name__, e)
                    await _unsubscribe(sub)
                    sub = None
                    try:
                        await asyncio.wait_for(stop.wait(), 1.0)
                    except TimeoutError:
                        pass
        finally:
            await _unsubscribe(sub)

    async def _handle_message(self, msg) -> int:
        """Apply, then ack (or nak/term) one message; return the messages still pending."""
        try:
            event = Envelope.from_json(msg.data)
        except ValidationError:
            REJECTED.labels(*self._labels).inc()
            log.error("%s: not a valid event on %s; terminated", self.projection.name, msg.subject)
            await msg.term()
            return msg.metadata.num_pending
        try:
            outcome = await self.handle(event)
        except Exception:
            await msg.nak(delay=1.0)  # not applied: let it come back once the database answers
            raise
        if outcome is Outcome.GAP:
            await msg.nak(delay=1.0)  # predecessors not in the stream yet
        else:
            await msg.ack()
        pending = msg.metadata.num_pending
        LAG.labels(*self._labels).set(pending)
        return pending


async def _unsubscribe(sub) -> None:
    """Drop a pull subscription. Left open, the server's late answer to the last pull
    sits unread in it, and the connection's drain() then waits for it in vain."""
    if sub is None:
        return
    try:
        await sub.unsubscribe()
    except Exception:  # noqa: BLE001 - the connection is already closed or reconnecting
        pass
