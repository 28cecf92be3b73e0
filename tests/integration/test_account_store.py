"""The event store on the real PostgreSQL: optimistic concurrency, reservations, referral codes."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from account_service.domain import AddMember, ChangePlan
from account_service.eventstore import MIGRATIONS, ConcurrencyError, EventStore
from account_service.service import AccountService
from shared.db import migrate, open_pool
from shared.errors import Conflict, InvalidInput, PreconditionFailed
from shared.events import PlanChanged

pytestmark = pytest.mark.integration

SIRET = "73282932000074"


@pytest.fixture
async def store(new_database):
    pool = await open_pool(new_database("acctstore"), min_size=2, max_size=12)
    await migrate(pool, "account_service", MIGRATIONS)
    try:
        yield EventStore(pool)
    finally:
        await pool.close()


async def create(service: AccountService, email: str = "ann@example.com", **kw):
    args = dict(actor="u1", actor_email=email, name="Durand", country="FR", company_id=None, plan=None,
                referral_code=None) | kw
    return await service.create_account(**args)


async def count(store: EventStore, table: str) -> int:
    async with store.pool.connection() as conn:
        cur = await conn.execute(f"SELECT count(*) FROM {table}")
        return (await cur.fetchone())[0]


async def test_create_appends_two_events_in_one_commit_and_reads_back(store):
    service = AccountService(store)
    outcome = await create(service, plan="solo")
    assert outcome.version == 2
    stored = await store.read_stream(outcome.state.account_id)
    assert [(e.version, e.type) for e in stored] == [(1, "AccountCreated"), (2, "MemberAdded")]
    assert stored[0].xid == stored[1].xid  # one transaction
    assert stored[1].payload().email == "ann@example.com"
    env = stored[0].envelope()
    assert env.streamversion == 1 and env.subject == outcome.state.account_id and env.id == stored[0].event_id
    state = await service.load(outcome.state.account_id)
    assert state == outcome.state


async def test_append_at_a_stale_or_impossible_version_is_refused(store):
    service = AccountService(store)
    acct = (await create(service)).state.account_id
    event = PlanChanged(account_id=acct, plan="business")
    for version in (0, 1, 5):  # taken, taken, not there yet (would leave a gap)
        with pytest.raises(ConcurrencyError):
            await store.append(acct, version, [event])
    assert [e.version for e in await store.read_stream(acct)] == [1, 2]


async def test_concurrent_appends_to_one_stream_lose_nothing_and_duplicate_nothing(store):
    service = AccountService(store, max_attempts=50)
    acct = (await create(service, plan="enterprise")).state.account_id

    # Raw appends racing for the same version: exactly one wins.
    results = await asyncio.gather(
        *(store.append(acct, 2, [PlanChanged(account_id=acct, plan="business")]) for _ in range(8)),
        return_exceptions=True,
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert all(isinstance(r, ConcurrencyError) for r in results if isinstance(r, BaseException))

    # Commands racing: each retried until it lands on a fresh version.
    emails = [f"m{i}@example.com" for i in range(10)]
    outcomes = await asyncio.gather(
        *(service.handle(acct, AddMember("u1", e, "user"), actor_email="ann@example.com") for e in emails)
    )
    versions = sorted(o.version for o in outcomes)
    assert versions == list(range(4, 14))
    stored = await store.read_stream(acct)
    assert [e.version for e in stored] == list(range(1, 14))
    assert len({e.event_id for e in stored}) == 13
    state = await service.load(acct)
    assert set(emails) < set(state.members) and len(state.members) == 11


async def test_if_match_is_checked_against_the_current_version(store):
    service = AccountService(store)
    acct = (await create(service)).state.account_id
    out = await service.handle(acct, ChangePlan("u1", "business"), actor_email="ann@example.com", if_match=2)
    assert out.version == 3
    with pytest.raises(PreconditionFailed):
        await service.handle(acct, ChangePlan("u1", "solo"), actor_email="ann@example.com", if_match=2)
    assert (await service.load(acct)).plan == "business"


async def test_eight_concurrent_creates_with_one_siret_one_wins(store):
    service = AccountService(store)
    results = await asyncio.gather(
        *(create(service, email=f"p{i}@example.com", company_id="732 829 320 00074") for i in range(8)),
        return_exceptions=True,
    )
    winners = [r for r in results if not isinstance(r, BaseException)]
    losers = [r for r in results if isinstance(r, BaseException)]
    assert len(winners) == 1
    assert len(losers) == 7 and all(isinstance(e, Conflict) and e.code == "company_id_taken" for e in losers)
    assert winners[0].state.company_id == SIRET
    assert await count(store, "company_reservations") == 1
    assert await count(store, "events") == 2  # the losers stored nothing
    # the same company id in another country is another company
    await create(service, country="BE", company_id=SIRET)


async def test_referral_codes(store):
    service = AccountService(store)
    referrer = (await create(service)).state
    assert len(referrer.referral_code) == 10
    referred = (await create(service, email="bob@example.com",
                             referral_code=f" {referrer.referral_code.lower()} ")).state
    assert referred.referred_by == referrer.account_id and referred.referral_code != referrer.referral_code
    before = await count(store, "events")
    with pytest.raises(InvalidInput) as e:
        await create(service, referral_code="NOSUCHCODE")
    assert e.value.status == 422
    assert await count(store, "events") == before


async def test_unknown_stream_reads_empty(store):
    assert await store.read_stream(str(uuid.uuid4())) == []


async def test_several_replicas_starting_at_once_migrate_once(new_database, nats_names):
    from account_service.app import open_runtime
    from account_service.settings import Settings

    settings = Settings(account_database_url=new_database("acctreplicas"), nats_url=nats_names.url,
                        nats_stream=nats_names.stream, nats_subject_prefix=nats_names.prefix)
    runtimes = await asyncio.gather(*(open_runtime(settings, nats_wait=5) for _ in range(3)))
    try:
        async with runtimes[0].pool.connection() as conn:
            cur = await conn.execute("SELECT count(*) FROM schema_migrations WHERE component = 'account_service'")
            assert (await cur.fetchone())[0] == len(MIGRATIONS)
        service = AccountService(runtimes[1].store)
        assert (await create(service)).version == 2
    finally:
        for rt in runtimes:
            await rt.close()
