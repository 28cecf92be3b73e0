"""The composition root: `create_app(settings)` wires the pool, NATS, the relay,
token verification and the routes; the lifespan owns every resource."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI
from psycopg_pool import AsyncConnectionPool

from account_service.api import accounts, members
from account_service.eventstore import MIGRATIONS, EventStore
from account_service.relay import Relay
from account_service.service import AccountService
from account_service.settings import Settings
from shared.auth import AccessTokenGuard, JwksVerifier
from shared.bus import NatsLink
from shared.db import ensure_database, migrate, open_pool
from shared.revocations import RevocationList, revocation_bucket
from shared.web import create_service_app

log = logging.getLogger(__name__)

COMPONENT = "account_service"


@dataclass
class Runtime:
    pool: AsyncConnectionPool
    link: NatsLink
    store: EventStore
    relay: Relay

    async def close(self) -> None:
        await self.link.close()
        await self.pool.close()


async def open_runtime(settings: Settings, *, nats_wait: float = 2.0) -> Runtime:
    """The database (created and migrated if needed), the NATS link (stream ensured) and the relay."""
    url = settings.account_database_url
    await ensure_database(url)
    pool = await open_pool(url, max_size=settings.account_pool_size, name="account")
    try:
        await migrate(pool, COMPONENT, MIGRATIONS)
    except Exception:
        await pool.close()
        raise
    prefix = settings.nats_subject_prefix
    link = NatsLink(settings.nats_url, "account-service", stream=settings.nats_stream, subjects=[f"{prefix}.>"])
    await link.start(wait=nats_wait)
    relay = Relay(
        url, settings.nats_url, subject_prefix=prefix, stream=settings.nats_stream,
        batch_size=settings.account_relay_batch_size, poll_interval=settings.account_relay_poll_seconds,
    )
    return Runtime(pool, link, EventStore(pool), relay)


async def stop_task(task: asyncio.Task, timeout: float = 5.0) -> None:
    """Cancel `task` and wait for it, boundedly (re-cancelling if a library swallowed it)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not task.done() and loop.time() < deadline:
        task.cancel()
        await asyncio.wait({task}, timeout=0.2)
    if task.done() and not task.cancelled():
        with contextlib.suppress(Exception):
            task.result()


def create_app(settings: Settings | None = None, *, verifier: JwksVerifier | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        rt = await open_runtime(settings)
        jwks = verifier or JwksVerifier(settings.jwks_url, issuer=settings.issuer, audience=settings.token_audience)
        revocations = RevocationList(rt.link, revocation_bucket(settings.nats_stream))
        await revocations.start()
        app.state.runtime = rt
        app.state.service = AccountService(rt.store)
        app.state.guard = AccessTokenGuard(jwks, revocations)
        relay_task = asyncio.create_task(rt.relay.run(), name="account-relay")
        try:
            yield
        finally:
            await stop_task(relay_task)
            await revocations.stop()
            if verifier is None:
                await jwks.aclose()
            await rt.close()

    app = create_service_app(
        service="account",
        title="multicompte account service",
        description="The event-sourced owner of company accounts and their memberships.",
        lifespan=lifespan,
        resources=lambda app: (app.state.runtime.pool, app.state.runtime.link),
    )
    app.include_router(accounts.router)
    app.include_router(members.router)
    return app
