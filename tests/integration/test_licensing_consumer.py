"""The licensing process's own consumer wiring: a fresh database catches up from
the stream's first event even when its durable consumer remembers a position."""

from __future__ import annotations

import pytest

from licensing_consumer.app import create_app
from licensing_consumer.settings import Settings
from licensing_consumer.store import LicenceReader
from tests.support.licensing_events import caught_up, publish, random_story
from tests.support.polling import eventually
from tests.support.licensing_tokens import ISSUER, TokenIssuer

pytestmark = pytest.mark.integration


async def test_a_fresh_database_catches_up_from_the_start_with_an_old_durable(new_database, nats_names):
    story = random_story(120, n_accounts=5, seed=2)
    await publish(nats_names.url, nats_names.stream, nats_names.prefix, story.envelopes)
    for label in ("licensing_first", "licensing_fresh"):
        settings = Settings(licensing_database_url=new_database(label), nats_url=nats_names.url,
                            nats_stream=nats_names.stream, nats_subject_prefix=nats_names.prefix,
                            identity_url=ISSUER)
        app = create_app(settings, verifier=TokenIssuer().verifier())
        async with app.router.lifespan_context(app):
            pool = app.state.runtime.pool
            await eventually(lambda: caught_up(pool, story), what=f"catch-up of {label}")
            assert await LicenceReader(pool).all_views() == story.expected()
            js = app.state.runtime.link.js
            await js.delete_key_value(f"{nats_names.stream}_REVOKED")
