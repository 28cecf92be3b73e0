"""The switch's hot path as a thin ASGI layer in front of FastAPI.

`POST /sessions/current/switch` is the request the product makes most. This
layer serves its well-formed requests directly (JSON object with a string
`account_id` and an optional integer `min_version`, a bearer session token),
skipping the router, dependency injection and pydantic (several hundred
microseconds per request on this machine). It calls exactly the same
`IdentityService.grant_for` as the FastAPI route. Anything else (malformed
body, wrong content type, missing token...) is handed unchanged to the
FastAPI route, which answers it with the usual validation errors, and the
route stays in the OpenAPI document.
"""

from __future__ import annotations

import json

import psycopg
from psycopg_pool import PoolTimeout

from identity_service import domain
from shared.errors import AppError, InvalidToken

PATH = "/sessions/current/switch"
MAX_BODY = 4096
_INT_MAX = 2**31 - 1
_NO_STORE = [(b"cache-control", b"no-store"), (b"pragma", b"no-cache")]


def parse(headers: list[tuple[bytes, bytes]], body: bytes) -> tuple[str, str, int | None] | None:
    """(session token, account_id, min_version) of a well-formed switch, else None."""
    token = None
    json_body = False
    for name, value in headers:
        if name == b"authorization":
            scheme, _, rest = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer":
                token = rest.strip()
        elif name == b"content-type":
            json_body = value.split(b";")[0].strip().lower() == b"application/json"
    if not token or not json_body or domain.looks_like_jwt(token):
        return None
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    account_id, min_version = data.get("account_id"), data.get("min_version")
    if not isinstance(account_id, str) or not 1 <= len(account_id) <= 200:
        return None
    if not account_id.isprintable():  # control characters: the route's validation refuses them
        return None
    if min_version is not None and (type(min_version) is not int or not 0 <= min_version <= _INT_MAX):
        return None
    return token, account_id, min_version


class SwitchFastPath:
    def __init__(self, app):
        self.app = app
        self._route = None

    def _switch_route(self, app):
        if self._route is None:
            self._route = next((r for r in app.routes if getattr(r, "path", None) == PATH), False)
        return self._route or None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        chunks, size, more = [], 0, True
        while more and size <= MAX_BODY:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        parsed = None if more else parse(scope["headers"], body)
        if parsed is None:
            return await self._delegate(scope, receive, send, body, more)
        app = scope["app"]
        route = self._switch_route(app)
        if route is not None:
            scope["route"] = route  # for the metrics' route label
        token, account_id, min_version = parsed
        try:
            issued = await app.state.identity.grant_for(account_id, session_token=token, min_version=min_version)
        except psycopg.DataError:
            return await self._respond(send, 422, {"error": "validation_error",
                                                   "detail": "the request holds characters we cannot store"}, [])
        except (psycopg.OperationalError, PoolTimeout):
            return await self._respond(send, 503, {"error": "unavailable",
                                                   "detail": "the database is unavailable; retry shortly"},
                                       [(b"retry-after", b"1")])
        except AppError as e:
            headers = dict(e.headers)
            if isinstance(e, InvalidToken):
                headers.setdefault("WWW-Authenticate", 'Bearer error="invalid_token"')
            return await self._respond(send, e.status, {"error": e.code, "detail": e.detail},
                                       [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()])
        g = issued.grant
        await self._respond(send, 200, {
            "access_token": issued.access_token, "token_type": "Bearer", "expires_in": issued.expires_in,
            "account": {"account_id": g.account_id, "name": g.name, "role": g.role, "rights": list(g.rights)},
        }, _NO_STORE)

    async def _delegate(self, scope, receive, send, body: bytes, more: bool):
        """Hand the request to FastAPI, replaying the part of the body already read."""
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": more}
            return await receive()

        return await self.app(scope, replay, send)

    @staticmethod
    async def _respond(send, status: int, payload: dict, headers: list[tuple[bytes, bytes]]) -> None:
        body = json.dumps(payload, separators=(",", ":")).encode()
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]})
        await send({"type": "http.response.body", "body": body})
