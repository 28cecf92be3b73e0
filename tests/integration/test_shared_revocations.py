"""A logout in one service reaches the token checks of the others."""

from __future__ import annotations

from shared.bus import NatsLink
from shared.revocations import RevocationList, revocation_bucket
from tests.support.polling import eventually


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
        await eventually(lambda: watcher.is_revoked("sid-1"), timeout=5.0, interval=0.01)
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
