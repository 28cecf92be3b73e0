"""NATS JetStream plumbing: one long-lived connection, the stream, publishing.

`NatsLink` keeps trying to connect in the background so a service starts (and
keeps taking writes) while NATS is down; callers check `link.js` or wait with
`link.wait_connected()`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError

log = logging.getLogger(__name__)

DUPLICATE_WINDOW_SECONDS = 120.0


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    subject: str
    payload: bytes
    msg_id: str


class NatsLink:
    """A NATS connection that (re)connects forever in the background."""

    def __init__(self, url: str, name: str, *, stream: str | None = None, subjects: Sequence[str] = ()):
        self.url = url
        self.name = name
        self.stream = stream
        self.subjects = list(subjects)
        self.nc: NATS | None = None
        self.js: JetStreamContext | None = None
        self._ready = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def start(self, wait: float | None = 0) -> None:
        """Start connecting; wait up to `wait` seconds for the first connection."""
        self._task = asyncio.create_task(self._connect_forever(), name=f"nats-connect-{self.name}")
        if wait:
            try:
                await asyncio.wait_for(self._ready.wait(), wait)
            except TimeoutError:
                log.warning("NATS at %s not reachable yet; retrying in the background", self.url)

    async def _connect_forever(self) -> None:
        delay = 0.2
        while True:
            try:
                nc = await nats.connect(
                    self.url, name=self.name, connect_timeout=2, allow_reconnect=True,
                    max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                    error_cb=self._on_error,
                )
                js = nc.jetstream(timeout=5)
                if self.stream:
                    await ensure_stream(js, self.stream, self.subjects)
                self.nc, self.js = nc, js
                self._ready.set()
                log.info("connected to NATS at %s", self.url)
                return
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - keep trying, NATS may come later
                log.debug("NATS connect failed (%s); retrying in %.1fs", e, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _on_error(self, e: Exception) -> None:
        log.debug("NATS error: %s", e)

    async def wait_connected(self, timeout: float | None = None) -> JetStreamContext:
        await asyncio.wait_for(self._ready.wait(), timeout)
        assert self.js is not None
        return self.js

    @property
    def connected(self) -> bool:
        return self.nc is not None and self.nc.is_connected

    async def ping(self, timeout: float = 2.0) -> bool:
        if not self.connected:
            return False
        try:
            await self.nc.flush(timeout=timeout)
            return True
        except Exception:  # noqa: BLE001 - readiness reports, never raises
            return False

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        if self.nc is not None and not self.nc.is_closed:
            # Flush, then close. Not drain(): every publish of ours is awaited for its
            # ack already, and drain() waits on each subscription's pending queue, which
            # a pull subscription's late status message can keep non-empty for good.
            try:
                await self.nc.flush(timeout=2)
            except Exception:  # noqa: BLE001 - closing anyway
                pass
            await self.nc.close()


async def ensure_stream(js: JetStreamContext, stream: str, subjects: Sequence[str]) -> None:
    """Create the stream if missing, or add our subjects to it (race-safe)."""
    try:
        info = await js.stream_info(stream)
        missing = [s for s in subjects if s not in (info.config.subjects or [])]
        if missing:
            cfg = info.config
            cfg.subjects = list(cfg.subjects or []) + missing
            await js.update_stream(cfg)
        return
    except NotFoundError:
        pass
    config = StreamConfig(
        name=stream, subjects=list(subjects), retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE, discard=DiscardPolicy.OLD,
        duplicate_window=DUPLICATE_WINDOW_SECONDS,
    )
    try:
        await js.add_stream(config)
    except BadRequestError:
        await js.stream_info(stream)  # created meanwhile by another replica, or a real error


async def publish_batch(js: JetStreamContext, messages: Sequence[OutgoingMessage], timeout: float = 5.0) -> None:
    """Publish `messages` in order and await all their acks together.

    Raises if any message is not acknowledged; the caller retries the whole
    batch (JetStream drops the repeats by `Nats-Msg-Id`).
    """
    futures = [
        await js.publish_async(m.subject, m.payload, headers={"Nats-Msg-Id": m.msg_id})
        for m in messages
    ]
    try:
        await asyncio.wait_for(asyncio.gather(*futures), timeout)
    finally:
        for f in futures:
            if not f.done():
                f.cancel()
