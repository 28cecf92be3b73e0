"""The licence, evolved from events: pure, no database, no NATS."""

from __future__ import annotations

from datetime import UTC, datetime

from licensing_consumer.domain import (
    Licence,
    evolve,
    referral_credit_entry,
    referral_credits,
    referral_of,
)
from shared.events import AccountCreated, MemberAdded, MemberRemoved, MemberRoleChanged, PlanChanged

T = datetime(2026, 1, 1, tzinfo=UTC)


def run(events):
    licence, history = None, []
    for version, event in enumerate(events, start=1):
        licence, entries = evolve(licence, event, version=version, time=T)
        history += entries
    return licence, history


def created(account="a1", **kw):
    return AccountCreated(account_id=account, actor="u1", name="Acme", country="FR",
                          company_id="73282932000074", referral_code="CODE", **kw)


def added(email, role="user", account="a1"):
    return MemberAdded(account_id=account, email=email, role=role, rights=())


def test_a_new_account_gets_a_licence_with_its_plan_and_creator():
    licence, history = run([created(), added("alice@example.com", "admin")])
    view = licence.view(referral_credits=0)
    assert view == {"account_id": "a1", "name": "Acme", "country": "FR", "company_id": "73282932000074",
                    "plan": "team", "seats_included": 5, "seats_used": 1, "referral_credits": 0,
                    "referred_by": None, "version": 2}
    assert [h.type for h in history] == ["AccountCreated", "MemberAdded"]
    assert history[1].view()["seats_used"] == 1 and history[1].view()["time"] == "2026-01-01T00:00:00Z"


def test_members_added_and_removed_count_seats_and_roles_decide_admins():
    licence, history = run([
        created(), added("alice@example.com", "admin"), added("bob@example.com"),
        MemberRoleChanged(account_id="a1", email="bob@example.com", role="admin", rights=()),
        MemberRemoved(account_id="a1", email="alice@example.com"),
    ])
    assert licence.seats_used == 1 and licence.version == 5
    assert licence.is_admin("bob@example.com") and not licence.is_admin("alice@example.com")
    assert not licence.is_admin(None)
    assert [h.type for h in history] == ["AccountCreated", "MemberAdded", "MemberAdded", "MemberRemoved"]


def test_plan_changes_change_the_seats_included():
    licence, history = run([created(plan="solo"), PlanChanged(account_id="a1", plan="enterprise")])
    assert licence.plan == "enterprise" and licence.seats_included is None
    assert history[-1].view() | {"time": None} == {"time": None, "type": "PlanChanged", "version": 2,
                                                   "plan": "enterprise", "previous_plan": "solo",
                                                   "seats_included": None}


def test_unknown_events_move_only_the_version():
    licence, history = run([created(), None])
    assert licence.version == 2 and len(history) == 1


def test_events_before_the_account_exists_are_ignored():
    assert evolve(None, added("x@example.com"), version=1, time=T) == (None, [])


def test_state_round_trip():
    licence, _ = run([created(referred_by="a0"), added("alice@example.com", "admin")])
    assert Licence.from_state(licence.to_state()) == licence


def test_referral_rewards_both_accounts():
    referral = referral_of(created(account="b1", referred_by="a1"), time=T)
    assert (referral.referrer, referral.referee) == ("a1", "b1")
    assert referral_of(created(), time=T) is None
    assert referral_of(added("x@example.com"), time=T) is None
    entry = referral_credit_entry(referral, version=1).view()
    assert entry["type"] == "ReferralCreditEarned" and entry["referee_account_id"] == "b1"
    assert referral_credits(referred_others=0, was_referred=True) == 1
    assert referral_credits(referred_others=2, was_referred=True) == 3
    assert referral_credits(referred_others=0, was_referred=False) == 0


def test_history_times_are_rfc3339_in_utc():
    from datetime import timedelta, timezone

    from licensing_consumer.domain import HistoryEntry

    paris = datetime(2026, 1, 1, 10, 30, tzinfo=timezone(timedelta(hours=1)))
    assert HistoryEntry("a1", paris, "PlanChanged", 3).view()["time"] == "2026-01-01T09:30:00Z"
