"""A read model built on a new (or wiped) database sees the whole stream, even
when its durable consumer remembers a position from an earlier database."""

from __future__ import annotations

import asyncio

import pytest

from licensing_consumer.store import COMPONENT, MIGRATIONS, LicensingProjection
from shared.bus import NatsLink
from shared.consumer import EventConsumer
from shared.db import migrate, open_pool
from tests.support.licensing_events import caught_up, publish, random_story
from tests.support.polling import eventually

pytestmark = pytest.mark.integration


async def _consume_until_caught_up(db_url: str, nats_names, story) -> None:
    pool = await open_pool(db_url, min_size=1, max_size=2)
    await migrate(pool, COMPONENT, MIGRATIONS)
    link = NatsLink(nats_names.url, "kit-fresh", stream=nats_names.stream, subjects=[f"{nats_names.prefix}.>"])
    await link.start(wait=5)
    consumer = EventConsumer(pool=pool, link=link, stream=nats_names.stream, subject_prefix=nats_names.prefix,
                             projection=LicensingProjection(), durable="same-durable")
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    try:
        await eventually(lambda: caught_up(pool, story), timeout=15, what="catch-up from the stream's start")
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await link.close()
        await pool.close()


async def test_an_empty_read_model_starts_from_the_first_event_whatever_the_durable_remembers(new_database, nats_names):
    story = random_story(60, n_accounts=5)
    await publish(nats_names.url, nats_names.stream, nats_names.prefix, story.envelopes)
    await _consume_until_caught_up(new_database("fresh1"), nats_names, story)  # the durable is now at the end
    await _consume_until_caught_up(new_database("fresh2"), nats_names, story)  # a new database, the same durable
