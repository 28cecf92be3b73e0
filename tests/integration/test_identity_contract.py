"""The identity service as an outside client reading only the public contract
sees it: deviations found in the contract audit, each pinned by a test."""

from __future__ import annotations

import uuid

import pytest

from tests.support.identity import PASSWORD, identity_stack, replica, unique_email
from tests.support.tokens import ACCESS, EXCHANGE, bearer, claims_of

pytestmark = pytest.mark.integration

JSON = {"content-type": "application/json"}


def email() -> str:
    return unique_email("c")


@pytest.fixture
async def stack(new_database, nats_names):
    async with identity_stack(new_database, nats_names, identity_switch_grace_seconds=0.5) as running:
        yield running


async def test_lone_surrogates_are_a_422_never_a_500(stack):
    rep, _, _ = stack
    who = email()
    await rep.register(who)
    session = (await rep.login(who))["session_token"]
    cases = [
        ("/users", ('{"email": "%s", "password": "%s", "display_name": "Bob\\ud800"}' % (email(), PASSWORD)), {}),
        ("/sessions", ('{"email": "%s", "password": "%s", "account_id": "\\ud800"}' % (who, PASSWORD)), {}),
        ("/sessions/current/switch", '{"account_id": "\\udfff"}', bearer(session)),
    ]
    for path, raw, headers in cases:
        r = await rep.client.post(path, content=raw.encode(), headers={**JSON, **headers})
        assert r.status_code == 422 and r.json()["error"] == "validation_error", (path, r.status_code, r.text)
    async with rep.app.state.pool.connection() as conn:
        (users,) = await (await conn.execute("SELECT count(*) FROM users")).fetchone()
    assert users == 1


async def test_invalid_credentials_401_carries_a_bearer_challenge(stack):
    rep, _, _ = stack
    who = email()
    await rep.register(who)
    for body in ({"email": who, "password": "wrong password"}, {"email": email(), "password": PASSWORD}):
        r = await rep.client.post("/sessions", json=body)
        assert r.status_code == 401 and r.json()["error"] == "invalid_credentials"
        assert r.headers["www-authenticate"].startswith("Bearer")


async def test_me_has_exactly_the_contract_fields(stack):
    rep, _, _ = stack
    who = email()
    await rep.register(who)
    out = await rep.login(who)
    for token in (out["session_token"], out["access_token"]):
        r = await rep.client.get("/me", headers=bearer(token))
        assert r.status_code == 200
        assert set(r.json()) == {"user_id", "email", "display_name", "active_account_id", "accounts"}


async def test_min_version_must_be_a_json_integer(stack):
    rep, _, _ = stack
    who = email()
    await rep.register(who)
    session = (await rep.login(who))["session_token"]
    for bad in (True, "3", 1.0, 1.5, [1], {"v": 1}):
        r = await rep.client.post("/sessions/current/switch", json={"account_id": str(uuid.uuid4()),
                                                                    "min_version": bad}, headers=bearer(session))
        assert r.status_code == 422 and r.json()["error"] == "validation_error", (bad, r.status_code, r.text)


async def test_switch_exchange_and_login_right_after_a_write_without_min_version(stack):
    """A client that forgets `min_version` (or cannot know it: a person just added by
    someone else) is not refused because the read model is a few milliseconds behind."""
    rep, pub, _ = stack
    who = email()
    await rep.register(who)
    out = await rep.login(who)
    session, access = out["session_token"], out["access_token"]
    created, _ = await pub.create_account("Fresh SARL", who)
    r = await rep.switch(session, created)  # no min_version, the events may not be applied yet
    assert r.status_code == 200, r.text
    assert r.json()["account"]["account_id"] == created
    # added to an existing account by someone else: login into it, and exchange for it
    other, _ = await pub.create_account("Other SAS", email())
    await rep.switch(session, created, min_version=2)
    r = await rep.switch(session, other, min_version=2)
    assert r.status_code == 403 and r.json()["error"] == "not_a_member"
    await pub.send(pub.added(other, who.upper()))
    r = await rep.client.post("/oauth2/token", data={"grant_type": EXCHANGE, "subject_token": access,
                                                     "subject_token_type": ACCESS, "audience": other})
    assert r.status_code == 200, r.text
    assert claims_of(r.json()["access_token"])["acct"] == other
    third, _ = await pub.create_account("Third EURL", who)
    r = await rep.client.post("/sessions", json={"email": who, "password": PASSWORD, "account_id": third})
    assert r.status_code == 201 and r.json()["active_account_id"] == third, r.text
    # still refused when the person really is not a member
    r = await rep.switch(session, str(uuid.uuid4()))
    assert r.status_code == 403 and r.json()["error"] == "not_a_member"
    r = await rep.switch(session, "not-an-account")
    assert r.status_code == 403 and r.json()["error"] == "not_a_member"


async def test_an_enormous_body_is_a_clean_413(stack):
    rep, _, _ = stack
    who = email()
    await rep.register(who)
    session = (await rep.login(who))["session_token"]
    big = b'{"email": "' + b"a" * (2 * 1024 * 1024) + b'@example.com", "password": "' + PASSWORD.encode() + b'"}'
    for path, headers in (("/users", JSON), ("/sessions", JSON), ("/sessions/current/switch", {**JSON, **bearer(session)})):
        r = await rep.client.post(path, content=big, headers=headers)
        assert r.status_code == 413 and r.json()["error"] == "payload_too_large", (path, r.status_code)
    r = await rep.client.post("/oauth2/token", content=b"grant_type=" + b"a" * (2 * 1024 * 1024),
                              headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code in (400, 413) and "error" in r.json()
    async def streamed():  # no Content-Length: counted as it arrives
        yield b'{"email": "'
        for _ in range(40):
            yield b"a" * 65536

    for path in ("/users", "/sessions/current/switch"):
        r = await rep.client.post(path, content=streamed(), headers={**JSON, **bearer(session)})
        assert r.status_code == 413 and r.json()["error"] == "payload_too_large", (path, r.status_code)
    # a large field inside the limit is still the field's own 422
    r = await rep.client.post("/users", json={"email": email(), "password": "x" * 100_000})
    assert r.status_code == 422 and r.json()["error"] == "validation_error"


async def test_exchange_min_version_odd_digits_are_a_400(stack):
    rep, _, _ = stack
    who = email()
    await rep.register(who)
    access = (await rep.login(who))["access_token"]
    for odd in ("²", "١", "1e3", "-1", " 1"):
        r = await rep.client.post("/oauth2/token", data={"grant_type": EXCHANGE, "subject_token": access,
                                                         "subject_token_type": ACCESS, "audience": str(uuid.uuid4()),
                                                         "min_version": odd})
        assert r.status_code == 400 and r.json()["error"] == "invalid_request", (odd, r.status_code, r.text)
        assert r.headers["cache-control"] == "no-store"


async def test_any_unparsable_json_body_is_a_422(stack):
    rep, _, _ = stack
    who = email()
    await rep.register(who)
    session = (await rep.login(who))["session_token"]
    for raw in (b"\xff\xfe not utf-8", b"[" * 100_000 + b"]" * 100_000, b'{"email": ' + b"9" * 5000 + b"}",
                b"{not json", b"", b"null"):
        for path, headers in (("/users", JSON), ("/sessions", JSON), ("/sessions/current/switch", {**JSON, **bearer(session)})):
            r = await rep.client.post(path, content=raw, headers=headers)
            assert r.status_code == 422 and r.json()["error"] == "validation_error", (path, raw[:20], r.status_code, r.text)


async def test_token_endpoint_is_form_only_and_documented_as_such(stack):
    rep, _, _ = stack
    who = email()
    await rep.register(who)
    access = (await rep.login(who))["access_token"]
    form = {"grant_type": EXCHANGE, "subject_token": access, "subject_token_type": ACCESS,
            "audience": str(uuid.uuid4())}
    for kw in ({"json": form}, {"content": b"", "headers": {"content-type": "text/plain"}}, {}):
        r = await rep.client.post("/oauth2/token", **kw)
        assert r.status_code == 400 and r.headers["cache-control"] == "no-store"
        body = r.json()
        assert body["error"] == "invalid_request" and "x-www-form-urlencoded" in body["error_description"], body
    doc = (await rep.client.get("/openapi.json")).json()
    op = doc["paths"]["/oauth2/token"]["post"]
    schema = op["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]
    assert {"grant_type", "subject_token", "subject_token_type", "audience"} <= set(schema["required"])
    assert {"200", "400"} <= set(op["responses"])


async def test_token_exchange_missing_parameters_are_invalid_request(stack):
    rep, _, _ = stack
    who = email()
    await rep.register(who)
    access = (await rep.login(who))["access_token"]
    form = {"grant_type": EXCHANGE, "subject_token": access, "subject_token_type": ACCESS,
            "audience": str(uuid.uuid4())}
    for missing in form:
        r = await rep.client.post("/oauth2/token", data={k: v for k, v in form.items() if k != missing})
        assert r.status_code == 400 and r.json()["error"] == "invalid_request", (missing, r.text)
        assert set(r.json()) >= {"error", "error_description"}


async def test_openapi_documents_the_contract_responses(stack):
    rep, _, _ = stack
    paths = (await rep.client.get("/openapi.json")).json()["paths"]
    expected = {
        ("/users", "post"): {"201", "409", "422"},
        ("/sessions", "post"): {"201", "401", "403", "422", "429"},
        ("/sessions/current", "delete"): {"204", "401"},
        ("/me", "get"): {"200", "401"},
        ("/me/accounts", "get"): {"200", "401"},
        ("/sessions/current/switch", "post"): {"200", "401", "403", "422", "503"},
    }
    for (path, method), codes in expected.items():
        responses = paths[path][method]["responses"]
        assert codes <= set(responses), (path, sorted(responses))
    login = paths["/sessions"]["post"]["responses"]["201"]["content"]["application/json"]["schema"]
    assert login.get("$ref") or login.get("properties")
    switch = paths["/sessions/current/switch"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert switch.get("$ref") or switch.get("properties")


async def test_the_grace_wait_is_woken_by_another_replica(stack):
    """The replica answering may not run the projector: it learns of the new events by NOTIFY."""
    rep, pub, settings = stack
    who = email()
    await rep.register(who)
    async with replica(settings.model_copy(update={"identity_projector": False,
                                                   "identity_switch_grace_seconds": 5.0})) as other:
        session = (await other.login(who))["session_token"]
        created, _ = await pub.create_account("Elsewhere SA", who)
        r = await other.switch(session, created)
        assert r.status_code == 200, r.text
        assert other.service.waiters.notifications > 0
