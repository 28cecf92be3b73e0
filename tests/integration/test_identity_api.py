"""The identity service's HTTP contract against real PostgreSQL and NATS."""

from __future__ import annotations

import time
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from identity_service import __main__ as identity_main
from identity_service import keys
from identity_service.keys import make_signer
from shared.auth import decode_access_token, parse_jwks
from tests.support.identity import PASSWORD, identity_stack, replica, settings_for, unique_email
from tests.support import bad_tokens
from tests.support.tokens import ACCESS, EXCHANGE, bearer, claims_of

pytestmark = pytest.mark.integration


def email() -> str:
    return unique_email("p")


@pytest.fixture
async def stack(new_database, nats_names):
    async with identity_stack(new_database, nats_names, identity_login_max_failures=3) as running:
        yield running


async def test_register_normalises_and_refuses_duplicates_and_bad_input(stack):
    rep, _, _ = stack
    local = uuid.uuid4().hex[:8]
    r = await rep.client.post("/users", json={"email": f"  {local.upper()}@Example.COM ", "password": PASSWORD,
                                              "display_name": "Bob"})
    assert r.status_code == 201 and r.json()["email"] == f"{local}@example.com"
    r = await rep.client.post("/users", json={"email": f"{local}@EXAMPLE.com", "password": PASSWORD})
    assert r.status_code == 409 and r.json()["error"] == "email_taken"
    for body in ({"email": "not-an-email", "password": PASSWORD}, {"email": email(), "password": "short"},
                 {"email": email()}, {"password": PASSWORD}):
        r = await rep.client.post("/users", json=body)
        assert r.status_code == 422 and r.json()["error"] == "validation_error", r.text
        assert PASSWORD not in r.text
    r = await rep.client.post("/users", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422


async def test_login_any_case_lands_and_logout_revokes_everything(stack):
    rep, pub, settings = stack
    who = email()
    user_id = await rep.register(who)
    out = await rep.login(who.upper())
    assert out["user_id"] == user_id and out["accounts"] == [] and out["active_account_id"] is None
    assert "acct" not in claims_of(out["access_token"])
    session, access = out["session_token"], out["access_token"]
    assert len(session) >= 43
    for token in (session, access):
        r = await rep.client.get("/me", headers=bearer(token))
        assert r.status_code == 200 and r.json()["email"] == who
    r = await rep.client.delete("/sessions/current", headers=bearer(session))
    assert r.status_code == 204
    for token in (session, access):
        r = await rep.client.get("/me", headers=bearer(token))
        assert r.status_code == 401 and r.json()["error"] == "invalid_token"
        assert r.headers["www-authenticate"].startswith("Bearer")
    r = await rep.switch(session, str(uuid.uuid4()))
    assert r.status_code == 401
    # the revocation reached the shared bucket for the other services
    assert rep.service.revocations.is_revoked(claims_of(access)["sid"])


async def test_wrong_password_then_throttled_with_retry_after(stack):
    rep, _, settings = stack
    who = email()
    await rep.register(who)
    r = await rep.client.post("/sessions", json={"email": "nobody@example.com", "password": "x" * 12})
    assert r.status_code == 401 and r.json()["error"] == "invalid_credentials"
    statuses = []
    for _ in range(settings.identity_login_max_failures):
        r = await rep.client.post("/sessions", json={"email": who, "password": "wrong password!"})
        statuses.append(r.status_code)
    assert statuses[:-1] == [401] * (settings.identity_login_max_failures - 1) and statuses[-1] == 429
    # even the right password is refused while locked, and another replica agrees (DB-counted)
    async with replica(settings.model_copy(update={"identity_projector": False})) as other:
        r = await other.client.post("/sessions", json={"email": who.upper(), "password": PASSWORD})
        assert r.status_code == 429 and r.json()["error"] == "too_many_attempts"
        assert int(r.headers["retry-after"]) >= 1


async def test_login_landing_switch_and_exchange(stack):
    rep, pub, _ = stack
    who = email()
    await rep.register(who)
    zeta, _ = await pub.create_account("Zeta SARL", who)
    alpha, v = await pub.create_account("alpha BTP", who)
    other, _ = await pub.create_account("Not mine", email())
    out = await rep.login(who)  # no min_version at login: wait for the projection in the test
    session = out["session_token"]
    r = await rep.switch(session, alpha, min_version=v)
    assert r.status_code == 200
    r = await rep.switch(session, zeta.upper(), min_version=2)  # any spelling of the UUID
    assert r.status_code == 200
    body = r.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 300
    assert body["account"] == {"account_id": zeta, "name": "Zeta SARL", "role": "admin", "rights": ["settings:write"]}
    claims = claims_of(body["access_token"])
    assert claims["acct"] == zeta and claims["role"] == "admin" and claims["exp"] - claims["iat"] <= 300
    # the list is sorted by name (case-insensitive), and the last used account is where we land
    r = await rep.client.get("/me/accounts", headers=bearer(session))
    assert [a["name"] for a in r.json()] == ["alpha BTP", "Zeta SARL"]
    assert r.json()[0] == {"account_id": alpha, "name": "alpha BTP", "country": "FR", "role": "admin",
                           "rights": ["settings:write"]}
    again = await rep.login(who)
    assert again["active_account_id"] == zeta and claims_of(again["access_token"])["acct"] == zeta
    assert [a["name"] for a in again["accounts"]] == ["alpha BTP", "Zeta SARL"]
    asked = await rep.login(who, account_id=alpha)
    assert asked["active_account_id"] == alpha
    r = await rep.client.post("/sessions", json={"email": who, "password": PASSWORD, "account_id": other})
    assert r.status_code == 403 and r.json()["error"] == "not_a_member"
    r = await rep.switch(session, other, min_version=2)
    assert r.status_code == 403 and r.json()["error"] == "not_a_member"
    r = await rep.client.get("/me", headers=bearer(session))
    assert r.json()["active_account_id"] == zeta
    # RFC 8693: access token for zeta -> token for alpha
    form = {"grant_type": EXCHANGE, "subject_token": body["access_token"], "subject_token_type": ACCESS,
            "audience": alpha}
    r = await rep.client.post("/oauth2/token", data=form)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["issued_token_type"] == ACCESS and out["token_type"] == "Bearer" and out["expires_in"] == 300
    c = claims_of(out["access_token"])
    assert c["acct"] == alpha and c["sid"] == claims["sid"] and c["role"] == "admin"
    r = await rep.client.post("/oauth2/token", data={**form, "audience": other})
    assert r.status_code == 400 and r.json()["error"] == "invalid_target"
    r = await rep.client.post("/oauth2/token", data={**form, "grant_type": "password"})
    assert r.status_code == 400 and r.json()["error"] == "unsupported_grant_type"
    r = await rep.client.post("/oauth2/token", data={**form, "subject_token": "garbage"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    r = await rep.client.post("/oauth2/token", data={**form, "subject_token": session})
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    r = await rep.client.post("/oauth2/token", json=form)
    assert r.status_code == 400 and "error_description" in r.json()
    await rep.client.delete("/sessions/current", headers=bearer(session))
    r = await rep.client.post("/oauth2/token", data=form)
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"


async def test_switch_input_errors(stack):
    rep, _, _ = stack
    who = email()
    await rep.register(who)
    session = (await rep.login(who))["session_token"]
    r = await rep.client.post("/sessions/current/switch", json={"account_id": "x"})
    assert r.status_code == 401 and r.json()["error"] == "invalid_token"
    for body in ({}, {"account_id": ""}, {"account_id": "x", "min_version": -1}, {"account_id": "x", "min_version": "a"}):
        r = await rep.client.post("/sessions/current/switch", json=body, headers=bearer(session))
        assert r.status_code == 422, body


async def test_discovery_openapi_ops_and_key_rotation(stack):
    rep, _, settings = stack
    doc = (await rep.client.get("/openapi.json")).json()
    assert {"/users", "/sessions", "/sessions/current", "/sessions/current/switch", "/oauth2/token", "/me",
            "/me/accounts", "/.well-known/jwks.json", "/.well-known/openid-configuration"} <= set(doc["paths"])
    assert (await rep.client.get("/healthz")).status_code == 200
    assert (await rep.client.get("/readyz")).status_code == 200
    assert "http_requests_total" in (await rep.client.get("/metrics")).text
    conf = (await rep.client.get("/.well-known/openid-configuration")).json()
    assert conf["issuer"] == settings.issuer == "http://identity.test"
    assert conf["jwks_uri"] == "http://identity.test/.well-known/jwks.json"
    assert conf["token_endpoint"] == "http://identity.test/oauth2/token"
    assert EXCHANGE in conf["grant_types_supported"]
    who = email()
    await rep.register(who)
    old = (await rep.login(who))["access_token"]
    old_kid = jwt.get_unverified_header(old)["kid"]
    new_kid = await identity_main.rotate_keys(settings)  # `python -m identity_service rotate-keys`
    await rep.service.keyring.load()
    jwks = (await rep.client.get("/.well-known/jwks.json")).json()
    assert {k["kid"] for k in jwks["keys"]} >= {old_kid, new_kid}
    assert all("d" not in k for k in jwks["keys"])  # never the private part
    new = (await rep.login(who))["access_token"]
    assert jwt.get_unverified_header(new)["kid"] == new_kid
    verified = parse_jwks(jwks)
    for token in (old, new):
        decode_access_token(token, verified, issuer=settings.issuer, audience=settings.token_audience)
        assert (await rep.client.get("/me", headers=bearer(token))).status_code == 200


async def test_forged_tampered_none_hs256_and_expired_tokens_are_refused(stack):
    rep, _, settings = stack
    who = email()
    await rep.register(who)
    good = (await rep.login(who))["access_token"]
    claims = claims_of(good)
    kid = jwt.get_unverified_header(good)["kid"]
    jwk = next(k for k in (await rep.client.get("/.well-known/jwks.json")).json()["keys"] if k["kid"] == kid)

    from cryptography.hazmat.primitives import serialization as ser
    other_pem = Ed25519PrivateKey.generate().private_bytes(
        ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption()).decode()
    forged = make_signer(kid, other_pem).sign(claims)
    tampered = bad_tokens.tampered(good, {**claims, "acct": "someone-elses", "role": "admin"})
    none = bad_tokens.alg_none(good, kid)
    hs256 = [bad_tokens.hs256(good, kid, secret) for secret in bad_tokens.public_key_secrets(jwk)]
    signer = rep.service.keyring.signer
    now = int(time.time())
    expired = signer.sign({**claims, "iat": now - 900, "exp": now - 600})
    wrong_aud = signer.sign({**claims, "aud": "someone-else"})
    wrong_iss = signer.sign({**claims, "iss": "http://evil.example"})
    for bad in [forged, tampered, none, *hs256, expired, wrong_aud, wrong_iss, "a.b.c", good + "x"]:
        r = await rep.client.get("/me", headers=bearer(bad))
        assert r.status_code == 401 and r.json()["error"] == "invalid_token", bad
        r = await rep.client.post("/oauth2/token", data={"grant_type": EXCHANGE, "subject_token": bad,
                                                         "subject_token_type": ACCESS, "audience": "x"})
        assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    assert (await rep.client.get("/me", headers=bearer(good))).status_code == 200


async def test_maintenance_forgets_only_dead_sessions(stack):
    rep, _, _ = stack
    who = email()
    await rep.register(who)
    live, dead = (await rep.login(who))["session_token"], (await rep.login(who))["session_token"]
    await rep.client.delete("/sessions/current", headers=bearer(dead))
    async with rep.app.state.pool.connection() as conn:
        await conn.execute("UPDATE sessions SET revoked_at = now() - interval '2 days' WHERE revoked_at IS NOT NULL")
    await rep.service.store.purge_expired(900)
    async with rep.app.state.pool.connection() as conn:
        (left,) = await (await conn.execute(
            "SELECT count(*) FROM sessions s JOIN users u ON u.id = s.user_id WHERE u.email = %s", (who,))).fetchone()
    assert left == 1
    assert (await rep.client.get("/me", headers=bearer(live))).status_code == 200


async def test_replicas_starting_together_agree_on_one_key_and_keys_can_be_encrypted(new_database, nats_names):
    import asyncio

    from identity_service.app import open_database

    settings = settings_for(new_database("identity"), nats_names, identity_key_passphrase="s3cret passphrase")
    pools = await asyncio.gather(*(open_database(settings) for _ in range(3)))  # migrations race too
    try:
        kids = await asyncio.gather(*(keys.ensure_key(p, settings.key_passphrase) for p in pools))
        assert len(set(kids)) == 1
        async with pools[0].connection() as conn:
            rows = await (await conn.execute("SELECT kid, private_pem FROM signing_keys")).fetchall()
        assert [r[0] for r in rows] == kids[:1]
        assert "ENCRYPTED" in rows[0][1]  # never in clear in the database
        ring = keys.KeyRing(pools[1], passphrase=settings.key_passphrase)
        await ring.load()
        assert ring.signer.kid == kids[0]
        with pytest.raises(RuntimeError):
            await keys.KeyRing(pools[2]).load()  # the passphrase is required
    finally:
        for p in pools:
            await p.close()


async def test_hostile_input_is_refused_cleanly(stack):
    rep, _, _ = stack
    who = email()
    await rep.register(who)
    session = (await rep.login(who))["session_token"]
    access = (await rep.login(who))["access_token"]
    cases = [
        ("POST", "/users", {"json": {"email": email(), "password": PASSWORD, "display_name": "Bob\x00"}}),
        ("POST", "/users", {"json": {"email": "bob\x00@example.com", "password": PASSWORD}}),
        ("POST", "/sessions", {"json": {"email": who, "password": PASSWORD, "account_id": "a\x00b"}}),
        ("POST", "/sessions", {"json": {"email": who + "\x00", "password": PASSWORD}}),
        ("POST", "/sessions/current/switch", {"json": {"account_id": "a\x00"}, "headers": bearer(session)}),
        ("POST", "/sessions/current/switch", {"json": {"account_id": "a", "min_version": 10**30},
                                              "headers": bearer(session)}),
        ("POST", "/sessions/current/switch", {"json": {"account_id": "a"}, "headers": bearer("x\x00y")}),
        ("POST", "/oauth2/token", {"data": {"grant_type": EXCHANGE, "subject_token": access,
                                            "subject_token_type": ACCESS, "audience": "a\x00"}}),
        ("GET", "/me", {"headers": bearer("mcs_" + "\x00" * 10)}),
    ]
    for method, path, kw in cases:
        r = await rep.client.request(method, path, **kw)
        assert 400 <= r.status_code < 500, (path, kw, r.status_code, r.text)
        assert "error" in r.json()
    async with rep.app.state.pool.connection() as conn:
        (users,) = await (await conn.execute("SELECT count(*) FROM users")).fetchone()
    assert users == 1  # nothing stored by the bad requests
