"""PostgreSQL plumbing: the database itself, a pool, and start-up migrations.

Migrations are an ordered list of SQL scripts per component, applied under a
transaction-scoped advisory lock so several replicas starting at once migrate
exactly once and the others wait, then see the schema ready.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import AsyncConnectionPool

log = logging.getLogger(__name__)


def database_name(url: str) -> str:
    return conninfo_to_dict(url).get("dbname") or "postgres"


def with_database(url: str, dbname: str) -> str:
    """The same server and credentials as `url`, another database."""
    return make_conninfo(url, dbname=dbname)


async def ensure_database(url: str) -> None:
    """Create the database `url` names if it does not exist (idempotent, race-safe)."""
    name = database_name(url)
    admin = with_database(url, "postgres")
    async with await psycopg.AsyncConnection.connect(admin, autocommit=True, connect_timeout=10) as conn:
        cur = await conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        if await cur.fetchone():
            return
        try:
            await conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            log.info("created database %s", name)
        except (psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
            pass  # another replica won the race


async def drop_database(url: str) -> None:
    name = database_name(url)
    admin = with_database(url, "postgres")
    async with await psycopg.AsyncConnection.connect(admin, autocommit=True) as conn:
        await conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


async def open_pool(url: str, *, min_size: int = 2, max_size: int = 10, name: str | None = None) -> AsyncConnectionPool:
    """An open async pool. Connections are not autocommit: use `conn.transaction()`."""
    pool = AsyncConnectionPool(
        url, min_size=min_size, max_size=max_size, open=False, name=name,
        kwargs={"connect_timeout": 10}, reconnect_timeout=60,
    )
    await pool.open(wait=True, timeout=30)
    return pool


async def migrate(pool: AsyncConnectionPool, component: str, migrations: Sequence[str]) -> int:
    """Apply the scripts of `migrations` not applied yet; return the schema version."""
    async with pool.connection() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"migrate:{component}",))
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   component text NOT NULL,
                   version integer NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now(),
                   PRIMARY KEY (component, version))"""
        )
        cur = await conn.execute(
            "SELECT coalesce(max(version), 0) FROM schema_migrations WHERE component = %s", (component,)
        )
        (current,) = await cur.fetchone()
        for version, script in enumerate(migrations[current:], start=current + 1):
            log.info("migrating %s to version %d", component, version)
            await conn.execute(script)
            await conn.execute(
                "INSERT INTO schema_migrations (component, version) VALUES (%s, %s)", (component, version)
            )
        return len(migrations)


async def ping(pool: AsyncConnectionPool, timeout: float = 2.0) -> bool:
    try:
        async with pool.connection(timeout=timeout) as conn:
            await conn.execute("SELECT 1")
        return True
    except Exception:  # noqa: BLE001 - readiness reports, never raises
        return False
