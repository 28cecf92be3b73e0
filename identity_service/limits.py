"""A cap on request bodies: every body this service accepts is a few hundred bytes
(the longest is a 1024-character password), so one of more than `MAX_BODY_BYTES`
is refused with 413 before it is read into memory, by its Content-Length or, for
a streamed body, as soon as the bytes received pass the cap."""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException

MAX_BODY_BYTES = 1024 * 1024
DETAIL = f"the request body is larger than {MAX_BODY_BYTES} bytes"


class BodyLimit:
    def __init__(self, app, max_bytes: int = MAX_BODY_BYTES):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    too_big = False  # the server refuses a malformed length itself
                if too_big:
                    return await self._refuse(send)
        received = 0

        async def limited():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:  # turned into the JSON 413 by the error handlers
                    raise HTTPException(413, DETAIL)
            return message

        return await self.app(scope, limited, send)

    @staticmethod
    async def _refuse(send) -> None:
        body = json.dumps({"error": "payload_too_large", "detail": DETAIL}).encode()
        await send({"type": "http.response.start", "status": 413, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
