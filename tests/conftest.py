"""Fixtures every tier shares: the servers (see tests/infra.py), a fresh
database per use, and a NATS stream + subject prefix of their own per test."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import psycopg
import pytest
from psycopg import sql

from tests.infra import Infra, choose

_counter = itertools.count(1)


@pytest.fixture(scope="session")
def infra() -> Iterator[Infra]:
    chosen = choose()
    try:
        yield chosen
    finally:
        chosen.close()


@pytest.fixture(scope="session")
def new_database(infra: Infra) -> Iterator[Callable[[str], str]]:
    """Factory: `new_database("identity")` creates an empty database, returns its URL.

    Every database made this way is dropped when the run ends."""
    made: list[str] = []

    def make(label: str = "db") -> str:
        name = f"mc_{infra.run_id}_{label}_{next(_counter)}"
        with psycopg.connect(infra.postgres_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        made.append(name)
        return infra.database_url(name)

    yield make
    with psycopg.connect(infra.postgres_url, autocommit=True) as conn:
        for name in made:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@dataclass(frozen=True)
class NatsNames:
    url: str
    stream: str
    prefix: str


async def _delete_stream(url: str, stream: str) -> None:
    import nats
    from nats.js.errors import NotFoundError

    nc = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=1)
    try:
        # the account stream and the revoked-sessions bucket (shared.revocations)
        for name in (stream, f"KV_{stream}_REVOKED"):
            try:
                await nc.jetstream().delete_stream(name)
            except NotFoundError:
                pass
    finally:
        await nc.close()


@pytest.fixture
def nats_names(infra: Infra) -> Iterator[NatsNames]:
    """A stream and subject prefix no other test (or test run) uses; deleted after."""
    n = next(_counter)
    names = NatsNames(infra.nats_url, f"MC_{infra.run_id}_{n}".upper(), f"mc{infra.run_id}n{n}")
    yield names
    try:
        asyncio.run(_delete_stream(names.url, names.stream))
    except Exception:  # noqa: BLE001 - the server may be gone in a failure test
        pass
