"""The event store: the account streams in the service's own PostgreSQL database.

The `events` table is at once the system of record and the outbox the relay
tails. Optimistic concurrency is the primary key (account_id, version): two
writers that decided against the same version cannot both insert the next one.

Each row also records `xid`, the 64-bit id of the transaction that wrote it
(`pg_current_xact_id()`). The relay orders by (xid, position) and reads only
rows whose xid is below the oldest transaction still running
(`pg_snapshot_xmin(pg_current_snapshot())`): a row with a smaller xid can then
never appear later, so a transaction that took its position early but commits
late is never skipped (see relay.py). For this to also keep each account's
order, the writer of version n+1 must have a larger xid than the writer of
version n; `append` checks it (in the same transaction) and refuses otherwise.

Uniqueness across streams lives in side tables written in the same transaction
as the events: `company_reservations` (one company id per country, one
account) and `referral_codes` (each account's own code).

psycopg errors never leave this module: they become our own exceptions.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import errors as pgerr
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from shared.errors import Conflict, Unavailable
from shared.events import EVENT_TYPES, AccountCreated, Envelope, EventData

NOTIFY_CHANNEL = "account_events"

MIGRATIONS: list[str] = [
    """
    CREATE TABLE events (
        position    bigint      GENERATED ALWAYS AS IDENTITY,
        account_id  text        NOT NULL,
        version     integer     NOT NULL CHECK (version >= 1),
        event_id    uuid        NOT NULL,
        type        text        NOT NULL,
        data        jsonb       NOT NULL,
        recorded_at timestamptz NOT NULL DEFAULT now(),
        xid         xid8        NOT NULL DEFAULT pg_current_xact_id(),
        CONSTRAINT events_stream_version PRIMARY KEY (account_id, version)
    );
    CREATE UNIQUE INDEX events_event_id ON events (event_id);
    CREATE UNIQUE INDEX events_position ON events (position);
    CREATE INDEX events_commit_order ON events (xid, position);

    CREATE TABLE company_reservations (
        country     text NOT NULL,
        company_id  text NOT NULL,
        account_id  text NOT NULL,
        reserved_at timestamptz NOT NULL DEFAULT now(),
        CONSTRAINT company_reservations_unique PRIMARY KEY (country, company_id)
    );

    CREATE TABLE referral_codes (
        code       text NOT NULL,
        account_id text NOT NULL UNIQUE,
        CONSTRAINT referral_codes_unique PRIMARY KEY (code)
    );

    CREATE TABLE relay_checkpoints (
        relay      text        PRIMARY KEY,
        xid        xid8        NOT NULL,
        position   bigint      NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now()
    );
    """,
]


class ConcurrencyError(Conflict):
    """Another writer appended to the stream first (retry the command)."""

    code = "concurrent_modification"


class ReferralCodeTaken(Conflict):
    """The generated referral code exists already (draw another one)."""

    code = "referral_code_taken"


@dataclass(frozen=True, slots=True)
class StoredEvent:
    position: int
    account_id: str
    version: int
    event_id: str
    type: str
    data: dict[str, Any]
    recorded_at: datetime
    xid: int

    def payload(self) -> EventData | None:
        cls = EVENT_TYPES.get(self.type)
        return cls.model_validate(self.data) if cls else None

    def envelope(self) -> Envelope:
        return Envelope(
            id=self.event_id, type=self.type, subject=self.account_id, time=self.recorded_at,
            streamversion=self.version, data=self.data,
        )

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> StoredEvent:
        return cls(
            position=row["position"], account_id=row["account_id"], version=row["version"],
            event_id=str(row["event_id"]), type=row["type"], data=row["data"],
            recorded_at=row["recorded_at"], xid=int(row["xid"]),
        )


_COLUMNS = "position, account_id, version, event_id, type, data, recorded_at, xid::text AS xid"


def translate(e: Exception) -> Exception:
    """Our exception for a psycopg/pool error."""
    if isinstance(e, pgerr.UniqueViolation):
        constraint = getattr(e.diag, "constraint_name", None)
        if constraint == "events_stream_version":
            return ConcurrencyError("the account was changed concurrently")
        if constraint == "company_reservations_unique":
            return Conflict("this company id already belongs to another account", code="company_id_taken")
        if constraint == "referral_codes_unique":
            return ReferralCodeTaken("referral code collision")
        return Conflict(f"uniqueness violated ({constraint})")
    if isinstance(e, pgerr.SerializationFailure | pgerr.DeadlockDetected):
        return ConcurrencyError("the account was changed concurrently")
    if isinstance(e, psycopg.OperationalError | PoolTimeout):
        return Unavailable("the account database is not reachable")
    return e


class EventStore:
    def __init__(self, pool: AsyncConnectionPool, *, notify_channel: str = NOTIFY_CHANNEL):
        self.pool = pool
        self.notify_channel = notify_channel

    async def append(
        self, account_id: str, expected_version: int, events: Sequence[EventData]
    ) -> list[StoredEvent]:
        """Append `events` after version `expected_version` of the stream, atomically.

        Raises ConcurrencyError when the stream is no longer at
        `expected_version`, Conflict(company_id_taken) when an AccountCreated
        claims a company id held by another account."""
        if not events:
            return []
        try:
            async with self.pool.connection() as conn, conn.transaction():
                return await self.append_in(conn, account_id, expected_version, events)
        except (psycopg.Error, PoolTimeout) as e:
            raise translate(e) from e

    async def append_in(
        self, conn: psycopg.AsyncConnection, account_id: str, expected_version: int, events: Sequence[EventData]
    ) -> list[StoredEvent]:
        """`append` inside the caller's open transaction on `conn` (the caller commits).

        psycopg errors are left to the caller's transaction (use `translate`)."""
        cur = conn.cursor(row_factory=dict_row)
        params: list[Any] = []
        values = []
        for i, event in enumerate(events, start=1):
            if event.account_id != account_id:
                raise ValueError("an event of another stream")
            values.append("(%s, %s, %s, %s, %s::jsonb)")
            params += [account_id, expected_version + i, uuid.uuid4(), event.type_name, event.model_dump_json()]
        await cur.execute(
            f"INSERT INTO events (account_id, version, event_id, type, data) VALUES {', '.join(values)} "
            f"RETURNING {_COLUMNS}",
            params,
        )
        rows = sorted((StoredEvent.from_row(r) for r in await cur.fetchall()), key=lambda r: r.version)
        if expected_version > 0:
            await self._check_predecessor(conn, account_id, expected_version)
        for event in events:
            if isinstance(event, AccountCreated):
                await self._reserve(conn, event)
        await conn.execute("SELECT pg_notify(%s, %s)", (self.notify_channel, account_id))
        return rows

    async def _check_predecessor(self, conn: psycopg.AsyncConnection, account_id: str, version: int) -> None:
        # Version `version` must be committed, and written by an older transaction than ours:
        # then ordering by (xid, position) keeps every stream's version order.
        cur = await conn.execute(
            "SELECT xid <= pg_current_xact_id() FROM events WHERE account_id = %s AND version = %s",
            (account_id, version),
        )
        row = await cur.fetchone()
        if row is None or not row[0]:
            raise ConcurrencyError("the account was changed concurrently")

    async def _reserve(self, conn: psycopg.AsyncConnection, event: AccountCreated) -> None:
        if event.company_id is not None:
            await conn.execute(
                "INSERT INTO company_reservations (country, company_id, account_id) VALUES (%s, %s, %s)",
                (event.country, event.company_id, event.account_id),
            )
        await conn.execute(
            "INSERT INTO referral_codes (code, account_id) VALUES (%s, %s)",
            (event.referral_code, event.account_id),
        )

    async def read_stream(self, account_id: str, *, after: int = 0, limit: int | None = None) -> list[StoredEvent]:
        """The events of one stream with version > `after`, oldest first."""
        query = f"SELECT {_COLUMNS} FROM events WHERE account_id = %s AND version > %s ORDER BY version"
        params: list[Any] = [account_id, after]
        if limit is not None:
            query += " LIMIT %s"
            params.append(limit)
        try:
            async with self.pool.connection() as conn:
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(query, params)
                return [StoredEvent.from_row(r) for r in await cur.fetchall()]
        except (psycopg.Error, PoolTimeout) as e:
            raise translate(e) from e

    async def referrer(self, code: str) -> str | None:
        """The account id whose referral code is `code`, if any."""
        try:
            async with self.pool.connection() as conn:
                cur = await conn.execute("SELECT account_id FROM referral_codes WHERE code = %s", (code,))
                row = await cur.fetchone()
                return row[0] if row else None
        except (psycopg.Error, PoolTimeout) as e:
            raise translate(e) from e

    async def head_position(self) -> int:
        try:
            async with self.pool.connection() as conn:
                cur = await conn.execute("SELECT coalesce(max(position), 0) FROM events")
                return (await cur.fetchone())[0]
        except (psycopg.Error, PoolTimeout) as e:
            raise translate(e) from e
