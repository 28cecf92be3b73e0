"""The licensing part of the story, end to end with the three processes:
Alice creates her second company with her first company's referral code; each
licence then shows one referral credit, the seats used and the plan; a
non-admin member and a logged-out session are refused."""

from __future__ import annotations

import httpx
import pytest

from tests.e2e.stack import PASSWORD
from tests.support.polling import eventually
from tests.support.tokens import bearer

pytestmark = pytest.mark.e2e


async def test_a_company_created_with_a_referral_code_credits_both_licences(stack):
    async with httpx.AsyncClient(base_url=stack.identity.url, timeout=15) as idp, \
            httpx.AsyncClient(base_url=stack.account.url, timeout=15) as acc, \
            httpx.AsyncClient(base_url=stack.licensing.url, timeout=15) as lic:

        async def switch(session: str, account_id: str, min_version: int | None = None) -> str:
            body = {"account_id": account_id} | ({"min_version": min_version} if min_version else {})
            r = await idp.post("/sessions/current/switch", json=body, headers=bearer(session))
            assert r.status_code == 200, r.text
            return r.json()["access_token"]

        for who in ("alice@example.com", "bob@example.com"):
            r = await idp.post("/users", json={"email": who, "password": PASSWORD})
            assert r.status_code == 201, r.text
        r = await idp.post("/sessions", json={"email": "alice@example.com", "password": PASSWORD})
        assert r.status_code == 201, r.text
        session = r.json()["session_token"]

        r = await acc.post("/accounts", json={"name": "Alice Bâtiment", "country": "FR"},
                           headers=bearer(r.json()["access_token"]))
        assert r.status_code == 201, r.text
        c1, code, v = r.json()["account_id"], r.json()["referral_code"], r.json()["version"]
        t1 = await switch(session, c1, v)
        r = await acc.post(f"/accounts/{c1}/members", json={"email": "bob@example.com", "role": "user"},
                           headers=bearer(t1))
        assert r.status_code == 201, r.text

        # from inside company 1, company 2 is created with company 1's referral code
        r = await acc.post("/accounts", json={"name": "Alice Rénovation", "country": "FR", "plan": "solo",
                                              "referral_code": code}, headers=bearer(t1))
        assert r.status_code == 201, r.text
        c2, v = r.json()["account_id"], r.json()["version"]
        t2 = await switch(session, c2, v)
        r = await acc.put(f"/accounts/{c2}/plan", json={"plan": "business"}, headers=bearer(t2))
        assert r.status_code == 200, r.text
        t1 = await switch(session, c1)

        async def licence(account: str, token: str, version: int):
            r = await lic.get(f"/licences/{account}", headers=bearer(token))
            return r.json() if r.status_code == 200 and r.json()["version"] >= version else None

        first = await eventually(lambda: licence(c1, t1, 3), timeout=15.0)
        second = await eventually(lambda: licence(c2, t2, 3), timeout=15.0)
        assert first == {"account_id": c1, "name": "Alice Bâtiment", "country": "FR", "company_id": None,
                         "plan": "team", "seats_included": 5, "seats_used": 2, "referral_credits": 1,
                         "referred_by": None, "version": 3}
        assert second == {"account_id": c2, "name": "Alice Rénovation", "country": "FR", "company_id": None,
                          "plan": "business", "seats_included": 25, "seats_used": 1, "referral_credits": 1,
                          "referred_by": c1, "version": 3}
        history = (await lic.get(f"/licences/{c1}/history", headers=bearer(t1))).json()
        assert [h["type"] for h in history] == ["AccountCreated", "MemberAdded", "MemberAdded",
                                                "ReferralCreditEarned"]
        history = (await lic.get(f"/licences/{c2}/history", headers=bearer(t2))).json()
        assert [(h["type"], h.get("plan")) for h in history] == [
            ("AccountCreated", "solo"), ("MemberAdded", None), ("PlanChanged", "business")]

        # Bob is a member of company 1 but not an admin; the wrong account's token is refused
        r = await idp.post("/sessions", json={"email": "bob@example.com", "password": PASSWORD,
                                              "account_id": c1})
        assert r.status_code == 201, r.text
        r = await lic.get(f"/licences/{c1}", headers=bearer(r.json()["access_token"]))
        assert (r.status_code, r.json()["error"]) == (403, "forbidden")
        r = await lic.get(f"/licences/{c2}", headers=bearer(t1))
        assert (r.status_code, r.json()["error"]) == (403, "wrong_account")

        # Alice logs out: her tokens stop working here too
        assert (await idp.delete("/sessions/current", headers=bearer(session))).status_code == 204

        async def refused():
            r = await lic.get(f"/licences/{c1}", headers=bearer(t1))
            return r.status_code == 401 and r.json()["error"] == "invalid_token"

        await eventually(refused, timeout=5)
