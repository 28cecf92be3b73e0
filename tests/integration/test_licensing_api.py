"""The licensing consumer's read API over a real database and a real stream:
licences for admins only, history, referral credits."""

from __future__ import annotations

import pytest

from shared.bus import NatsLink
from shared.revocations import RevocationList, revocation_bucket
from tests.support.licensing_app import licensing_service, publish_story
from tests.support.licensing_events import Story, caught_up, publish
from tests.support.licensing_tokens import TokenIssuer
from tests.support.polling import eventually
from tests.support.tokens import bearer

pytestmark = pytest.mark.integration


@pytest.fixture
async def service(new_database, nats_names):
    async with licensing_service(new_database, nats_names, "licensing") as running:
        yield running


async def test_licences_with_referrals_members_and_plans(service):
    app, client, issuer, names = service
    story = Story()
    first = story.create("Alice SARL", admin="alice@example.com")
    second = story.create("Alice Bis", admin="alice@example.com", plan="solo", referred_by=first)
    story.add_member(first, "bob@example.com")
    story.add_member(first, "carol@example.com", "viewer")
    story.remove_member(first, "bob@example.com")
    story.change_plan(second, "business")
    await publish_story(names, story, app)

    for account in (first, second):
        resp = await client.get(f"/licences/{account}", headers=bearer(issuer.token(email="alice@example.com",
                                                                                     acct=account)))
        assert resp.status_code == 200, resp.text
        assert resp.json() == story.expected()[account]
    assert story.expected()[first]["referral_credits"] == 1 == story.expected()[second]["referral_credits"]

    resp = await client.get(f"/licences/{first}/history",
                            headers=bearer(issuer.token(email="Alice@Example.com", acct=first)))
    assert resp.status_code == 200
    history = resp.json()
    assert [(h["type"], h["version"]) for h in history] == [
        ("AccountCreated", 1), ("MemberAdded", 2), ("ReferralCreditEarned", 1), ("MemberAdded", 3),
        ("MemberAdded", 4), ("MemberRemoved", 5)]
    assert history[2]["referee_account_id"] == second
    assert [h.get("seats_used") for h in history if h["type"].startswith("Member")] == [1, 2, 3, 2]
    second_history = (await client.get(f"/licences/{second}/history", headers=bearer(
        issuer.token(email="alice@example.com", acct=second)))).json()
    assert second_history[0]["referred_by"] == first
    assert second_history[-1] | {"time": None} == {"time": None, "type": "PlanChanged", "version": 3,
                                                   "plan": "business", "previous_plan": "solo",
                                                   "seats_included": 25}


async def test_referral_credit_when_the_referee_arrives_before_the_referrer(service):
    """Across accounts there is no order: the referrer's credit must not depend on it."""
    app, client, issuer, names = service
    story = Story()
    referrer = story.create("Referrer", admin="r@example.com")
    referee = story.create("Referee", admin="e@example.com", referred_by=referrer)
    referee_first = [e for e in story.envelopes if e.account_id == referee] + \
                    [e for e in story.envelopes if e.account_id == referrer]
    await publish(names.url, names.stream, names.prefix, referee_first)
    await eventually(lambda: caught_up(app.state.runtime.pool, story), what="catch-up")
    body = (await client.get(f"/licences/{referrer}", headers=bearer(issuer.token(email="r@example.com",
                                                                                 acct=referrer)))).json()
    assert body["referral_credits"] == 1 and body["referred_by"] is None


async def test_only_the_accounts_admins_may_read(service):
    app, client, issuer, names = service
    story = Story()
    account = story.create("Acme", admin="alice@example.com")
    other = story.create("Other", admin="alice@example.com")
    story.add_member(account, "bob@example.com", "user")
    await publish_story(names, story, app)
    url = f"/licences/{account}"

    async def status(headers):
        resp = await client.get(url, headers=headers)
        assert resp.json()["error"], resp.text
        return resp.status_code, resp.json()["error"]

    # no token, garbage, forged, expired: 401 invalid_token with WWW-Authenticate: Bearer
    forger = TokenIssuer()
    for headers in ({}, bearer("garbage"), {"Authorization": "Basic abc"},
                    bearer(forger.token(email="alice@example.com", acct=account)),
                    bearer(issuer.token(email="alice@example.com", acct=account, ttl=-60))):
        resp = await client.get(url, headers=headers)
        assert (resp.status_code, resp.json()["error"]) == (401, "invalid_token")
        assert resp.headers["www-authenticate"].startswith("Bearer")
    # a token for another account: switch first
    assert await status(bearer(issuer.token(email="alice@example.com", acct=other))) == (403, "wrong_account")
    assert await status(bearer(issuer.token(email="alice@example.com", acct=None))) == (403, "wrong_account")
    # members who are not admins, strangers, tokens without email
    assert await status(bearer(issuer.token(email="bob@example.com", acct=account, role="admin"))) == (
        403, "forbidden")
    assert await status(bearer(issuer.token(email="eve@example.com", acct=account))) == (403, "forbidden")
    assert await status(bearer(issuer.token(email=None, acct=account))) == (403, "forbidden")
    # unknown licence
    resp = await client.get("/licences/acc_unknown", headers=bearer(issuer.token(email="a@example.com",
                                                                                acct="acc_unknown")))
    assert (resp.status_code, resp.json()["error"]) == (404, "not_found")
    # the role in the token does not matter: the consumer's own view of the events decides
    story.add(__import__("shared.events", fromlist=["MemberRoleChanged"]).MemberRoleChanged(
        account_id=account, email="bob@example.com", role="admin", rights=()))
    story.accounts[account]["members"]["bob@example.com"] = "admin"
    await publish_story(names, story, app)
    resp = await client.get(url, headers=bearer(issuer.token(email="bob@example.com", acct=account, role="user")))
    assert resp.status_code == 200 and resp.json()["version"] == 4


async def test_tokens_of_a_logged_out_session_are_refused(service):
    app, client, issuer, names = service
    story = Story()
    account = story.create("Acme", admin="alice@example.com")
    await publish_story(names, story, app)
    token = issuer.token(email="alice@example.com", acct=account, sid="session-1")
    assert (await client.get(f"/licences/{account}", headers=bearer(token))).status_code == 200
    link = NatsLink(names.url, "test-identity")
    await link.start(wait=5)
    try:
        await RevocationList(link, revocation_bucket(names.stream)).revoke("session-1")
    finally:
        await link.close()

    async def refused():
        resp = await client.get(f"/licences/{account}", headers=bearer(token))
        return resp.status_code == 401 and resp.json()["error"] == "invalid_token"

    await eventually(refused, timeout=5, what="the revocation to reach the licensing consumer")


async def test_ops_routes(service):
    app, client, issuer, names = service
    assert (await client.get("/healthz")).status_code == 200
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"database": True, "nats": True}
    assert "consumer_events_applied_total" in (await client.get("/metrics")).text
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert {"/licences/{account_id}", "/licences/{account_id}/history"} <= set(paths)
