"""A logout in one service reaches the token checks of the others."""

from __future__ import annotations

import asyncio

from shared.bus import NatsLink
from shared.revocations import RevocationList, revocation_bucket


async def _until(predicate, timeout=5.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_a_revocation_reaches_other_watchers_and_late_starters(nats_names):
    bucket = revocation_bucket(nats_names.stream)
    links = [NatsLink(nats_names.url, f"t{i}") for i in range(3)]
    for link in links:
        await link.start(wait=5)
    writer, watcher = RevocationList(links[0], bucket), RevocationList(links[1], bucket)
    try:
        await watcher.start()
        await watcher.wait_ready(5)
        assert not watcher.is_revoked("sid-1")
        await writer.revoke("sid-1")
        assert writer.is_revoked("sid-1")
        await _until(lambda: watcher.is_revoked("sid-1"))
        assert not watcher.is_revoked("sid-2")

        late = RevocationList(links[2], bucket)
        await late.start()
        await late.wait_ready(5)
        assert late.is_revoked("sid-1")
        await late.stop()
    finally:
        await watcher.stop()
        await writer.stop()
        js = await links[0].wait_connected()
        await js.delete_key_value(bucket)
        for link in links:
            await link.close()
