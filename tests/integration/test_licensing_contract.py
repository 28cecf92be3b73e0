"""Contract audit of the licensing read API: cases an outside client who knows only
CONTRACT.md may try (the real app on a real database and stream)."""

from __future__ import annotations

import contextlib
import uuid

import httpx
import pytest

from licensing_consumer.app import create_app
from licensing_consumer.settings import Settings
from shared.revocations import revocation_bucket
from tests.support.licensing_events import Story, caught_up, publish, wait_until
from tests.support.licensing_tokens import ISSUER, TokenIssuer

pytestmark = pytest.mark.integration


@pytest.fixture
async def service(new_database, nats_names):
    issuer = TokenIssuer()
    settings = Settings(licensing_database_url=new_database("liccontract"), nats_url=nats_names.url,
                        nats_stream=nats_names.stream, nats_subject_prefix=nats_names.prefix,
                        identity_url=ISSUER)
    app = create_app(settings, verifier=issuer.verifier())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://licensing") as client:
            yield app, client, issuer, nats_names
        with contextlib.suppress(Exception):
            await app.state.runtime.link.js.delete_key_value(revocation_bucket(nats_names.stream))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("spelling", [str.upper, lambda a: a.replace("-", ""), lambda a: "{" + a + "}",
                                      lambda a: "urn:uuid:" + a])
async def test_any_spelling_of_the_account_uuid_names_the_licence(service, spelling):
    """As on the identity and account services, an account's UUID may be spelt any way."""
    app, client, issuer, names = service
    story = Story()
    account = story.create("Acme", admin="alice@example.com", account_id=str(uuid.uuid4()))
    await publish(names.url, names.stream, names.prefix, story.envelopes)
    await wait_until(lambda: caught_up(app.state.runtime.pool, story), what="the consumer to catch up")
    token = bearer(issuer.token(email="alice@example.com", acct=account))
    for path in (f"/licences/{spelling(account)}", f"/licences/{spelling(account)}/history"):
        r = await client.get(path, headers=token)
        assert r.status_code == 200, (path, r.text)
    r = await client.get(f"/licences/{spelling(account)}", headers=token)
    assert r.json() == story.expected()[account]
    # a token naming the account in another spelling is for the same account
    r = await client.get(f"/licences/{account}", headers=bearer(issuer.token(email="alice@example.com",
                                                                             acct=spelling(account))))
    assert r.status_code == 200, r.text


async def test_the_database_away_is_503_unavailable_not_500(service):
    app, client, issuer, names = service
    story = Story()
    account = story.create("Acme", admin="alice@example.com", account_id=str(uuid.uuid4()))
    await publish(names.url, names.stream, names.prefix, story.envelopes)
    await wait_until(lambda: caught_up(app.state.runtime.pool, story), what="the consumer to catch up")
    token = bearer(issuer.token(email="alice@example.com", acct=account))
    assert (await client.get(f"/licences/{account}", headers=token)).status_code == 200
    await app.state.runtime.pool.close()
    for path in (f"/licences/{account}", f"/licences/{account}/history"):
        r = await client.get(path, headers=token)
        assert r.status_code == 503, r.text
        assert r.json()["error"] == "unavailable" and r.json()["detail"]
    assert (await client.get("/readyz")).status_code == 503
