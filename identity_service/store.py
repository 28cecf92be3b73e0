"""PostgreSQL access for people, sessions, login throttling and the read model.

Every psycopg error a client can cause is translated into our own exceptions
here; nothing above this module knows SQL.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import psycopg
from psycopg_pool import AsyncConnectionPool

from identity_service import keys, projector
from identity_service.domain import Membership, Principal, throttle_retry_after
from shared.consumer import POSITIONS_MIGRATION
from shared.errors import Conflict

MIGRATIONS = [
    """
    CREATE TABLE IF NOT EXISTS users (
        id              uuid        PRIMARY KEY,
        email           text        NOT NULL UNIQUE,
        display_name    text,
        password_hash   text        NOT NULL,
        last_account_id text,
        created_at      timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE IF NOT EXISTS sessions (
        id                uuid        PRIMARY KEY,
        user_id           uuid        NOT NULL REFERENCES users (id),
        token_hash        bytea       NOT NULL UNIQUE,
        created_at        timestamptz NOT NULL DEFAULT now(),
        expires_at        timestamptz NOT NULL,
        revoked_at        timestamptz,
        active_account_id text
    );
    CREATE INDEX IF NOT EXISTS sessions_user ON sessions (user_id);
    CREATE TABLE IF NOT EXISTS login_throttle (
        email            text        PRIMARY KEY,
        failures         integer     NOT NULL,
        first_failure_at timestamptz NOT NULL,
        locked_until     timestamptz
    );
    """,
    keys.MIGRATION,
    POSITIONS_MIGRATION,
    projector.MIGRATION,
]

_MEMBERSHIPS_OF = """
SELECT a.account_id, a.name, a.country, m.role, m.rights
FROM rm_memberships m JOIN rm_accounts a ON a.account_id = m.account_id
WHERE m.email = %s
"""

# One round trip for a switch: the live session, the membership of the target
# account (or NULLs), how far the read model has applied that account, and,
# when the person is a member there and the read model has reached
# `min_version`, the write that records the account as the session's active
# one (and the person's last used), committed asynchronously.
_SWITCH_BY_HASH = """
WITH s AS (
    SELECT s.id, s.user_id, u.email, s.active_account_id, u.last_account_id
    FROM sessions s JOIN users u ON u.id = s.user_id
    WHERE s.token_hash = %(key)s AND s.revoked_at IS NULL AND s.expires_at > now()
), m AS (
    SELECT role, rights FROM rm_memberships
    WHERE email = (SELECT email FROM s) AND account_id = %(acct)s
), a AS (
    SELECT name, country FROM rm_accounts WHERE account_id = %(acct)s
), p AS (
    SELECT version FROM consumer_positions WHERE consumer = %(consumer)s AND account_id = %(acct)s
), ok AS (
    SELECT 1 WHERE %(record)s AND EXISTS (SELECT 1 FROM m) AND EXISTS (SELECT 1 FROM a)
               AND coalesce((SELECT version FROM p), 0) >= %(min_version)s
), us AS (
    UPDATE sessions SET active_account_id = %(acct)s
    WHERE id = (SELECT id FROM s) AND EXISTS (SELECT 1 FROM ok) AND active_account_id IS DISTINCT FROM %(acct)s
    RETURNING 1
), uu AS (
    UPDATE users SET last_account_id = %(acct)s
    WHERE id = (SELECT user_id FROM s) AND EXISTS (SELECT 1 FROM ok) AND last_account_id IS DISTINCT FROM %(acct)s
    RETURNING 1
)
SELECT s.id, s.user_id, s.email, s.active_account_id, s.last_account_id,
       (SELECT role FROM m), (SELECT rights FROM m), (SELECT name FROM a), (SELECT country FROM a),
       (SELECT version FROM p), EXISTS (SELECT 1 FROM ok),
       set_config('synchronous_commit', 'off', true)
FROM s
"""
_SWITCH_BY_ID = _SWITCH_BY_HASH.replace("s.token_hash = %(key)s", "s.id = %(key)s")

_SESSION_BY_HASH = """
SELECT s.id, s.user_id, u.email, s.active_account_id
FROM sessions s JOIN users u ON u.id = s.user_id
WHERE s.token_hash = %s AND s.revoked_at IS NULL AND s.expires_at > now()
"""
_SESSION_BY_ID = _SESSION_BY_HASH.replace("s.token_hash = %s", "s.id = %s")


def _uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except (ValueError, TypeError, AttributeError):
        return None


class Store:
    def __init__(self, pool: AsyncConnectionPool):
        self.pool = pool

    # -- people ----------------------------------------------------------------------

    async def create_user(self, email: str, display_name: str | None, password_hash: str) -> str:
        user_id = uuid.uuid4()
        try:
            async with self.pool.connection() as conn, conn.transaction():
                await conn.execute(
                    "INSERT INTO users (id, email, display_name, password_hash) VALUES (%s, %s, %s, %s)",
                    (user_id, email, display_name, password_hash),
                )
        except psycopg.errors.UniqueViolation as e:
            raise Conflict(f"an account already uses the email {email}", code="email_taken") from e
        return str(user_id)

    async def user_by_email(self, email: str) -> tuple[str, str, str | None] | None:
        """(user_id, password_hash, last_account_id) or None."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT id, password_hash, last_account_id FROM users WHERE email = %s", (email,))
            row = await cur.fetchone()
        return (str(row[0]), row[1], row[2]) if row else None

    async def user_profile(self, user_id: str) -> tuple[str, str | None] | None:
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT email, display_name FROM users WHERE id = %s", (_uuid(user_id),))
            return await cur.fetchone()

    async def set_password_hash(self, user_id: str, password_hash: str) -> None:
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute("UPDATE users SET password_hash = %s WHERE id = %s", (password_hash, _uuid(user_id)))

    # -- login throttling ---------------------------------------------------------------

    async def locked_for(self, email: str) -> int:
        """Seconds this email is still locked out of logging in (0 when it is not)."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT ceil(extract(epoch FROM locked_until - now()))::int FROM login_throttle "
                "WHERE email = %s AND locked_until > now()", (email,))
            row = await cur.fetchone()
        return max(1, row[0]) if row else 0

    async def record_failure(self, email: str, *, max_failures: int, window: int, lockout: int) -> int | None:
        """Count one failed login; return the lockout in seconds if this one triggers it."""
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                """INSERT INTO login_throttle AS t (email, failures, first_failure_at) VALUES (%(e)s, 1, now())
                   ON CONFLICT (email) DO UPDATE SET
                     failures = CASE WHEN t.first_failure_at < now() - make_interval(secs => %(w)s)
                                     THEN 1 ELSE t.failures + 1 END,
                     first_failure_at = CASE WHEN t.first_failure_at < now() - make_interval(secs => %(w)s)
                                     THEN now() ELSE t.first_failure_at END
                   RETURNING failures""",
                {"e": email, "w": window},
            )
            (failures,) = await cur.fetchone()
            retry = throttle_retry_after(failures, max_failures=max_failures, lockout_seconds=lockout)
            if retry is not None:
                await conn.execute(
                    "UPDATE login_throttle SET locked_until = now() + make_interval(secs => %s) WHERE email = %s",
                    (retry, email))
        return retry

    async def clear_failures(self, email: str) -> None:
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute("DELETE FROM login_throttle WHERE email = %s", (email,))

    # -- sessions ------------------------------------------------------------------------

    async def create_session(self, user_id: str, token_hash: bytes, expires_at: datetime,
                             active_account_id: str | None) -> str:
        session_id = uuid.uuid4()
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO sessions (id, user_id, token_hash, expires_at, active_account_id) "
                "VALUES (%s, %s, %s, %s, %s)",
                (session_id, _uuid(user_id), token_hash, expires_at, active_account_id),
            )
            if active_account_id is not None:
                await conn.execute("UPDATE users SET last_account_id = %s WHERE id = %s",
                                   (active_account_id, _uuid(user_id)))
        return str(session_id)

    @staticmethod
    def _principal(row) -> Principal:
        return Principal(user_id=str(row[1]), email=row[2], session_id=str(row[0]), active_account_id=row[3])

    async def session_by_hash(self, token_hash: bytes) -> Principal | None:
        async with self.pool.connection() as conn:
            cur = await conn.execute(_SESSION_BY_HASH, (token_hash,))
            row = await cur.fetchone()
        return self._principal(row) if row else None

    async def session_by_id(self, session_id: str) -> Principal | None:
        sid = _uuid(session_id)
        if sid is None:
            return None
        async with self.pool.connection() as conn:
            cur = await conn.execute(_SESSION_BY_ID, (sid,))
            row = await cur.fetchone()
        return self._principal(row) if row else None

    async def revoke_session(self, session_id: str) -> None:
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute("UPDATE sessions SET revoked_at = now() WHERE id = %s AND revoked_at IS NULL",
                               (_uuid(session_id),))

    async def switch_context(
        self, account_id: str, *, token_hash: bytes | None = None, session_id: str | None = None,
        min_version: int = 0, record: bool = True,
    ) -> tuple[Principal, str | None, Membership | None, int, bool] | None:
        """(principal, last used account, membership of `account_id` or None, applied
        version, recorded), or None when the session is not live.

        With `record`, a member's switch (read model at `min_version` at least) is
        recorded as the session's active account in the same statement, which
        commits asynchronously: a crash may lose the last few landing
        preferences, never anything else, and the hot path skips the WAL flush."""
        if token_hash is not None:
            query, key = _SWITCH_BY_HASH, token_hash
        else:
            query, key = _SWITCH_BY_ID, _uuid(session_id)
            if key is None:
                return None
        async with self.pool.connection() as conn:
            cur = await conn.execute(query, {"key": key, "acct": account_id, "consumer": projector.PROJECTION_NAME,
                                             "record": record, "min_version": min_version})
            row = await cur.fetchone()
        if row is None:
            return None
        recorded = row[10]
        principal = Principal(user_id=str(row[1]), email=row[2], session_id=str(row[0]),
                              active_account_id=account_id if recorded else row[3])
        membership = None
        if row[5] is not None and row[7] is not None:
            membership = Membership(account_id, row[7], row[8], row[5], tuple(row[6]))
        return principal, row[4], membership, row[9] or 0, recorded

    async def purge_expired(self, failure_window: int) -> None:
        """Forget sessions expired (or revoked) for a day, and stale login failures."""
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute("DELETE FROM sessions WHERE expires_at < now() - interval '1 day' "
                               "OR revoked_at < now() - interval '1 day'")
            await conn.execute(
                "DELETE FROM login_throttle WHERE first_failure_at < now() - make_interval(secs => %s) "
                "AND (locked_until IS NULL OR locked_until < now())", (failure_window,))

    # -- the read model ---------------------------------------------------------------------

    async def memberships_of(self, email: str) -> list[Membership]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(_MEMBERSHIPS_OF, (email,))
            rows = await cur.fetchall()
        return [Membership(r[0], r[1], r[2], r[3], tuple(r[4])) for r in rows]

    async def applied_version(self, account_id: str) -> int:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT version FROM consumer_positions WHERE consumer = %s AND account_id = %s",
                (projector.PROJECTION_NAME, account_id))
            row = await cur.fetchone()
        return row[0] if row else 0
