"""The account service's real app (lifespan included) on a test database and
stream, driven in process, for the integration tests of its HTTP API."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
import psycopg

from account_service.app import create_app
from account_service.settings import Settings
from tests.support.tokens import TestIssuer, bearer


class Api:
    def __init__(self, client: httpx.AsyncClient, issuer: TestIssuer, app, db_url: str, settings: Settings,
                 country: str):
        self.client, self.issuer, self.app, self.db_url, self.settings = client, issuer, app, db_url, settings
        self.country = country  # of the accounts `create` makes unless told

    def token(self, email: str, acct: str | None = None, **kw) -> dict[str, str]:
        kw.setdefault("sub", f"user-{email}")
        return bearer(self.issuer.mint(email=email, acct=acct, **kw))

    async def create(self, email: str = "ann@example.com", **body) -> dict:
        body = {"name": "Durand BTP", "country": self.country} | body
        r = await self.client.post("/accounts", json=body, headers=self.token(email))
        assert r.status_code == 201, r.text
        return r.json()

    async def event_count(self) -> int:
        async with await psycopg.AsyncConnection.connect(self.db_url) as conn:
            cur = await conn.execute("SELECT count(*) FROM events")
            return (await cur.fetchone())[0]


@contextlib.asynccontextmanager
async def account_api(infra, new_database, label: str, *, country: str,
                      raise_app_exceptions: bool = True) -> AsyncIterator[Api]:
    """The app on a database and a stream named after `label`; the stream (and the
    revoked-sessions bucket) are deleted afterwards."""
    db_url = new_database(label)
    stream, prefix = f"MC_{infra.run_id}_{label}".upper(), f"mc{infra.run_id}{label}"
    settings = Settings(account_database_url=db_url, nats_url=infra.nats_url, nats_stream=stream,
                        nats_subject_prefix=prefix, account_relay_poll_seconds=0.2)
    issuer = TestIssuer(issuer=settings.issuer, audience=settings.token_audience)
    app = create_app(settings, verifier=issuer.verifier())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
        async with httpx.AsyncClient(transport=transport, base_url="http://account.test") as client:
            yield Api(client, issuer, app, db_url, settings, country)
    import nats

    nc = await nats.connect(infra.nats_url)
    for name in (stream, f"KV_{stream}_REVOKED"):
        try:
            await nc.jetstream().delete_stream(name)
        except Exception:  # noqa: BLE001
            pass
    await nc.close()


def assert_error(r: httpx.Response, status: int, code: str) -> dict:
    """An error answer: this status, this code, and a detail."""
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] == code and body["detail"], body
    return body
