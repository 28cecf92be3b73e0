"""The identity service's contract as an outside client sees it, with every
process started as a user would (`python -m ...`): the parts that depend on
the real relay, the real HTTP server and the real account service."""

from __future__ import annotations

import httpx
import pytest

from tests.e2e.stack import PASSWORD
from tests.support.tokens import ACCESS, EXCHANGE, bearer, claims_of

pytestmark = pytest.mark.e2e


async def test_identity_contract_from_outside(stack):
    async with httpx.AsyncClient(base_url=stack.identity.url, timeout=15) as idp, \
            httpx.AsyncClient(base_url=stack.account.url, timeout=15) as acc:
        for who in ("alice@example.com", "Bob@Example.COM"):
            r = await idp.post("/users", json={"email": who, "password": PASSWORD})
            assert r.status_code == 201, r.text
        assert r.json()["email"] == "bob@example.com"
        alice = (await idp.post("/sessions", json={"email": "alice@example.com", "password": PASSWORD})).json()

        # create-then-switch, and create-then-exchange, by a client that sends no min_version
        r = await acc.post("/accounts", json={"name": "Zeta", "country": "FR"}, headers=bearer(alice["access_token"]))
        assert r.status_code == 201, r.text
        zeta = r.json()["account_id"]
        r = await idp.post("/sessions/current/switch", json={"account_id": zeta},
                           headers=bearer(alice["session_token"]))
        assert r.status_code == 200, r.text
        in_zeta = r.json()["access_token"]
        r = await acc.post("/accounts", json={"name": "alpha", "country": "FR"}, headers=bearer(in_zeta))
        alpha = r.json()["account_id"]
        r = await idp.post("/oauth2/token", data={"grant_type": EXCHANGE, "subject_token": in_zeta,
                                                  "subject_token_type": ACCESS, "audience": alpha})
        assert r.status_code == 200, r.text
        assert r.headers["cache-control"] == "no-store" and claims_of(r.json()["access_token"])["acct"] == alpha

        # Bob, added as BOB@example.com, logs in as bob@example.com straight into that account
        r = await acc.post(f"/accounts/{zeta}/members", json={"email": "BOB@example.com", "role": "viewer"},
                           headers=bearer(in_zeta))
        assert r.status_code == 201, r.text
        r = await idp.post("/sessions", json={"email": "bob@example.com", "password": PASSWORD, "account_id": zeta})
        assert r.status_code == 201, r.text
        bob = r.json()
        assert bob["active_account_id"] == zeta and claims_of(bob["access_token"])["role"] == "viewer"
        r = await idp.get("/me/accounts", headers=bearer(bob["access_token"]))
        assert [(a["account_id"], a["role"]) for a in r.json()] == [(zeta, "viewer")]
        r = await idp.post("/sessions/current/switch", json={"account_id": alpha}, headers=bearer(bob["session_token"]))
        assert r.status_code == 403 and r.json()["error"] == "not_a_member"

        # the edge: bad input is a JSON 4xx from the real server, never a 500
        r = await idp.post("/users", content=b'{"email": "c@example.com", "password": "%s", "display_name": "\\ud800"}'
                           % PASSWORD.encode(), headers={"content-type": "application/json"})
        assert r.status_code == 422 and r.json()["error"] == "validation_error"

        async def streamed():
            for _ in range(40):
                yield b"a" * 65536

        r = await idp.post("/users", content=streamed(), headers={"content-type": "application/json"})
        assert r.status_code == 413 and r.json()["error"] == "payload_too_large"

        # repeated failures for one email: 401 with a challenge, then 429 with Retry-After, even for the
        # right password
        statuses = []
        for _ in range(6):
            r = await idp.post("/sessions", json={"email": "ALICE@example.com", "password": "not her password"})
            statuses.append(r.status_code)
            if r.status_code == 401:
                assert r.json()["error"] == "invalid_credentials" and r.headers["www-authenticate"].startswith("Bearer")
        assert statuses[0] == 401 and statuses[-1] == 429, statuses
        r = await idp.post("/sessions", json={"email": "alice@example.com", "password": PASSWORD})
        assert r.status_code == 429 and r.json()["error"] == "too_many_attempts" and int(r.headers["retry-after"]) > 0
