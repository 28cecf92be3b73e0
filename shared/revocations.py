"""Revoked sessions, known to every service.

Access tokens are verified locally with the JWKS, so a logout must reach the
verifiers: the identity service writes each revoked session id to a JetStream
key-value bucket (`<NATS_STREAM>_REVOKED`, entries kept 10 minutes: longer than
any access token lives) and awaits the server's ack before answering the
logout; every verifier watches the bucket and refuses tokens whose `sid` is in
it. A verifier that starts later reads the bucket's current content first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from nats.js.errors import BadRequestError, BucketNotFoundError
from nats.js.kv import KV_DEL, KV_PURGE

from shared.bus import NatsLink

log = logging.getLogger(__name__)

REVOCATION_TTL_SECONDS = 600.0


def revocation_bucket(stream: str) -> str:
    return f"{stream}_REVOKED"


class RevocationList:
    def __init__(self, link: NatsLink, bucket: str, *, ttl: float = REVOCATION_TTL_SECONDS):
        self.link = link
        self.bucket = bucket
        self.ttl = ttl
        self._revoked: dict[str, float] = {}
        self._ready = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._watcher = None
        self._stopping = False

    async def _kv(self):
        js = await self.link.wait_connected()
        try:
            return await js.key_value(self.bucket)
        except BucketNotFoundError:
            try:
                return await js.create_key_value(bucket=self.bucket, ttl=self.ttl, history=1)
            except BadRequestError:
                return await js.key_value(self.bucket)  # created meanwhile by another service

    async def start(self) -> None:
        self._task = asyncio.create_task(self._watch_forever(), name=f"revocations-{self.bucket}")

    async def wait_ready(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self._ready.wait(), timeout)

    async def _watch_forever(self) -> None:
        while not self._stopping:
            try:
                kv = await self._kv()
                self._watcher = watcher = await kv.watchall()
                async for entry in watcher:
                    if entry is None:  # the bucket's current content has been read
                        self._ready.set()
                        continue
                    if entry.operation in (KV_DEL, KV_PURGE):
                        continue  # a revocation is never undone; expiry prunes it
                    try:
                        self._revoked[entry.key] = float(entry.value or 0)
                    except ValueError:
                        self._revoked[entry.key] = time.time() + self.ttl
                    self._prune()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - NATS away: keep trying
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    # nats-py may turn our cancellation into another error: stop anyway
                    raise asyncio.CancelledError from e
                log.warning("revocation watch on %s failed (%s); retrying", self.bucket, e)
                await asyncio.sleep(1.0)

    def _prune(self) -> None:
        if len(self._revoked) % 256:
            return
        now = time.time()
        for sid in [s for s, until in self._revoked.items() if until < now]:
            del self._revoked[sid]

    def is_revoked(self, sid: str | None) -> bool:
        return sid is not None and sid in self._revoked

    async def revoke(self, sid: str, until: float | None = None) -> None:
        """Record `sid` as revoked (until the time its tokens expire anyway)."""
        until = until or time.time() + self.ttl
        self._revoked[sid] = until
        kv = await self._kv()
        await kv.put(sid, repr(until).encode())

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop watching; never waits longer than `timeout` (the watch task is
        cancelled again until it ends, in case a library swallowed a cancellation)."""
        self._stopping = True
        if self._watcher is not None:
            # unsubscribe first: a subscription left open makes the connection's
            # drain() wait for it at shutdown
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._watcher.stop(), 1.0)
        if self._task:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while not self._task.done() and loop.time() < deadline:
                self._task.cancel()
                await asyncio.wait({self._task}, timeout=0.2)
            if self._task.done() and not self._task.cancelled():
                self._task.exception()  # retrieved: no "never retrieved" warning
