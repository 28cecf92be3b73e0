"""The account contract as an outside client checks it, against the three real
processes: the write responses, the audit log, the events on NATS (subject,
Nats-Msg-Id, CloudEvents envelope, streamversion without gap, identical to the
audit log) and the licence the licensing consumer builds from them."""

from __future__ import annotations

import json
import re
import time

import httpx
import pytest

from tests.e2e.stack import PASSWORD
from tests.support.polling import eventually
from tests.support.tokens import bearer

pytestmark = pytest.mark.e2e

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")
DATA_FIELDS = {
    "AccountCreated": {"name", "country", "company_id", "plan", "referral_code", "referred_by"},
    "MemberAdded": {"email", "role", "rights"},
    "MemberRoleChanged": {"email", "role", "rights"},
    "MemberRemoved": {"email"},
    "PlanChanged": {"plan"},
}


async def nats_messages(names, account_id: str, count: int, timeout: float = 15.0) -> list:
    import nats

    nc = await nats.connect(names.url, connect_timeout=2)
    try:
        sub = await nc.jetstream().subscribe(f"{names.prefix}.{account_id}.>", stream=names.stream,
                                             ordered_consumer=True)
        got = []
        deadline = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            try:
                got.append(await sub.next_msg(timeout=1))
            except nats.errors.TimeoutError:
                pass
        await sub.unsubscribe()
        return got
    finally:
        await nc.close()


async def test_writes_audit_log_nats_events_and_licence_agree(stack, nats_names):
    s, names = stack, nats_names
    async with httpx.AsyncClient(base_url=s.identity.url, timeout=15) as idp, \
            httpx.AsyncClient(base_url=s.account.url, timeout=15) as acc, \
            httpx.AsyncClient(base_url=s.licensing.url, timeout=15) as lic:
        for who in ("alice@example.com", "bob@example.com"):
            assert (await idp.post("/users", json={"email": who, "password": PASSWORD})).status_code == 201
        r = await idp.post("/sessions", json={"email": "alice@example.com", "password": PASSWORD})
        session, first_token = r.json()["session_token"], r.json()["access_token"]
        alice_id = r.json()["user_id"]

        r = await acc.post("/accounts", json={"name": "  Dupont Bâtiment ", "country": "fr",
                                              "company_id": "732 829 320 00074"}, headers=bearer(first_token))
        assert r.status_code == 201, r.text
        created = r.json()
        assert {"account_id", "name", "country", "company_id", "plan", "referral_code", "version"} <= set(created)
        assert (created["name"], created["country"], created["company_id"], created["plan"], created["version"]) == (
            "Dupont Bâtiment", "FR", "73282932000074", "team", 2)
        acct = created["account_id"]
        r = await idp.post("/sessions/current/switch", json={"account_id": acct, "min_version": 2},
                           headers=bearer(session))
        assert r.status_code == 200, r.text
        admin = bearer(r.json()["access_token"])

        # the same SIRET again (other spacing) is taken; nothing is stored for it
        r = await acc.post("/accounts", json={"name": "Copie", "country": "FR", "company_id": "73282932000074"},
                           headers=admin)
        assert (r.status_code, r.json()["error"]) == (409, "company_id_taken")

        writes = [
            ("POST", f"/accounts/{acct}/members", {"email": "Bob@Example.COM", "role": "user"}, 201),
            ("PATCH", f"/accounts/{acct}/members/bob@example.com", {"role": "viewer"}, 200),
            ("PUT", f"/accounts/{acct}/plan", {"plan": "business"}, 200),
            ("DELETE", f"/accounts/{acct}/members/BOB@example.com", None, 200),
        ]
        version = 2
        for method, path, body, status in writes:
            r = await acc.request(method, path, json=body, headers=admin | {"If-Match": f'"{version}"'})
            assert r.status_code == status, r.text
            assert r.json()["version"] == version + 1
            version += 1
        r = await acc.put(f"/accounts/{acct}/plan", json={"plan": "solo"}, headers=admin | {"If-Match": '"2"'})
        assert (r.status_code, r.json()["error"]) == (412, "precondition_failed")

        # the audit log, page by page
        log, after = [], 0
        while True:
            r = await acc.get(f"/accounts/{acct}/events", params={"after": after, "limit": 2}, headers=admin)
            assert r.status_code == 200, r.text
            log += r.json()["events"]
            if r.json()["next"] is None:
                break
            after = r.json()["next"]
        assert [e["type"] for e in log] == ["AccountCreated", "MemberAdded", "MemberAdded", "MemberRoleChanged",
                                            "PlanChanged", "MemberRemoved"]

        # NATS: the same envelopes, one per event, on <prefix>.<account_id>.<type>, Nats-Msg-Id = id
        msgs = await nats_messages(names, acct, len(log))
        assert len(msgs) == len(log)
        for version, (msg, logged) in enumerate(zip(msgs, log, strict=True), start=1):
            event = json.loads(msg.data)
            assert event == logged
            assert msg.subject == f"{names.prefix}.{acct}.{event['type']}"
            assert msg.headers["Nats-Msg-Id"] == event["id"]
            assert set(event) == {"specversion", "id", "source", "type", "subject", "time", "datacontenttype",
                                  "streamversion", "data"}
            assert (event["specversion"], event["source"], event["subject"], event["datacontenttype"],
                    event["streamversion"]) == ("1.0", "account-service", acct, "application/json", version)
            assert RFC3339.match(event["time"]), event["time"]
            data = event["data"]
            assert data["account_id"] == acct and data["actor"] == alice_id
            assert DATA_FIELDS[event["type"]] <= set(data), event
        assert log[0]["data"]["company_id"] == "73282932000074" and log[2]["data"]["email"] == "bob@example.com"

        # the licence
        async def licence():
            r = await lic.get(f"/licences/{acct}", headers=admin)
            return r.json() if r.status_code == 200 and r.json()["version"] == 6 else None

        assert await eventually(licence, timeout=15.0) == {
            "account_id": acct, "name": "Dupont Bâtiment", "country": "FR", "company_id": "73282932000074",
            "plan": "business", "seats_included": 25, "seats_used": 1, "referral_credits": 0,
            "referred_by": None, "version": 6}
        r = await lic.get(f"/licences/{acct}/history", headers=admin)
        assert [(h["type"], h["version"]) for h in r.json()] == [
            ("AccountCreated", 1), ("MemberAdded", 2), ("MemberAdded", 3), ("PlanChanged", 5),
            ("MemberRemoved", 6)]
