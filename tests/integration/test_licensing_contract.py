"""Contract audit of the licensing read API: cases an outside client who knows only
CONTRACT.md may try (the real app on a real database and stream)."""

from __future__ import annotations

import uuid

import pytest

from tests.support.licensing_app import licensing_service, publish_story
from tests.support.licensing_events import Story
from tests.support.tokens import bearer

pytestmark = pytest.mark.integration


@pytest.fixture
async def service(new_database, nats_names):
    async with licensing_service(new_database, nats_names, "liccontract", raise_app_exceptions=False) as running:
        yield running


@pytest.mark.parametrize("spelling", [str.upper, lambda a: a.replace("-", ""), lambda a: "{" + a + "}",
                                      lambda a: "urn:uuid:" + a])
async def test_any_spelling_of_the_account_uuid_names_the_licence(service, spelling):
    """As on the identity and account services, an account's UUID may be spelt any way."""
    app, client, issuer, names = service
    story = Story()
    account = story.create("Acme", admin="alice@example.com", account_id=str(uuid.uuid4()))
    await publish_story(names, story, app)
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
    await publish_story(names, story, app)
    token = bearer(issuer.token(email="alice@example.com", acct=account))
    assert (await client.get(f"/licences/{account}", headers=token)).status_code == 200
    await app.state.runtime.pool.close()
    for path in (f"/licences/{account}", f"/licences/{account}/history"):
        r = await client.get(path, headers=token)
        assert r.status_code == 503, r.text
        assert r.json()["error"] == "unavailable" and r.json()["detail"]
    assert (await client.get("/readyz")).status_code == 503
