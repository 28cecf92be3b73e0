"""The licensing read model in PostgreSQL: licences, referrals, history.

`LicensingProjection` is what the consumer kit runs: `apply` is called inside
the kit's transaction (with the account's position row locked), so the
effects of one event and the position that records it commit together.
"""

from __future__ import annotations

import logging
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from licensing_consumer.domain import (
    HistoryEntry,
    Licence,
    evolve,
    referral_credit_entry,
    referral_credits,
    referral_of,
)
from shared.consumer import POSITIONS_MIGRATION
from shared.events import Envelope

log = logging.getLogger(__name__)

COMPONENT = "licensing"

MIGRATIONS: list[str] = [
    POSITIONS_MIGRATION,
    """
    CREATE TABLE licences (
        account_id text PRIMARY KEY,
        state      jsonb       NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now()
    );
    -- one row per referred account: referee is the account created with the code
    CREATE TABLE referrals (
        referee    text PRIMARY KEY,
        referrer   text        NOT NULL,
        time       timestamptz NOT NULL
    );
    CREATE INDEX referrals_by_referrer ON referrals (referrer);
    CREATE TABLE licence_history (
        id         bigserial   PRIMARY KEY,
        account_id text        NOT NULL,
        time       timestamptz NOT NULL,
        type       text        NOT NULL,
        version    integer     NOT NULL,
        details    jsonb       NOT NULL DEFAULT '{}'
    );
    CREATE INDEX licence_history_by_account ON licence_history (account_id, time, id);
    """,
]


async def _load(conn: AsyncConnection, account_id: str, *, lock: bool = False) -> Licence | None:
    cur = await conn.execute(
        "SELECT state FROM licences WHERE account_id = %s" + (" FOR UPDATE" if lock else ""), (account_id,)
    )
    row = await cur.fetchone()
    return Licence.from_state(row[0]) if row else None


async def _add_history(conn: AsyncConnection, entries: list[HistoryEntry]) -> None:
    for e in entries:
        await conn.execute(
            "INSERT INTO licence_history (account_id, time, type, version, details) VALUES (%s, %s, %s, %s, %s)",
            (e.account_id, e.time, e.type, e.version, Jsonb(dict(e.details))),
        )


class LicensingProjection:
    """Licences from the account events (see licensing_consumer.domain)."""

    def __init__(self, name: str = "licensing"):
        self.name = name

    async def apply(self, conn: AsyncConnection, event: Envelope) -> None:
        try:
            payload = event.payload()
        except ValueError as e:  # a known type with data we cannot read: only the version moves
            log.error("licensing: unreadable %s v%d of %s skipped: %s",
                      event.type, event.streamversion, event.account_id, e)
            payload = None
        before = await _load(conn, event.account_id, lock=True)
        after, entries = evolve(before, payload, version=event.streamversion, time=event.time)
        referral = referral_of(payload, time=event.time)
        if referral is not None:
            cur = await conn.execute(
                "INSERT INTO referrals (referee, referrer, time) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                (referral.referee, referral.referrer, referral.time),
            )
            if cur.rowcount:
                entries.append(referral_credit_entry(referral, version=event.streamversion))
        if after is not None:
            await conn.execute(
                "INSERT INTO licences (account_id, state) VALUES (%s, %s) "
                "ON CONFLICT (account_id) DO UPDATE SET state = EXCLUDED.state, updated_at = now()",
                (after.account_id, Jsonb(after.to_state())),
            )
        await _add_history(conn, entries)

    async def reset(self, conn: AsyncConnection) -> None:
        await conn.execute("TRUNCATE licences, referrals, licence_history")


class LicenceReader:
    """The read side of the HTTP API."""

    def __init__(self, pool: AsyncConnectionPool):
        self.pool = pool

    async def licence(self, account_id: str) -> Licence | None:
        async with self.pool.connection() as conn:
            return await _load(conn, account_id)

    async def credits(self, account_id: str) -> int:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT (SELECT count(*) FROM referrals WHERE referrer = %s), "
                "EXISTS (SELECT 1 FROM referrals WHERE referee = %s)",
                (account_id, account_id),
            )
            referred_others, was_referred = await cur.fetchone()
        return referral_credits(referred_others=referred_others, was_referred=was_referred)

    async def view(self, account_id: str) -> dict[str, Any] | None:
        licence = await self.licence(account_id)
        if licence is None:
            return None
        return licence.view(await self.credits(account_id))

    async def history(self, account_id: str) -> list[dict[str, Any]]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT time, type, version, details FROM licence_history WHERE account_id = %s "
                "ORDER BY time, id",
                (account_id,),
            )
            rows = await cur.fetchall()
        return [HistoryEntry(account_id, t, typ, v, d).view() for t, typ, v, d in rows]

    async def all_views(self) -> dict[str, dict[str, Any]]:
        """Every licence (for tests and comparisons: rebuild == incremental)."""
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT account_id FROM licences ORDER BY account_id")
            ids = [r[0] for r in await cur.fetchall()]
        return {i: await self.view(i) for i in ids}
