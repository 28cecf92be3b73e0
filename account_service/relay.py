"""The relay: every committed event, in commit order, to NATS JetStream.

How no event is skipped (the commit-order problem). Positions come from an
identity column, taken at INSERT but visible at COMMIT, so tailing by position
alone can pass a lower position that commits later. Each event row therefore
records `xid`, its transaction's 64-bit id, and the relay reads

    WHERE (xid, position) > (checkpoint) AND xid < pg_snapshot_xmin(pg_current_snapshot())
    ORDER BY xid, position

`pg_snapshot_xmin` is the oldest transaction id still running: every
transaction with a smaller id has committed or rolled back, so no row with a
smaller (xid, position) can ever appear after we read past it. Rolled-back
rows are never visible, so never published. A transaction still running only
holds back the rows of later transactions until it ends (a bounded delay, no
lock on the write path). Per account, `EventStore.append` guarantees that
version n+1 is written by a younger transaction than version n, so
(xid, position) order is also each stream's version order.

The relay's checkpoint (xid, position) lives in `relay_checkpoints`, updated
after JetStream acknowledged the whole batch. A crash between the ack and the
checkpoint republishes the batch; JetStream drops the repeats by `Nats-Msg-Id`
(the event id) within its duplicate window.

Per-account order on the stream also survives a broken NATS connection. The
relay publishes on its own connection, opened without automatic reconnection:
messages of one connection are stored in the order sent, so what a broken
connection delivered is a prefix of the batch, and the retry (a new
connection, the same batch from the checkpoint, duplicates dropped) keeps the
order. A reconnecting client would instead flush its buffered later messages
before the retry of an earlier one lost in flight.

One replica relays at a time: the leader holds a session-level advisory lock
on its own connection (if that connection dies, the lock goes with it and
another replica takes over). The leader LISTENs on the store's channel to wake
at once after a commit, and also polls every `poll_interval` seconds: a
notification is only a hint, never the source of truth. Committed events held back
by an older transaction still running elsewhere on the server are looked at
again within milliseconds (that transaction's end notifies nobody). When NATS is down,
writes keep succeeding; the relay retries with back-off and the backlog drains
when NATS returns.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import nats
import psycopg
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from prometheus_client import Counter, Gauge
from psycopg.rows import dict_row

from account_service.eventstore import _COLUMNS, NOTIFY_CHANNEL, StoredEvent
from shared.bus import OutgoingMessage, ensure_stream, publish_batch
from shared.events import subject_for

log = logging.getLogger(__name__)

LOCK_KEY = (0x6D63, 0x72656C)  # ("mc", "rel"): one advisory lock per database
PUBLISHED = Counter("account_relay_published_total", "Events published to JetStream by the relay")
FAILURES = Counter("account_relay_failures_total", "Relay batches that failed (retried)")
LEADER = Gauge("account_relay_leader", "1 when this replica is the relay leader")
CHECKPOINT = Gauge("account_relay_checkpoint_position", "Position of the last event the relay published")


@dataclass(frozen=True, slots=True)
class Checkpoint:
    xid: int
    position: int


class Relay:
    def __init__(
        self,
        database_url: str,
        nats_url: str,
        *,
        subject_prefix: str,
        stream: str | None = None,
        name: str = "main",
        batch_size: int = 500,
        poll_interval: float = 1.0,
        notify_channel: str = NOTIFY_CHANNEL,
        publish_timeout: float = 5.0,
    ):
        self.database_url = database_url
        self.nats_url = nats_url
        self.prefix = subject_prefix
        self.stream = stream  # created (or given our subjects) when the relay connects, if set
        self.name = name
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.notify_channel = notify_channel
        self.publish_timeout = publish_timeout
        self.is_leader = False
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None

    # ------------------------------------------------------------------ NATS

    async def _jetstream(self) -> JetStreamContext:
        """The relay's own connection (no automatic reconnection: see the module doc)."""
        if self._nc is not None and self._nc.is_connected and self._js is not None:
            return self._js
        await self.close_nats()
        nc = await nats.connect(
            self.nats_url, name=f"account-relay-{self.name}", connect_timeout=2, allow_reconnect=False,
            error_cb=self._on_error,
        )
        try:
            js = nc.jetstream(timeout=self.publish_timeout)
            if self.stream:
                await ensure_stream(js, self.stream, [f"{self.prefix}.>"])
        except BaseException:
            await nc.close()
            raise
        self._nc, self._js = nc, js
        return js

    async def _on_error(self, e: Exception) -> None:
        log.debug("relay NATS error: %s", e)

    async def close_nats(self) -> None:
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None and not nc.is_closed:
            try:
                await asyncio.wait_for(nc.close(), 2)
            except Exception:  # noqa: BLE001 - it is broken anyway
                pass

    async def close(self) -> None:
        await self.close_nats()

    # ------------------------------------------------------------------ one pass

    async def load_checkpoint(self, conn: psycopg.AsyncConnection) -> Checkpoint:
        cur = await conn.execute(
            "SELECT xid::text, position FROM relay_checkpoints WHERE relay = %s", (self.name,)
        )
        row = await cur.fetchone()
        return Checkpoint(int(row[0]), row[1]) if row else Checkpoint(0, 0)

    async def pending(self, conn: psycopg.AsyncConnection, after: Checkpoint, limit: int) -> list[StoredEvent]:
        """Committed, final events after `after`, in commit order (see the module doc)."""
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(
            f"""SELECT {_COLUMNS} FROM events
                WHERE (xid, position) > (%s::text::xid8, %s)
                  AND xid < pg_snapshot_xmin(pg_current_snapshot())
                ORDER BY xid, position
                LIMIT %s""",
            (str(after.xid), after.position, limit),
        )
        return [StoredEvent.from_row(r) for r in await cur.fetchall()]

    async def save_checkpoint(self, conn: psycopg.AsyncConnection, cp: Checkpoint) -> None:
        await conn.execute(
            """INSERT INTO relay_checkpoints (relay, xid, position) VALUES (%s, %s::text::xid8, %s)
               ON CONFLICT (relay) DO UPDATE SET xid = excluded.xid, position = excluded.position,
                                                 updated_at = now()""",
            (self.name, str(cp.xid), cp.position),
        )

    def message(self, event: StoredEvent) -> OutgoingMessage:
        return OutgoingMessage(
            subject=subject_for(self.prefix, event.account_id, event.type),
            payload=event.envelope().to_json(),
            msg_id=event.event_id,
        )

    async def run_once(self, conn: psycopg.AsyncConnection) -> int:
        """Publish one batch; return how many events were published (0: nothing ready).

        `conn` is an autocommit connection. Raises when NATS does not ack."""
        checkpoint = await self.load_checkpoint(conn)
        batch = await self.pending(conn, checkpoint, self.batch_size)
        if not batch:
            return 0
        js = await self._jetstream()
        try:
            await publish_batch(js, [self.message(e) for e in batch], timeout=self.publish_timeout)
        except BaseException:
            await self.close_nats()  # never reuse a connection that may have lost part of a batch
            raise
        last = batch[-1]
        await self.save_checkpoint(conn, Checkpoint(last.xid, last.position))
        PUBLISHED.inc(len(batch))
        CHECKPOINT.set(last.position)
        return len(batch)

    async def held_back(self, conn: psycopg.AsyncConnection) -> bool:
        """Are there committed events past the checkpoint that a still-running older
        transaction (anywhere on the server) keeps from being published yet?"""
        cp = await self.load_checkpoint(conn)
        cur = await conn.execute(
            "SELECT EXISTS (SELECT 1 FROM events WHERE (xid, position) > (%s::text::xid8, %s))",
            (str(cp.xid), cp.position),
        )
        return (await cur.fetchone())[0]

    async def drain(self, conn: psycopg.AsyncConnection) -> int:
        """Publish until nothing committed is left; return the count."""
        total = 0
        while n := await self.run_once(conn):
            total += n
        return total

    # ------------------------------------------------------------------ the loop

    async def run(self) -> None:
        """Relay forever (cancel the task to stop): elect, listen, publish, poll."""
        delay = 0.2
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.database_url, autocommit=True, connect_timeout=5
                ) as conn:
                    await self._lead(conn)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - the database went away: reconnect
                log.warning("relay connection lost (%s); reconnecting", e)
            finally:
                if self.is_leader:
                    delay = 0.2  # we had been leading: a fresh failure, retry soon
                self.is_leader = False
                LEADER.set(0)
                await self.close_nats()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _lead(self, conn: psycopg.AsyncConnection) -> None:
        while True:
            cur = await conn.execute("SELECT pg_try_advisory_lock(%s, %s)", LOCK_KEY)
            if (await cur.fetchone())[0]:
                break
            await asyncio.sleep(max(self.poll_interval, 1.0))  # another replica relays
        self.is_leader = True
        LEADER.set(1)
        log.info("relay %s is the leader", self.name)
        await conn.execute(f'LISTEN "{self.notify_channel}"')
        backoff = 0.1
        recheck = 0.002
        while True:
            try:
                n = await self.run_once(conn)
                backoff = 0.1
            except (psycopg.Error, asyncio.CancelledError):
                raise
            except Exception as e:  # noqa: BLE001 - NATS down or slow: retry the same batch
                FAILURES.inc()
                log.info("relay publish failed (%s); retrying in %.1fs", type(e).__name__, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            if n == self.batch_size:
                continue  # more is ready
            if await self.held_back(conn):
                # The transaction holding them back sends no notification when it
                # ends (it may not even be ours): look again shortly.
                await asyncio.sleep(recheck)
                recheck = min(recheck * 2, 0.1)
                continue
            recheck = 0.002
            # Wait for a commit notification, or poll anyway after poll_interval.
            async for _ in conn.notifies(timeout=self.poll_interval, stop_after=1):
                pass
