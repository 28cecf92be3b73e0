"""The membership read model, projected from the account events.

`MembershipProjection` is applied by the consumer kit (`shared.consumer`):
exactly once per event, in `streamversion` order per account, in the same
transaction as the kit's position row, acked after commit.

`VersionWaiters` lets a switch with `min_version` wait until this account's
events are applied up to that version: woken by the kit's `on_applied` in
this process and by `LISTEN` on the projection's notify channel when another
replica (or worker) applied them; no polling loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

import psycopg
from psycopg import AsyncConnection

from shared.emails import normalize_email
from shared.errors import InvalidInput
from shared.events import Envelope

log = logging.getLogger(__name__)

PROJECTION_NAME = "identity-memberships"
NOTIFY_CHANNEL = "identity_memberships"

MIGRATION = """
CREATE TABLE IF NOT EXISTS rm_accounts (
    account_id text PRIMARY KEY,
    name       text NOT NULL,
    country    text NOT NULL
);
CREATE TABLE IF NOT EXISTS rm_memberships (
    email      text   NOT NULL,
    account_id text   NOT NULL,
    role       text   NOT NULL,
    rights     text[] NOT NULL,
    PRIMARY KEY (email, account_id)
);
CREATE INDEX IF NOT EXISTS rm_memberships_account ON rm_memberships (account_id);
"""


def _email(raw: str) -> str:
    try:
        return normalize_email(raw)
    except InvalidInput:
        return raw.strip().casefold()


class MembershipProjection:
    """Accounts (name, country) and memberships keyed by normalised email + account."""

    name = PROJECTION_NAME

    async def apply(self, conn: AsyncConnection, event: Envelope) -> None:
        data, account_id = event.data, event.account_id
        match event.type:
            case "AccountCreated":
                await conn.execute(
                    "INSERT INTO rm_accounts (account_id, name, country) VALUES (%s, %s, %s) "
                    "ON CONFLICT (account_id) DO UPDATE SET name = excluded.name, country = excluded.country",
                    (account_id, data["name"], data["country"]),
                )
            case "AccountRenamed":
                await conn.execute("UPDATE rm_accounts SET name = %s WHERE account_id = %s",
                                   (data["name"], account_id))
            case "MemberAdded" | "MemberRoleChanged":
                await conn.execute(
                    "INSERT INTO rm_memberships (email, account_id, role, rights) VALUES (%s, %s, %s, %s) "
                    "ON CONFLICT (email, account_id) DO UPDATE SET role = excluded.role, rights = excluded.rights",
                    (_email(data["email"]), account_id, data["role"], list(data.get("rights") or ())),
                )
            case "MemberRemoved":
                await conn.execute("DELETE FROM rm_memberships WHERE email = %s AND account_id = %s",
                                   (_email(data["email"]), account_id))
            case _:
                pass  # PlanChanged and types we do not know yet change nothing here

    async def reset(self, conn: AsyncConnection) -> None:
        await conn.execute("DELETE FROM rm_memberships")
        await conn.execute("DELETE FROM rm_accounts")


class VersionWaiters:
    """Futures waiting for (account, version) to be applied to the read model."""

    def __init__(self) -> None:
        self._waiting: dict[str, list[tuple[int, asyncio.Future]]] = defaultdict(list)
        self.notifications = 0  # NOTIFYs received from the projection (any replica)

    def applied(self, account_id: str, version: int) -> None:
        """Wake the waiters of `account_id` whose version is now reached (any thread-free caller)."""
        waiters = self._waiting.get(account_id)
        if not waiters:
            return
        keep = []
        for wanted, fut in waiters:
            if wanted <= version:
                if not fut.done():
                    fut.set_result(version)
            elif not fut.done():
                keep.append((wanted, fut))
        if keep:
            self._waiting[account_id] = keep
        else:
            self._waiting.pop(account_id, None)

    def wake_all(self) -> None:
        """Wake everyone for a re-check (after a reconnect, notifications may have been missed)."""
        for waiters in self._waiting.values():
            for _, fut in waiters:
                if not fut.done():
                    fut.set_result(None)
        self._waiting.clear()

    def register(self, account_id: str, version: int) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        self._waiting[account_id].append((version, fut))
        return fut

    def discard(self, account_id: str, fut: asyncio.Future) -> None:
        waiters = self._waiting.get(account_id)
        if waiters:
            self._waiting[account_id] = [(v, f) for v, f in waiters if f is not fut]
            if not self._waiting[account_id]:
                del self._waiting[account_id]


async def listen_forever(url: str, waiters: VersionWaiters, ready: asyncio.Event | None = None) -> None:
    """LISTEN on the projection's channel and wake waiters; reconnect forever."""
    delay = 0.2
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(url, autocommit=True, connect_timeout=5) as conn:
                await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                delay = 0.2
                waiters.wake_all()  # anything applied while we were not listening gets re-checked
                if ready is not None:
                    ready.set()
                async for note in conn.notifies():
                    waiters.notifications += 1
                    account_id, _, version = note.payload.rpartition(":")
                    try:
                        waiters.applied(account_id, int(version))
                    except ValueError:
                        continue
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - the database is away; keep trying
            log.warning("LISTEN %s failed (%s); reconnecting", NOTIFY_CHANNEL, e)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


async def run_as_leader(url: str, lock_name: str, run, stop: asyncio.Event, *, retry_seconds: float = 1.0,
                        check_seconds: float = 2.0) -> None:
    """Run `run(stop_event)` only while this process holds the session-level advisory
    lock `lock_name`: one projector among the workers and replicas at a time, with
    fail-over within about a second when the holder dies (its connection drops, the
    lock goes with it). Correctness never depends on it (the kit is exactly-once with
    any number of consumers); it only spares the replicas from racing each other
    over the same messages, which costs gap healing and redelivery delays."""
    while not stop.is_set():
        try:
            async with await psycopg.AsyncConnection.connect(url, autocommit=True, connect_timeout=5) as conn:
                while not stop.is_set():
                    cur = await conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (lock_name,))
                    (leader,) = await cur.fetchone()
                    if leader:
                        log.info("this process runs the membership projector")
                        lost = asyncio.Event()
                        task = asyncio.create_task(run(_either(stop, lost)))
                        try:
                            while not task.done():
                                await asyncio.wait({task}, timeout=check_seconds)
                                if not task.done():
                                    await conn.execute("SELECT 1")  # still holding the lock?
                        finally:
                            lost.set()
                            if not task.done():  # a short grace, then cancel: unacked messages come back
                                await asyncio.wait({task}, timeout=0.2)
                                task.cancel()
                        if not stop.is_set():
                            task.result()  # surface a crash of the projector
                        return
                    try:
                        await asyncio.wait_for(stop.wait(), retry_seconds)
                    except TimeoutError:
                        pass
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - database away or projector crashed: try again
            log.warning("projector leadership lost (%s: %s); retrying", type(e).__name__, e)
            try:
                await asyncio.wait_for(stop.wait(), retry_seconds)
            except TimeoutError:
                pass


def _either(a: asyncio.Event, b: asyncio.Event) -> asyncio.Event:
    """An event set as soon as `a` or `b` is."""
    both = asyncio.Event()

    async def watch(e: asyncio.Event) -> None:
        await e.wait()
        both.set()

    for e in (a, b):
        t = asyncio.create_task(watch(e))
        _WATCHERS.add(t)
        t.add_done_callback(_WATCHERS.discard)
    return both


_WATCHERS: set[asyncio.Task] = set()
