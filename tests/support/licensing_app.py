"""The licensing consumer's real app (lifespan included) on a test database and
stream, for the integration tests of its read API."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx

from licensing_consumer.app import create_app
from licensing_consumer.settings import Settings
from shared.revocations import revocation_bucket
from tests.support.licensing_events import Story, caught_up, publish
from tests.support.licensing_tokens import ISSUER, TokenIssuer
from tests.support.polling import eventually


@contextlib.asynccontextmanager
async def licensing_service(new_database, nats_names, db_label: str = "licensing", *,
                            raise_app_exceptions: bool = True) -> AsyncIterator[tuple]:
    """Yields (app, client, issuer, nats_names); the client talks to the app in process."""
    issuer = TokenIssuer()
    settings = Settings(licensing_database_url=new_database(db_label), nats_url=nats_names.url,
                        nats_stream=nats_names.stream, nats_subject_prefix=nats_names.prefix,
                        identity_url=ISSUER)
    app = create_app(settings, verifier=issuer.verifier())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
        async with httpx.AsyncClient(transport=transport, base_url="http://licensing") as client:
            yield app, client, issuer, nats_names
        # the revocation bucket the service watches is a stream of its own: remove it too
        with contextlib.suppress(Exception):
            await app.state.runtime.link.js.delete_key_value(revocation_bucket(nats_names.stream))


async def publish_story(names, story: Story, app) -> None:
    """Publish the story's events and wait until the app's consumer has applied them all."""
    await publish(names.url, names.stream, names.prefix, story.envelopes)
    await eventually(lambda: caught_up(app.state.runtime.pool, story), what="the consumer to catch up")
