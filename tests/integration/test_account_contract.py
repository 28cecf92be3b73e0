"""Contract audit of the account HTTP API: cases an outside client who knows only
CONTRACT.md may try (the real app, lifespan included, on real PostgreSQL and NATS)."""

from __future__ import annotations

import pytest

from tests.support.account_api import account_api, assert_error

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def api(infra, new_database):
    async with account_api(infra, new_database, "acctcontract", country="DE", raise_app_exceptions=False) as running:
        yield running


async def test_a_body_that_is_not_utf8_is_422_whatever_its_content_type(api):
    acct = (await api.create())["account_id"]
    admin = api.token("ann@example.com", acct)
    before = await api.event_count()
    for path in ("/accounts", f"/accounts/{acct}/members"):
        for content_type in ("text/plain", "application/octet-stream", None, "application/json"):
            headers = admin | ({"content-type": content_type} if content_type else {})
            r = await api.client.post(path, content=b"\xff\xfe{\x00", headers=headers)
            assert_error(r, 422, "validation_error")
    assert await api.event_count() == before


async def test_if_match_with_digits_that_are_not_ascii_is_412_not_500(api):
    created = await api.create()
    acct = created["account_id"]
    admin = api.token("ann@example.com", acct)
    for value in ('"\xb2"'.encode("latin-1"), "\xb2".encode("latin-1"), '"١"'.encode(), '"２"'.encode()):
        r = await api.client.put(f"/accounts/{acct}/plan", json={"plan": "business"},
                                 headers=admin | {"If-Match": value})
        assert_error(r, 412, "precondition_failed")
    r = await api.client.get(f"/accounts/{acct}", headers=admin)
    assert r.json()["plan"] == "team" and r.json()["version"] == created["version"]


async def test_if_match_accepts_a_list_of_versions_one_of_which_is_current(api):
    created = await api.create()
    acct, version = created["account_id"], created["version"]
    admin = api.token("ann@example.com", acct)
    r = await api.client.put(f"/accounts/{acct}/plan", json={"plan": "business"},
                             headers=admin | {"If-Match": f'"{version + 7}", "{version}"'})
    assert r.status_code == 200, r.text
    assert r.json() == {"plan": "business", "version": version + 1}
    r = await api.client.put(f"/accounts/{acct}/plan", json={"plan": "solo"},
                             headers=admin | {"If-Match": f'"{version}", "{version + 9}"'})
    assert_error(r, 412, "precondition_failed")


@pytest.mark.parametrize("spelling", [str.upper, lambda a: a.replace("-", ""), lambda a: "{" + a + "}",
                                      lambda a: "urn:uuid:" + a])
async def test_any_spelling_of_the_account_uuid_names_the_account(api, spelling):
    """The identity service takes any spelling of an account's UUID; so does this service."""
    acct = (await api.create())["account_id"]
    admin = api.token("ann@example.com", acct)
    r = await api.client.get(f"/accounts/{spelling(acct)}", headers=admin)
    assert r.status_code == 200, r.text
    assert r.json()["account_id"] == acct
    r = await api.client.post(f"/accounts/{spelling(acct)}/members", json={"email": "b@example.com", "role": "user"},
                              headers=admin)
    assert r.status_code == 201, r.text
    # and a token carrying another spelling of the id (canonical path) is the same account too
    r = await api.client.get(f"/accounts/{acct}", headers=api.token("ann@example.com", spelling(acct)))
    assert r.status_code == 200, r.text


async def test_a_json_body_that_cannot_be_parsed_at_all_is_422_like_the_identity_service(api):
    """Deep nesting or a number too long for Python's int are what FastAPI answers with a bare 400;
    the identity service (and every other unreadable body here) says 422 validation_error."""
    acct = (await api.create())["account_id"]
    admin = api.token("ann@example.com", acct) | {"content-type": "application/json"}
    before = await api.event_count()
    for path in ("/accounts", f"/accounts/{acct}/members"):
        for body in ("[" * 100_000 + "]" * 100_000, '{"name": ' + "9" * 5000 + ', "country": "DE"}'):
            r = await api.client.post(path, content=body.encode(), headers=admin)
            assert_error(r, 422, "validation_error")
    assert await api.event_count() == before
