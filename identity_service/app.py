"""The identity service's composition root: `create_app(settings)`.

The lifespan owns the pool, the keys, NATS, the projector (a durable
JetStream consumer through the consumer kit), the LISTEN task that wakes
`min_version` waiters when another replica applies events, and the
revocation list."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI
from psycopg_pool import AsyncConnectionPool

from identity_service import keys, projector
from identity_service.api import router
from identity_service.fastpath import SwitchFastPath
from identity_service.keys import KeyRing
from identity_service.projector import MembershipProjection, VersionWaiters
from identity_service.service import IdentityService
from identity_service.settings import Settings
from identity_service.store import MIGRATIONS, Store
from shared import db
from shared.bus import NatsLink
from shared.consumer import EventConsumer
from shared.revocations import RevocationList, revocation_bucket
from shared.web import create_service_app

log = logging.getLogger(__name__)


def make_consumer(settings: Settings, pool, link: NatsLink, waiters: VersionWaiters | None = None) -> EventConsumer:
    return EventConsumer(
        pool=pool, link=link, stream=settings.nats_stream, subject_prefix=settings.nats_subject_prefix,
        projection=MembershipProjection(), durable=projector.PROJECTION_NAME,
        notify_channel=projector.NOTIFY_CHANNEL,
        on_applied=waiters.applied if waiters is not None else None,
    )


async def open_database(settings: Settings) -> AsyncConnectionPool:
    """The pool, in autocommit: a read is one round trip (no BEGIN/COMMIT around
    it); writes that need a transaction open one with `conn.transaction()`."""
    await db.ensure_database(settings.database_url)
    pool = AsyncConnectionPool(
        settings.database_url, min_size=2, max_size=settings.identity_pool_size, open=False, name="identity",
        kwargs={"connect_timeout": 10, "autocommit": True}, reconnect_timeout=60,
    )
    await pool.open(wait=True, timeout=30)
    await db.migrate(pool, "identity", MIGRATIONS)
    return pool


async def maintain(svc: IdentityService, stop: asyncio.Event, every: float = 30.0) -> None:
    """Reload the signing keys (a rotation reaches every replica within `every`
    seconds) and, now and then, forget expired sessions and old login failures."""
    rounds = 0
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), every)
            return
        except TimeoutError:
            pass
        try:
            await svc.keyring.load()
            rounds += 1
            if rounds % 120 == 1:
                await svc.store.purge_expired(svc.settings.identity_login_failure_window_seconds)
        except Exception as e:  # noqa: BLE001 - the database may be away; next round
            log.warning("maintenance round failed: %s", e)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await open_database(settings)
        await keys.ensure_key(pool, settings.key_passphrase)
        keyring = KeyRing(pool, passphrase=settings.key_passphrase)
        await keyring.load()
        link = NatsLink(settings.nats_url, "identity-service", stream=settings.nats_stream,
                        subjects=[f"{settings.nats_subject_prefix}.>"])
        await link.start(wait=2)
        revocations = RevocationList(link, revocation_bucket(settings.nats_stream))
        waiters = VersionWaiters()
        svc = IdentityService(settings, Store(pool), keyring, waiters, revocations)
        app.state.identity = svc
        app.state.link = link
        app.state.pool = pool
        stop = asyncio.Event()
        listening = asyncio.Event()
        tasks = [asyncio.create_task(projector.listen_forever(settings.database_url, waiters, listening),
                                     name="identity-listen")]
        tasks.append(asyncio.create_task(maintain(svc, stop), name="identity-maintenance"))
        if settings.identity_projector:
            consumer = make_consumer(settings, pool, link, waiters)
            app.state.consumer = consumer
            if settings.identity_projector_exclusive:
                lock = f"identity-projector:{settings.nats_stream}:{settings.nats_subject_prefix}"
                runner = projector.run_as_leader(settings.database_url, lock, consumer.run, stop)
            else:
                runner = consumer.run(stop)
            tasks.append(asyncio.create_task(runner, name="identity-projector"))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(listening.wait(), 5)
        try:
            yield
        finally:
            stop.set()
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            await revocations.stop()
            await link.close()
            await pool.close()

    app = create_service_app(
        service="identity",
        title="multicompte identity service",
        description="People, emails, sessions, signing keys and switching between company accounts.",
        lifespan=lifespan,
        resources=lambda app: (app.state.pool, app.state.link),
        inner_middleware=(SwitchFastPath,),  # inside the body cap and the metrics
    )
    app.include_router(router)
    return app


def app_factory() -> FastAPI:
    """For `uvicorn --factory identity_service.app:app_factory` (settings from the environment)."""
    return create_app(Settings())
