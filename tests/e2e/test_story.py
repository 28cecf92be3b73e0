"""The seed's story, end to end, with every process started as a user would.

Alice registers, logs in, creates her first company and, from inside it, a
second one, and is in it at once; she adds Bob (by the email he already uses,
typed in another case) to both, with different roles and rights; Bob logs in
once and switches company 1 -> 2 -> 1 without logging in again, each token
carrying that account's role; Alice removes Bob from company 1 and his next
switch there is refused; Bob logs out and his session and tokens stop working
on the identity service and on the account service. Forged, tampered,
`alg: none`, HS256-with-the-public-key and expired tokens are refused by both.
"""

from __future__ import annotations

import base64
import json
import time

import httpx
import psycopg
import pytest

from identity_service.keys import make_signer
from tests.e2e.stack import PASSWORD, running_stack
from tests.support import bad_tokens
from tests.support.polling import eventually
from tests.support.tokens import ACCESS, EXCHANGE, bearer, claims_of

pytestmark = pytest.mark.e2e


@pytest.fixture(params=[1, 2], ids=["one-identity-worker", "two-identity-workers"])
def stack(request, new_database, nats_names):
    # with two workers, the identity service is two replicas sharing one database:
    # a switch may land on the worker that does not run the projector
    with running_stack(new_database, nats_names, identity_env={"IDENTITY_WORKERS": str(request.param)}) as s:
        yield s


async def test_the_story(stack):
    async with httpx.AsyncClient(base_url=stack.identity.url, timeout=15) as idp, \
            httpx.AsyncClient(base_url=stack.account.url, timeout=15) as acc:

        async def switch(session: str, account_id: str, min_version: int | None = None) -> httpx.Response:
            body = {"account_id": account_id} | ({"min_version": min_version} if min_version else {})
            return await idp.post("/sessions/current/switch", json=body, headers=bearer(session))

        # Alice and Bob have their logins (Bob's is the email he already uses)
        for who in ("alice@example.com", "bob@example.com"):
            r = await idp.post("/users", json={"email": who, "password": PASSWORD, "display_name": who[:3]})
            assert r.status_code == 201, r.text

        # Alice logs in: no company yet, a token without `acct` that can create one
        r = await idp.post("/sessions", json={"email": "Alice@Example.com", "password": PASSWORD})
        assert r.status_code == 201, r.text
        alice = r.json()
        assert alice["active_account_id"] is None and "acct" not in claims_of(alice["access_token"])
        r = await acc.post("/accounts", json={"name": "Alice Bâtiment", "country": "fr"},
                           headers=bearer(alice["access_token"]))
        assert r.status_code == 201, r.text
        c1, v = r.json()["account_id"], r.json()["version"]
        r = await switch(alice["session_token"], c1, v)
        assert r.status_code == 200, r.text
        assert r.json()["account"]["role"] == "admin"
        alice_c1 = r.json()["access_token"]

        # from inside company 1 she creates company 2 and is in it at once
        r = await acc.post("/accounts", json={"name": "Alice Rénovation", "country": "FR"}, headers=bearer(alice_c1))
        assert r.status_code == 201, r.text
        c2, v = r.json()["account_id"], r.json()["version"]
        r = await switch(alice["session_token"], c2, v)
        assert r.status_code == 200, r.text
        alice_c2 = r.json()["access_token"]
        assert claims_of(alice_c2)["acct"] == c2
        r = await acc.get(f"/accounts/{c2}", headers=bearer(alice_c2))
        assert r.status_code == 200 and r.json()["name"] == "Alice Rénovation"

        # she adds Bob to both, by the address he already uses, typed in another case
        r = await acc.post(f"/accounts/{c2}/members", headers=bearer(alice_c2),
                           json={"email": "Bob@Example.COM", "role": "user", "rights": ["quotes:write", "invoices:read"]})
        assert r.status_code == 201, r.text
        assert r.json()["email"] == "bob@example.com"
        v2 = r.json()["version"]
        r = await switch(alice["session_token"], c1)
        assert r.status_code == 200
        alice_c1 = r.json()["access_token"]
        r = await acc.post(f"/accounts/{c1}/members", headers=bearer(alice_c1),
                           json={"email": "BOB@example.com", "role": "viewer"})
        assert r.status_code == 201, r.text
        v1 = r.json()["version"]

        # Bob logs in once...
        r = await idp.post("/sessions", json={"email": "bob@example.com", "password": PASSWORD})
        assert r.status_code == 201, r.text
        bob = r.json()
        session = bob["session_token"]
        # ... and switches 1 -> 2 -> 1 without logging in again
        r = await switch(session, c1, v1)
        assert r.status_code == 200, r.text
        t1 = r.json()["access_token"]
        assert r.json()["account"]["role"] == "viewer"
        assert claims_of(t1)["acct"] == c1 and claims_of(t1)["role"] == "viewer"
        assert (await acc.get(f"/accounts/{c1}", headers=bearer(t1))).status_code == 200
        r = await acc.post(f"/accounts/{c1}/members", headers=bearer(t1), json={"email": "eve@example.com",
                                                                              "role": "admin"})
        assert r.status_code == 403  # a viewer cannot add members
        r = await switch(session, c2, v2)
        assert r.status_code == 200, r.text
        t2 = r.json()["access_token"]
        assert claims_of(t2)["role"] == "user" and claims_of(t2)["rights"] == ["quotes:write", "invoices:read"]
        assert (await acc.get(f"/accounts/{c2}", headers=bearer(t2))).status_code == 200
        assert (await acc.get(f"/accounts/{c1}", headers=bearer(t2))).json()["error"] == "wrong_account"
        r = await switch(session, c1)
        assert r.status_code == 200 and claims_of(r.json()["access_token"])["role"] == "viewer"
        t1 = r.json()["access_token"]
        # the user menu lists both, by name
        r = await idp.get("/me/accounts", headers=bearer(session))
        assert [(a["name"], a["role"]) for a in r.json()] == [("Alice Bâtiment", "viewer"),
                                                              ("Alice Rénovation", "user")]
        # the RFC 8693 exchange gives the same answer as the switch
        r = await idp.post("/oauth2/token", data={"grant_type": EXCHANGE, "subject_token": t1,
                                                  "subject_token_type": ACCESS, "audience": c2})
        assert r.status_code == 200 and claims_of(r.json()["access_token"])["role"] == "user"

        # Alice removes Bob from company 1: his next switch there is refused
        r = await acc.delete(f"/accounts/{c1}/members/bob@example.com", headers=bearer(alice_c1))
        assert r.status_code == 200, r.text
        r = await switch(session, c1, r.json()["version"])
        assert r.status_code == 403 and r.json()["error"] == "not_a_member"
        # his still-unexpired company 1 token has lost its power on the account service
        assert (await acc.get(f"/accounts/{c1}", headers=bearer(t1))).status_code == 403
        r = await idp.post("/oauth2/token", data={"grant_type": EXCHANGE, "subject_token": t2,
                                                  "subject_token_type": ACCESS, "audience": c1})
        assert r.status_code == 400 and r.json()["error"] == "invalid_target"
        r = await switch(session, c2)
        assert r.status_code == 200
        t2 = r.json()["access_token"]

        # Bob logs out: his session and his tokens stop working, here and there
        assert (await acc.get(f"/accounts/{c2}", headers=bearer(t2))).status_code == 200
        r = await idp.delete("/sessions/current", headers=bearer(session))
        assert r.status_code == 204
        for token in (session, t2):
            r = await idp.get("/me", headers=bearer(token))
            assert r.status_code == 401 and r.json()["error"] == "invalid_token"
        assert (await switch(session, c2)).status_code == 401

        async def refused_by_accounts() -> bool:
            r = await acc.get(f"/accounts/{c2}", headers=bearer(t2))
            return r.status_code == 401 and r.json()["error"] == "invalid_token"

        await eventually(refused_by_accounts, timeout=10.0)

        # bad tokens are refused by both services
        good = alice_c1
        header = good.split(".")[0]
        claims = claims_of(good)
        kid = json.loads(base64.urlsafe_b64decode(header + "=="))["kid"]
        jwks = (await idp.get("/.well-known/jwks.json")).json()
        jwk = next(k for k in jwks["keys"] if k["kid"] == kid)
        with psycopg.connect(stack.databases["identity"]) as conn:
            (pem,) = conn.execute("SELECT private_pem FROM signing_keys WHERE kid = %s", (kid,)).fetchone()
        real = make_signer(kid, pem)
        from identity_service.keys import new_key
        forged = make_signer(kid, new_key()[1]).sign(claims)
        tampered = bad_tokens.tampered(good, {**claims, "acct": c2})
        none = bad_tokens.alg_none(good, kid)
        hs256 = [bad_tokens.hs256(good, kid, secret) for secret in bad_tokens.public_key_secrets(jwk)]
        now = int(time.time())
        expired = real.sign({**claims, "iat": now - 900, "exp": now - 600})
        other_issuer = real.sign({**claims, "iss": "http://evil.example"})
        assert (await acc.get(f"/accounts/{c1}", headers=bearer(real.sign(claims)))).status_code == 200
        for bad in (forged, tampered, none, *hs256, expired, other_issuer):
            r = await acc.get(f"/accounts/{c1}", headers=bearer(bad))
            assert r.status_code == 401 and r.json()["error"] == "invalid_token", bad
            assert r.headers["www-authenticate"].startswith("Bearer")
            r = await idp.get("/me", headers=bearer(bad))
            assert r.status_code == 401 and r.json()["error"] == "invalid_token", bad

        # the licensing consumer is up alongside
        async with httpx.AsyncClient(base_url=stack.licensing.url) as lic:
            assert (await lic.get("/healthz")).status_code == 200
