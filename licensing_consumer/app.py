"""The licensing consumer's process: its database, its durable consumer, its read API."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI
from psycopg_pool import AsyncConnectionPool

from licensing_consumer.api import router
from licensing_consumer.settings import Settings
from licensing_consumer.store import COMPONENT, MIGRATIONS, LicenceReader, LicensingProjection
from shared.auth import AccessTokenGuard, JwksVerifier
from shared.bus import NatsLink
from shared.consumer import EventConsumer
from shared.db import ensure_database, migrate, open_pool
from shared.revocations import RevocationList, revocation_bucket
from shared.web import create_service_app

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    pool: AsyncConnectionPool
    link: NatsLink
    consumer: EventConsumer

    async def close(self) -> None:
        await self.link.close()
        await self.pool.close()


async def open_runtime(settings: Settings) -> Runtime:
    """Database (created and migrated if needed), NATS link and the consumer over them."""
    url = settings.licensing_database_url
    await ensure_database(url)
    pool = await open_pool(url, name="licensing")
    try:
        await migrate(pool, COMPONENT, MIGRATIONS)
    except Exception:
        await pool.close()
        raise
    prefix = settings.nats_subject_prefix
    link = NatsLink(settings.nats_url, "licensing-consumer", stream=settings.nats_stream, subjects=[f"{prefix}.>"])
    await link.start(wait=2)
    consumer = EventConsumer(
        pool=pool, link=link, stream=settings.nats_stream, subject_prefix=prefix,
        projection=LicensingProjection(), durable=settings.licensing_durable,
    )
    return Runtime(pool, link, consumer)


def create_app(settings: Settings | None = None, *, verifier=None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        rt = await open_runtime(settings)
        own_verifier = verifier is None
        jwks = verifier or JwksVerifier(settings.jwks_url, issuer=settings.issuer, audience=settings.token_audience)
        revocations = RevocationList(rt.link, revocation_bucket(settings.nats_stream))
        await revocations.start()
        app.state.runtime = rt
        app.state.reader = LicenceReader(rt.pool)
        app.state.guard = AccessTokenGuard(jwks, revocations)
        stop = asyncio.Event()
        task = asyncio.create_task(rt.consumer.run(stop), name="licensing-consumer")
        try:
            yield
        finally:
            stop.set()
            try:
                await asyncio.wait_for(task, 10)
            except (TimeoutError, asyncio.CancelledError, Exception):  # noqa: BLE001
                task.cancel()
            await revocations.stop()
            if own_verifier:
                await jwks.aclose()
            await rt.close()

    app = create_service_app(
        service="licensing",
        title="multicompte licensing consumer",
        description="Licences per company account, built from the account events only.",
        lifespan=lifespan,
        resources=lambda app: (app.state.runtime.pool, app.state.runtime.link),
    )
    app.include_router(router)
    return app
