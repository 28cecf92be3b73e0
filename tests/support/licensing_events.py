"""Account event streams for the licensing / consumer-kit tests, published
straight into a test stream (no account service needed), and the licences
they should produce, computed independently of licensing_consumer."""

from __future__ import annotations

import random
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import nats

from shared.bus import OutgoingMessage, ensure_stream, publish_batch
from shared.catalogue import PLANS
from shared.events import (
    AccountCreated,
    Envelope,
    EventData,
    MemberAdded,
    MemberRemoved,
    PlanChanged,
    envelope,
    subject_for,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class Story:
    """Writes account streams (versions 1, 2, 3, ... per account) and knows the licences they make."""

    envelopes: list[Envelope] = field(default_factory=list)
    versions: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    accounts: dict[str, dict] = field(default_factory=dict)
    referrals: list[tuple[str, str]] = field(default_factory=list)  # (referrer, referee)

    def add(self, event: EventData) -> Envelope:
        self.versions[event.account_id] += 1
        env = envelope(event, streamversion=self.versions[event.account_id],
                       time=T0 + timedelta(milliseconds=len(self.envelopes)))
        self.envelopes.append(env)
        return env

    def create(self, name: str = "Acme", *, admin: str = "alice@example.com", plan: str = "team",
               referred_by: str | None = None, account_id: str | None = None) -> str:
        account = account_id or f"acc_{uuid.uuid4().hex[:12]}"
        self.add(AccountCreated(account_id=account, actor="u1", name=name, country="FR", company_id=None,
                                plan=plan, referral_code=f"R{account[-8:]}", referred_by=referred_by))
        self.add(MemberAdded(account_id=account, actor="u1", email=admin, role="admin", rights=()))
        self.accounts[account] = {"name": name, "plan": plan, "referred_by": referred_by,
                                  "members": {admin: "admin"}}
        if referred_by:
            self.referrals.append((referred_by, account))
        return account

    def add_member(self, account: str, email: str, role: str = "user") -> None:
        self.add(MemberAdded(account_id=account, email=email, role=role, rights=()))
        self.accounts[account]["members"][email] = role

    def remove_member(self, account: str, email: str) -> None:
        self.add(MemberRemoved(account_id=account, email=email))
        del self.accounts[account]["members"][email]

    def change_plan(self, account: str, plan: str) -> None:
        self.add(PlanChanged(account_id=account, plan=plan))
        self.accounts[account]["plan"] = plan

    def expected(self) -> dict[str, dict]:
        """account id -> the licence body GET /licences/{id} should return."""
        out = {}
        for account, a in self.accounts.items():
            credits = sum(1 for r, _ in self.referrals if r == account) + (1 if a["referred_by"] else 0)
            out[account] = {"account_id": account, "name": a["name"], "country": "FR", "company_id": None,
                            "plan": a["plan"], "seats_included": PLANS[a["plan"]],
                            "seats_used": len(a["members"]), "referral_credits": credits,
                            "referred_by": a["referred_by"], "version": self.versions[account]}
        return out


def random_story(n_events: int, n_accounts: int = 20, seed: int = 7) -> Story:
    """About `n_events` events over `n_accounts` accounts, interleaved, some created with referrals."""
    rng = random.Random(seed)
    story = Story()
    accounts: list[str] = []
    for i in range(n_accounts):
        referrer = rng.choice(accounts) if accounts and rng.random() < 0.4 else None
        accounts.append(story.create(f"Company {i}", admin=f"admin{i}@example.com",
                                     plan=rng.choice(["team", "business", "enterprise"]), referred_by=referrer))
    counter = 0
    while len(story.envelopes) < n_events:
        account = rng.choice(accounts)
        members = story.accounts[account]["members"]
        roll = rng.random()
        removable = [e for e, role in members.items() if role != "admin"]
        if roll < 0.05:
            story.change_plan(account, rng.choice(["business", "enterprise"]))
        elif roll < 0.35 and removable:
            story.remove_member(account, rng.choice(removable))
        else:
            counter += 1
            story.add_member(account, f"m{counter}@example.com")
    return story


async def publish(url: str, stream: str, prefix: str, envelopes: list[Envelope], *,
                  msg_ids: list[str] | None = None, chunk: int = 500) -> None:
    """Publish envelopes in the given order, Nats-Msg-Id = event id (or `msg_ids`)."""
    nc = await nats.connect(url, connect_timeout=2)
    try:
        js = nc.jetstream()
        await ensure_stream(js, stream, [f"{prefix}.>"])
        messages = [OutgoingMessage(subject_for(prefix, e.account_id, e.type), e.to_json(),
                                    msg_ids[i] if msg_ids else e.id) for i, e in enumerate(envelopes)]
        for i in range(0, len(messages), chunk):
            await publish_batch(js, messages[i:i + chunk], timeout=30)
    finally:
        await nc.close()


async def applied_versions(pool, consumer: str = "licensing") -> dict[str, int]:
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT account_id, version FROM consumer_positions WHERE consumer = %s",
                                 (consumer,))
        return dict(await cur.fetchall())


async def caught_up(pool, story: Story, consumer: str = "licensing") -> bool:
    return await applied_versions(pool, consumer) == dict(story.versions)
