"""The account HTTP API through the real app (lifespan included) on the real PostgreSQL and NATS."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from shared.events import Envelope
from tests.support.account_api import account_api, assert_error
from tests.support.tokens import bearer

pytestmark = pytest.mark.integration

SIRET = "73282932000074"


@pytest.fixture(scope="module")
async def api(infra, new_database):
    async with account_api(infra, new_database, "acctapi", country="FR") as running:
        yield running


# ----------------------------------------------------------------- create and read


async def test_create_account_makes_the_caller_admin(api):
    r = await api.client.post(
        "/accounts", json={"name": "  Durand BTP ", "country": "fr", "company_id": "732 829 320 00074"},
        headers=api.token("Ann@Example.com"),
    )
    assert r.status_code == 201, r.text
    body = r.json()
    acct = body["account_id"]
    assert uuid.UUID(acct)
    assert body | {"referral_code": None} == {
        "account_id": acct, "name": "Durand BTP", "country": "FR", "company_id": SIRET, "plan": "team",
        "referral_code": None, "referred_by": None, "seats_included": 5, "seats_used": 1, "version": 2,
    }
    assert body["referral_code"] and r.headers["location"] == f"/accounts/{acct}" and r.headers["etag"] == '"2"'
    headers = api.token("ann@example.com", acct)
    r = await api.client.get(f"/accounts/{acct}", headers=headers)
    assert r.status_code == 200 and r.json()["version"] == 2 and r.json()["name"] == "Durand BTP"
    r = await api.client.get(f"/accounts/{acct}/members", headers=headers)
    assert r.json() == [{"email": "ann@example.com", "role": "admin",
                         "rights": [f"{a}:write" for a in ("quotes", "invoices", "projects", "planning",
                                                           "purchases", "reports", "settings")]}]
    # the same SIRET again: one licence per company
    before = await api.event_count()
    r = await api.client.post("/accounts", json={"name": "Other", "country": "FR", "company_id": SIRET},
                              headers=api.token("bob@example.com"))
    assert_error(r, 409, "company_id_taken")
    assert await api.event_count() == before


async def test_referral_code(api):
    referrer = await api.create()
    referred = await api.create("bob@example.com", referral_code=referrer["referral_code"])
    assert referred["referred_by"] == referrer["account_id"]
    before = await api.event_count()
    for code in ("NOPE", "NUL\x00", "", "é"):
        r = await api.client.post("/accounts", json={"name": "X", "country": "FR", "referral_code": code},
                                  headers=api.token("bob@example.com"))
        assert_error(r, 422, "unknown_referral_code")
    assert await api.event_count() == before


@pytest.mark.parametrize("body", [
    {"name": "", "country": "FR"},
    {"name": "x" * 201, "country": "FR"},
    {"name": "a\nb", "country": "FR"},
    {"name": "X", "country": "ZZ"},
    {"name": "X", "country": "FRA"},
    {"name": "X", "country": "FR", "company_id": "73282932000079"},
    {"name": "X", "country": "FR", "company_id": "1234"},
    {"name": "X", "country": "DE", "company_id": "  "},
    {"name": "X", "country": "FR", "plan": "gold"},
    {"name": 5, "country": "FR"},
    {"country": "FR"},
    {"name": "X"},
    {"name": "X", "country": "FR", "company_id": 73282932000074},
    [],
    "text",
])
async def test_bad_create_requests_are_422_and_store_nothing(api, body):
    before = await api.event_count()
    r = await api.client.post("/accounts", json=body, headers=api.token("ann@example.com"))
    assert_error(r, 422, "validation_error")
    assert await api.event_count() == before


async def test_not_json_is_422(api):
    r = await api.client.post("/accounts", content=b"{not json", headers=api.token("ann@example.com") |
                              {"content-type": "application/json"})
    assert_error(r, 422, "validation_error")


# ----------------------------------------------------------------- tokens


async def test_bad_tokens_are_401_invalid_token(api):
    acct = (await api.create())["account_id"]
    now = 1_700_000_000
    tokens = [
        None,
        "Bearer",
        "Basic abc",
        "Bearer not.a.jwt",
        "Bearer " + api.issuer.mint(email="ann@example.com", acct=acct, exp=now, iat=now - 300),
        "Bearer " + api.issuer.forge(email="ann@example.com", acct=acct),
        "Bearer " + api.issuer.mint(email="ann@example.com", acct=acct, audience="someone-else"),
        "Bearer " + api.issuer.mint(email="ann@example.com", acct=acct, issuer="https://evil.example"),
        "Bearer " + api.issuer.mint(email="ann@example.com", acct=acct, typ="JWT"),
        "Bearer " + api.issuer.mint(email="ann@example.com", acct=acct, kid="unknown-kid"),
        "Bearer " + api.issuer.mint(email="ann@example.com", acct=acct, drop=["sid"]),
    ]
    for value in tokens:
        headers = {} if value is None else {"Authorization": value}
        for method, path in (("GET", f"/accounts/{acct}"), ("POST", "/accounts")):
            r = await api.client.request(method, path, headers=headers, json={"name": "X", "country": "FR"})
            assert_error(r, 401, "invalid_token")
            assert r.headers["www-authenticate"].startswith("Bearer")


async def test_a_revoked_session_is_refused(api):
    acct = (await api.create())["account_id"]
    sid = str(uuid.uuid4())
    headers = bearer(api.issuer.mint(sub="u-ann", email="ann@example.com", acct=acct, sid=sid))
    assert (await api.client.get(f"/accounts/{acct}", headers=headers)).status_code == 200
    revocations = api.app.state.guard.revocations
    await revocations.revoke(sid)
    r = await api.client.get(f"/accounts/{acct}", headers=headers)
    assert_error(r, 401, "invalid_token")


# ----------------------------------------------------------------- authorisation


async def test_acct_must_match_and_current_membership_and_role_decide(api):
    acct = (await api.create())["account_id"]
    other = (await api.create("zed@example.com"))["account_id"]
    admin = api.token("ann@example.com", acct)
    assert_error(await api.client.get(f"/accounts/{acct}", headers=api.token("ann@example.com", other)),
                 403, "wrong_account")
    assert_error(await api.client.get(f"/accounts/{acct}", headers=api.token("ann@example.com")),
                 403, "wrong_account")
    assert_error(await api.client.get(f"/accounts/{acct}", headers=api.token("eve@example.com", acct)),
                 403, "forbidden")
    # a token whose claims say admin does not make a non-member an admin
    eve = api.token("eve@example.com", acct, role="admin")
    assert_error(await api.client.post(f"/accounts/{acct}/members", json={"email": "x@example.com", "role": "user"},
                                       headers=eve), 403, "forbidden")

    r = await api.client.post(f"/accounts/{acct}/members", json={"email": "Bob@Example.com", "role": "user"},
                              headers=admin)
    assert r.status_code == 201 and r.json()["version"] == 3
    bob = api.token("BOB@example.com", acct)
    assert (await api.client.get(f"/accounts/{acct}/members", headers=bob)).status_code == 200
    for method, path, body in (
        ("PUT", f"/accounts/{acct}/plan", {"plan": "business"}),
        ("POST", f"/accounts/{acct}/members", {"email": "c@example.com", "role": "user"}),
        ("PATCH", f"/accounts/{acct}/members/ann@example.com", {"role": "user"}),
        ("DELETE", f"/accounts/{acct}/members/ann@example.com", None),
        ("GET", f"/accounts/{acct}/events", None),
    ):
        assert_error(await api.client.request(method, path, json=body, headers=bob), 403, "forbidden")

    # promoted: at once; removed: at once, with the same unexpired token
    r = await api.client.patch(f"/accounts/{acct}/members/bob@example.com", json={"role": "admin"}, headers=admin)
    assert r.status_code == 200 and r.json()["role"] == "admin" and r.json()["version"] == 4
    assert (await api.client.get(f"/accounts/{acct}/events", headers=bob)).status_code == 200
    r = await api.client.delete(f"/accounts/{acct}/members/bob@example.com", headers=admin)
    assert r.status_code == 200 and r.json() == {"version": 5}
    assert_error(await api.client.get(f"/accounts/{acct}", headers=bob), 403, "forbidden")


async def test_missing_accounts_are_404(api):
    missing = str(uuid.uuid4())
    assert_error(await api.client.get(f"/accounts/{missing}", headers=api.token("ann@example.com", missing)),
                 404, "not_found")
    assert_error(await api.client.get("/accounts/nope", headers=api.token("ann@example.com", "nope")),
                 404, "not_found")
    assert_error(await api.client.put(f"/accounts/{missing}/plan", json={"plan": "solo"},
                                      headers=api.token("ann@example.com", missing)), 404, "not_found")


# ----------------------------------------------------------------- members, plans, conflicts


async def test_member_lifecycle_and_conflicts(api):
    acct = (await api.create(plan="solo"))["account_id"]
    admin = api.token("ann@example.com", acct)
    url = f"/accounts/{acct}/members"
    before = await api.event_count()
    assert_error(await api.client.post(url, json={"email": "bob@example.com", "role": "user"}, headers=admin),
                 409, "seat_limit")
    assert await api.event_count() == before
    r = await api.client.put(f"/accounts/{acct}/plan", json={"plan": "team"}, headers=admin)
    assert r.status_code == 200 and r.json() == {"plan": "team", "version": 3}
    r = await api.client.post(url, json={"email": "bob@example.com", "role": "viewer",
                                         "rights": ["reports:read", "quotes:read"]}, headers=admin)
    assert r.status_code == 201
    assert r.json() == {"email": "bob@example.com", "role": "viewer", "rights": ["quotes:read", "reports:read"],
                        "version": 4}
    assert_error(await api.client.post(url, json={"email": "BOB@example.com", "role": "user"}, headers=admin),
                 409, "already_member")
    assert_error(await api.client.put(f"/accounts/{acct}/plan", json={"plan": "solo"}, headers=admin),
                 409, "seat_limit")
    assert_error(await api.client.delete(f"{url}/ann@example.com", headers=admin), 409, "last_admin")
    assert_error(await api.client.patch(f"{url}/ann@example.com", json={"role": "viewer"}, headers=admin),
                 409, "last_admin")
    assert_error(await api.client.delete(f"{url}/nobody@example.com", headers=admin), 404, "not_a_member")
    for body in ({"email": "x@example.com", "role": "owner"}, {"email": "x@example.com", "role": "user",
                 "rights": ["quotes:delete"]}, {"email": "not-an-email", "role": "user"}, {"role": "user"},
                 {"email": "x@example.com", "role": "user", "rights": "quotes:read"}):
        assert_error(await api.client.post(url, json=body, headers=admin), 422, "validation_error")
    assert_error(await api.client.patch(f"{url}/bob@example.com", json={}, headers=admin), 422, "validation_error")
    assert_error(await api.client.put(f"/accounts/{acct}/plan", json={"plan": "gold"}, headers=admin),
                 422, "validation_error")
    assert await api.event_count() == before + 2
    r = await api.client.patch(f"{url}/bob@example.com", json={"role": "user"}, headers=admin)
    assert r.json()["rights"] == ["quotes:write", "invoices:write", "projects:write", "planning:write",
                                  "purchases:write", "reports:write", "settings:read"]
    # a write that changes nothing still answers with the current version
    r = await api.client.put(f"/accounts/{acct}/plan", json={"plan": "team"}, headers=admin)
    assert r.json() == {"plan": "team", "version": 5}


async def test_if_match(api):
    acct = (await api.create())["account_id"]
    admin = api.token("ann@example.com", acct)
    url = f"/accounts/{acct}/members"
    r = await api.client.post(url, json={"email": "b@example.com", "role": "user"},
                              headers=admin | {"If-Match": '"1"'})
    assert_error(r, 412, "precondition_failed")
    r = await api.client.post(url, json={"email": "b@example.com", "role": "user"},
                              headers=admin | {"If-Match": '"2"'})
    assert r.status_code == 201 and r.json()["version"] == 3
    assert_error(await api.client.delete(f"{url}/b@example.com", headers=admin | {"If-Match": '"2"'}),
                 412, "precondition_failed")
    r = await api.client.delete(f"{url}/b@example.com", headers=admin | {"If-Match": '"3"'})
    assert r.json() == {"version": 4}


async def test_concurrent_member_adds_through_http_get_distinct_versions(api):
    acct = (await api.create(plan="business"))["account_id"]
    admin = api.token("ann@example.com", acct)
    rs = await asyncio.gather(*(api.client.post(f"/accounts/{acct}/members", json={
        "email": f"m{i}@example.com", "role": "user"}, headers=admin) for i in range(6)))
    assert all(r.status_code == 201 for r in rs), [r.text for r in rs]
    assert sorted(r.json()["version"] for r in rs) == list(range(3, 9))


# ----------------------------------------------------------------- the audit log and the relay


async def test_events_endpoint_pages_the_stream_as_cloudevents(api):
    acct = (await api.create())["account_id"]
    admin = api.token("ann@example.com", acct)
    for i in range(3):
        await api.client.post(f"/accounts/{acct}/members", json={"email": f"p{i}@example.com", "role": "viewer"},
                              headers=admin)
    r = await api.client.get(f"/accounts/{acct}/events", params={"limit": 2}, headers=admin)
    page = r.json()
    assert [e["streamversion"] for e in page["events"]] == [1, 2] and page["next"] == 2
    first = Envelope.model_validate(page["events"][0])
    assert first.type == "AccountCreated" and first.subject == acct and first.specversion == "1.0"
    assert first.source == "account-service" and first.data["plan"] == "team"
    r = await api.client.get(f"/accounts/{acct}/events", params={"after": 2, "limit": 2}, headers=admin)
    assert [e["streamversion"] for e in r.json()["events"]] == [3, 4] and r.json()["next"] == 4
    r = await api.client.get(f"/accounts/{acct}/events", params={"after": 4}, headers=admin)
    assert [e["type"] for e in r.json()["events"]] == ["MemberAdded"] and r.json()["next"] is None
    for params in ({"limit": 0}, {"limit": 5000}, {"after": -1}, {"after": "x"}):
        assert_error(await api.client.get(f"/accounts/{acct}/events", params=params, headers=admin),
                     422, "validation_error")

    # the relay publishes the very same envelopes to JetStream
    link = api.app.state.runtime.link
    js = await link.wait_connected(5)
    sub = await js.subscribe(f"{api.settings.nats_subject_prefix}.{acct}.>", ordered_consumer=True)
    try:
        got = []
        while len(got) < 5:
            msg = await sub.next_msg(timeout=10)
            got.append((msg.subject, msg.headers["Nats-Msg-Id"], Envelope.from_json(msg.data)))
    finally:
        await sub.unsubscribe()
    audit = [Envelope.model_validate(e) for e in
             (await api.client.get(f"/accounts/{acct}/events", headers=admin)).json()["events"]]
    assert [g[2] for g in got] == audit
    assert [g[1] for g in got] == [e.id for e in audit]
    assert got[2][0] == f"{api.settings.nats_subject_prefix}.{acct}.MemberAdded"


# ----------------------------------------------------------------- operations


async def test_ops_routes(api):
    assert (await api.client.get("/healthz")).json() == {"status": "ok"}
    r = await api.client.get("/readyz")
    assert r.status_code == 200 and r.json()["checks"] == {"database": True, "nats": True}
    metrics = (await api.client.get("/metrics")).text
    assert "http_requests_total" in metrics and "account_relay_published_total" in metrics
    paths = (await api.client.get("/openapi.json")).json()["paths"]
    assert {"/accounts", "/accounts/{account_id}", "/accounts/{account_id}/plan", "/accounts/{account_id}/members",
            "/accounts/{account_id}/members/{email}", "/accounts/{account_id}/events"} <= set(paths)
    assert_error(await api.client.get("/nowhere"), 404, "not_found")


async def test_hostile_inputs_are_4xx_never_500(api):
    acct = (await api.create())["account_id"]
    admin = api.token("ann@example.com", acct)
    before = await api.event_count()
    for method, path, body in (
        ("POST", "/accounts", {"name": "a\x00b", "country": "FR"}),
        ("POST", "/accounts", {"name": "X", "country": "DE", "company_id": "HRB\x00"}),
        ("POST", "/accounts", {"name": "X", "country": "\x00F"}),
        ("POST", f"/accounts/{acct}/members", {"email": "a\x00@example.com", "role": "user"}),
        ("POST", f"/accounts/{acct}/members", {"email": "b@example.com", "role": "user\x00"}),
        ("POST", f"/accounts/{acct}/members", {"email": "b@example.com", "role": "user", "rights": ["\x00"]}),
        ("PATCH", f"/accounts/{acct}/members/a%00b@example.com", {"role": "user"}),
        ("DELETE", f"/accounts/{acct}/members/{'x' * 300}@example.com", None),
        ("PUT", f"/accounts/{acct}/plan", {"plan": "\x00"}),
    ):
        r = await api.client.request(method, path, json=body, headers=admin)
        assert 400 <= r.status_code < 500 and r.json()["error"], (method, path, r.status_code, r.text)
    assert await api.event_count() == before
    r = await api.client.get(f"/accounts/{acct}/events", params={"after": 10**20}, headers=admin)
    assert r.status_code == 200 and r.json() == {"events": [], "next": None}
    r = await api.client.put(f"/accounts/{acct}/plan", json={"plan": "solo"},
                             headers=admin | {"If-Match": '"' + "9" * 40 + '"'})
    assert_error(r, 412, "precondition_failed")
