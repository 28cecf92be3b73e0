"""The membership read model: exactly once, in order, healed, rebuildable,
correct with two replicas; `min_version` waits across replicas."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from identity_service import __main__ as identity_main
from shared.bus import OutgoingMessage, publish_batch
from shared.events import subject_for
from tests.support.identity import Publisher, replica, settings_for, unique_email
from tests.support.polling import eventually

pytestmark = pytest.mark.integration


def email() -> str:
    return unique_email("m")


async def snapshot(pool) -> tuple:
    async with pool.connection() as conn:
        accounts = await (await conn.execute("SELECT account_id, name, country FROM rm_accounts ORDER BY 1")).fetchall()
        members = await (await conn.execute(
            "SELECT email, account_id, role, rights FROM rm_memberships ORDER BY 1, 2")).fetchall()
        positions = await (await conn.execute(
            "SELECT account_id, version FROM consumer_positions WHERE consumer = 'identity-memberships' "
            "ORDER BY 1")).fetchall()
    return accounts, members, positions


async def applied(rep, account_id: str, version: int) -> bool:
    return await rep.service.store.applied_version(account_id) >= version


async def resend(pub: Publisher, *envelopes) -> None:
    """Publish again under fresh message ids (as a relay retry after the dedup window would)."""
    await publish_batch(pub.link.js, [
        OutgoingMessage(subject_for(pub.names.prefix, e.account_id, e.type), e.to_json(), str(uuid.uuid4()))
        for e in envelopes])


@pytest.fixture
async def env(new_database, nats_names):
    settings = settings_for(new_database("identity"), nats_names, identity_switch_wait_seconds=3.0)
    async with Publisher(nats_names) as pub:
        yield settings, pub


async def test_duplicates_reordering_and_gaps(env):
    settings, pub = env
    bob, carol = email(), email()
    async with replica(settings) as rep:
        acct, _ = await pub.create_account("Acme", email())
        add_bob = pub.added(acct, bob.upper(), "user", ["quotes:write"])  # v3, any case in
        remove_bob = pub.removed(acct, bob)                               # v4
        add_carol = pub.added(acct, carol, "viewer", ["quotes:read"])     # v5
        promote = pub.changed(acct, carol, "admin", ["settings:write"])   # v6
        plan = pub.plan(acct, "business")                                 # v7
        # a gap: v5 and v6 arrive before v3 and v4 (which the stream does hold later)
        await pub.send(add_bob)
        await eventually(lambda: applied(rep, acct, 3), timeout=10)
        await resend(pub, promote)          # v6 before v4, v5: a gap
        await resend(pub, remove_bob)       # v4
        await pub.send(add_carol)           # v5
        await resend(pub, add_bob)          # a duplicate of v3 after its removal
        await pub.send(plan)
        await eventually(lambda: applied(rep, acct, 7), timeout=10)
        await resend(pub, add_bob, remove_bob)  # more duplicates
        mine = await rep.service.store.memberships_of(bob)
        assert mine == []
        hers = await rep.service.store.memberships_of(carol)
        assert [(m.account_id, m.role, m.rights) for m in hers] == [(acct, "admin", ("settings:write",))]
        await eventually(lambda: applied(rep, acct, 7), timeout=10)
        assert await rep.service.store.applied_version(acct) == 7


async def test_restart_mid_stream_and_rebuild_equals_incremental(env):
    settings, pub = env
    people = [email() for _ in range(4)]
    async with replica(settings) as rep:
        accounts = [(await pub.create_account(f"Company {i}", people[i]))[0] for i in range(3)]
        await pub.send(*(pub.added(a, people[3], "viewer", ["reports:read"]) for a in accounts))
        for a in accounts:
            await eventually(lambda a=a: applied(rep, a, 3), timeout=10)
    # the replica is down while more happens
    await pub.send(pub.removed(accounts[0], people[3]), pub.changed(accounts[1], people[3], "user", ["quotes:write"]),
                   pub.added(accounts[2], people[0], "admin"))
    async with replica(settings) as rep:
        await eventually(lambda: applied(rep, accounts[2], 4), timeout=10)
        await eventually(lambda: applied(rep, accounts[1], 4), timeout=10)
        await eventually(lambda: applied(rep, accounts[0], 4), timeout=10)
        incremental = await snapshot(rep.app.state.pool)
        menu = await rep.service.store.memberships_of(people[3])
        assert sorted((m.name, m.role) for m in menu) == [("Company 1", "user"), ("Company 2", "viewer")]
        assert len(incremental[1]) == 3 + 2 + 1
        # rebuild from the stream gives the same read model
        rebuilt_count = await identity_main.rebuild(settings)  # `python -m identity_service rebuild`
        assert rebuilt_count == sum(pub.versions[a] for a in accounts)
        assert await snapshot(rep.app.state.pool) == incremental


@pytest.mark.parametrize("exclusive", [True, False], ids=["one-leader", "both-projecting"])
async def test_two_replicas_project_one_read_model_correctly(env, exclusive):
    settings, pub = env
    settings = settings.model_copy(update={"identity_projector_exclusive": exclusive})
    admins = [email() for _ in range(5)]
    guest = email()
    async with replica(settings) as b:
        async with replica(settings) as a:
            accounts = [(await pub.create_account(f"Firm {i}", admins[i]))[0] for i in range(5)]
            batch = []
            for acct in accounts:
                batch += [pub.added(acct, guest, "viewer"), pub.changed(acct, guest, "user", ["quotes:write"]),
                          pub.plan(acct, "business")]
            await pub.send(*batch)
            await pub.send(*(pub.removed(acct, guest) for acct in accounts[:2]))
            for acct in accounts:
                await eventually(lambda acct=acct: applied(a, acct, pub.versions[acct]), timeout=10)
            state = await snapshot(a.app.state.pool)
            assert [v for _, v in state[2]] == [pub.versions[x] for x in sorted(accounts)]
            mine = await b.service.store.memberships_of(guest)
            assert sorted(m.account_id for m in mine) == sorted(accounts[2:])
            assert {m.role for m in mine} == {"user"}
        # one replica gone (perhaps the leader): the other carries on
        await pub.send(pub.removed(accounts[4], guest))
        await eventually(lambda: applied(b, accounts[4], pub.versions[accounts[4]]), timeout=10)
        assert sorted(m.account_id for m in await b.service.store.memberships_of(guest)) == sorted(accounts[2:4])


async def test_min_version_waits_across_replicas_and_is_bounded(env):
    settings, pub = env
    who = email()
    quiet = settings.model_copy(update={"identity_projector": False, "identity_switch_wait_seconds": 0.3})
    async with replica(quiet) as front:
        await front.register(who)
        session = (await front.login(who))["session_token"]
        # nobody projects yet: the wait is bounded, then 503 with Retry-After
        acct, version = await pub.create_account("Later Ltd", who)
        r = await front.switch(session, acct, min_version=version)
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert r.json()["error"] == "not_yet_consistent"
        front.app.state.identity.settings = front.service.settings.model_copy(update={"identity_switch_wait_seconds": 5.0})
        async with replica(settings) as projector:
            # create-then-switch on the replica that does not project: woken by NOTIFY
            second, v2 = await pub.create_account("Second Ltd", who)
            results = await asyncio.gather(*(front.switch(session, second, min_version=v2) for _ in range(5)),
                                           front.switch(session, acct, min_version=version))
            assert [r.status_code for r in results] == [200] * 6
            assert results[0].json()["account"]["name"] == "Second Ltd"
            assert await projector.service.store.applied_version(second) == v2
            assert front.service.waiters.notifications > 0  # told by the other replica's commits
