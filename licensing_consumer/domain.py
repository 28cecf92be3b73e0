"""Licences, built from the account events alone. Pure: no I/O, no framework.

One licence per company account. `evolve(licence, event)` returns the licence
after one event of that account's stream plus the history entries the event
adds (only licence-relevant changes: creation, seats, plan). Referral credits
(parrainage) span two accounts, so they are not part of one licence's state:
`referral_of(event)` says which pair of accounts an AccountCreated rewards and
the read side counts credits per account, whatever order the two accounts'
events arrive in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from shared.catalogue import PLANS
from shared.events import (
    AccountCreated,
    EventData,
    MemberAdded,
    MemberRemoved,
    MemberRoleChanged,
    PlanChanged,
)

CREDITS_PER_REFERRAL = 1
REFERRAL_CREDIT_EARNED = "ReferralCreditEarned"


def seats_for(plan: str) -> int | None:
    """Seats a plan includes; None for unlimited. An unknown (newer) plan is unlimited
    rather than a crash: the licence still shows the plan's name."""
    return PLANS.get(plan)


@dataclass(frozen=True, slots=True)
class Licence:
    account_id: str
    name: str
    country: str
    company_id: str | None
    plan: str
    referred_by: str | None
    version: int
    members: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))  # email -> role

    @property
    def seats_included(self) -> int | None:
        return seats_for(self.plan)

    @property
    def seats_used(self) -> int:
        return len(self.members)

    def is_admin(self, email: str | None) -> bool:
        return email is not None and self.members.get(email) == "admin"

    def view(self, referral_credits: int) -> dict[str, Any]:
        """The licence as the HTTP API shows it."""
        return {
            "account_id": self.account_id,
            "name": self.name,
            "country": self.country,
            "company_id": self.company_id,
            "plan": self.plan,
            "seats_included": self.seats_included,
            "seats_used": self.seats_used,
            "referral_credits": referral_credits,
            "referred_by": self.referred_by,
            "version": self.version,
        }

    def to_state(self) -> dict[str, Any]:
        return {
            "account_id": self.account_id, "name": self.name, "country": self.country,
            "company_id": self.company_id, "plan": self.plan, "referred_by": self.referred_by,
            "version": self.version, "members": dict(self.members),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Licence:
        return cls(
            account_id=state["account_id"], name=state["name"], country=state["country"],
            company_id=state.get("company_id"), plan=state["plan"], referred_by=state.get("referred_by"),
            version=state["version"], members=MappingProxyType(dict(state.get("members") or {})),
        )


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One licence-relevant change: `{time, type, version, ...details}` on the wire."""

    account_id: str  # whose history it belongs to
    time: datetime
    type: str
    version: int  # the causing event's streamversion (in the referee's stream for a referral credit)
    details: Mapping[str, Any] = field(default_factory=dict)

    def view(self) -> dict[str, Any]:
        when = self.time.astimezone(UTC) if self.time.tzinfo else self.time.replace(tzinfo=UTC)
        return {"time": when.isoformat().replace("+00:00", "Z"), "type": self.type,
                "version": self.version, **self.details}


@dataclass(frozen=True, slots=True)
class Referral:
    """Account `referee` was created with the referral code of account `referrer`."""

    referrer: str
    referee: str
    time: datetime


def _with_members(licence: Licence, members: dict[str, str], version: int) -> Licence:
    return replace(licence, members=MappingProxyType(members), version=version)


def evolve(licence: Licence | None, event: EventData | None, *, version: int,
           time: datetime) -> tuple[Licence | None, list[HistoryEntry]]:
    """The licence after `event` (version `version` of its account's stream).

    `event` None is a type this code does not know: only the version moves.
    Events before the account exists (impossible with a well-formed stream) are ignored.
    """
    if isinstance(event, AccountCreated):
        created = Licence(
            account_id=event.account_id, name=event.name, country=event.country,
            company_id=event.company_id, plan=event.plan, referred_by=event.referred_by,
            version=version,
        )
        details: dict[str, Any] = {
            "name": event.name, "country": event.country, "company_id": event.company_id,
            "plan": event.plan, "seats_included": created.seats_included, "referred_by": event.referred_by,
        }
        return created, [HistoryEntry(event.account_id, time, "AccountCreated", version, details)]
    if licence is None:
        return None, []
    if isinstance(event, MemberAdded):
        members = dict(licence.members)
        members[event.email] = event.role
        after = _with_members(licence, members, version)
        if after.seats_used == licence.seats_used:  # a repeat: role updated, no seat taken
            return after, []
        return after, [HistoryEntry(licence.account_id, time, "MemberAdded", version,
                                    {"email": event.email, "role": event.role, "seats_used": after.seats_used})]
    if isinstance(event, MemberRoleChanged):
        members = dict(licence.members)
        if event.email in members:
            members[event.email] = event.role
        return _with_members(licence, members, version), []  # who is admin changes, not the licence
    if isinstance(event, MemberRemoved):
        members = dict(licence.members)
        if members.pop(event.email, None) is None:
            return replace(licence, version=version), []
        after = _with_members(licence, members, version)
        return after, [HistoryEntry(licence.account_id, time, "MemberRemoved", version,
                                    {"email": event.email, "seats_used": after.seats_used})]
    if isinstance(event, PlanChanged):
        after = replace(licence, plan=event.plan, version=version)
        return after, [HistoryEntry(licence.account_id, time, "PlanChanged", version,
                                    {"plan": event.plan, "previous_plan": licence.plan,
                                     "seats_included": after.seats_included})]
    return replace(licence, version=version), []


def referral_of(event: EventData | None, *, time: datetime) -> Referral | None:
    """The referral an AccountCreated records, if it was created with a referral code."""
    if isinstance(event, AccountCreated) and event.referred_by and event.referred_by != event.account_id:
        return Referral(referrer=event.referred_by, referee=event.account_id, time=time)
    return None


def referral_credit_entry(referral: Referral, *, version: int) -> HistoryEntry:
    """The referrer's history entry for a referral (the referee's is its AccountCreated)."""
    return HistoryEntry(referral.referrer, referral.time, REFERRAL_CREDIT_EARNED, version,
                        {"referee_account_id": referral.referee, "credits": CREDITS_PER_REFERRAL})


def referral_credits(*, referred_others: int, was_referred: bool) -> int:
    """Credits of one account: one per account it referred, plus one if it was referred."""
    return CREDITS_PER_REFERRAL * (referred_others + (1 if was_referred else 0))
