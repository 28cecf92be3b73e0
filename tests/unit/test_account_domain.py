"""The account domain, pure: decide() and evolve() for every rule and each bad input."""

from __future__ import annotations

import uuid

import pytest

from account_service import domain
from account_service.domain import (
    AccountState,
    AddMember,
    ChangeMember,
    ChangePlan,
    CreateAccount,
    RemoveMember,
    decide,
    evolve,
    fold,
)
from account_service.service import parse_if_match, normalize_referral_code
from shared.catalogue import DEFAULT_RIGHTS
from shared.errors import Conflict, Forbidden, InvalidInput, NotFound, PreconditionFailed
from shared.events import AccountCreated, MemberAdded, MemberRemoved, MemberRoleChanged, PlanChanged

ACTOR = "user-1"


def create(**kw) -> CreateAccount:
    base = dict(actor=ACTOR, actor_email="Ann@Example.COM", name="Durand BTP", country="fr",
                referral_code="REFCODE234")
    return CreateAccount(**(base | kw))


def new_state() -> AccountState:
    return AccountState(str(uuid.uuid4()))


def run(state: AccountState, command) -> AccountState:
    for event in decide(command, state):
        state = evolve(state, event)
    return state


@pytest.fixture
def account() -> AccountState:
    return run(new_state(), create())


def code_of(exc_info) -> str:
    return exc_info.value.code


# ----------------------------------------------------------------- create


def test_create_makes_the_creator_admin_in_the_same_decision():
    state = new_state()
    events = decide(create(), state)
    assert [type(e) for e in events] == [AccountCreated, MemberAdded]
    created, added = events
    assert created.country == "FR" and created.name == "Durand BTP" and created.plan == "team"
    assert created.referral_code == "REFCODE234" and created.referred_by is None
    assert added.email == "ann@example.com" and added.role == "admin"
    assert added.rights == DEFAULT_RIGHTS["admin"]
    assert all(e.actor == ACTOR and e.account_id == state.account_id for e in events)
    after = fold(state.account_id, events)
    assert after.version == 2 and after.admins == 1 and set(after.members) == {"ann@example.com"}


def test_create_twice_is_refused(account):
    with pytest.raises(Conflict) as e:
        decide(create(), account)
    assert code_of(e) == "account_exists"


def test_name_is_trimmed_and_limited():
    assert decide(create(name="  Durand  "), new_state())[0].name == "Durand"
    assert decide(create(name="x" * 200), new_state())[0].name == "x" * 200
    assert decide(create(name="Société Générale d'Électricité"), new_state())[0].name.startswith("Soc")


@pytest.mark.parametrize("bad", ["", "   ", "x" * 201, "line\nbreak", "tab\there", "nul\x00", "bell\x07", 42, None])
def test_bad_names_are_refused(bad):
    with pytest.raises(InvalidInput):
        decide(create(name=bad), new_state())


@pytest.mark.parametrize("raw,out", [("fr", "FR"), ("De", "DE"), (" be ", "BE"), ("US", "US")])
def test_country_is_iso_alpha2_case_insensitive(raw, out):
    assert decide(create(country=raw, company_id=None), new_state())[0].country == out


@pytest.mark.parametrize("bad", ["", "F", "FRA", "ZZ", "XX", "1A", "É1", "fr ance", None, 33])
def test_bad_countries_are_refused(bad):
    with pytest.raises(InvalidInput):
        decide(create(country=bad), new_state())


@pytest.mark.parametrize("raw,stored", [
    ("73282932000074", "73282932000074"),
    ("732 829 320 00074", "73282932000074"),
    (" 73282932000074 ", "73282932000074"),
    ("35600000049837", "35600000049837"),   # La Poste: digit sum a multiple of 5, not Luhn
    ("35600000000048", "35600000000048"),   # La Poste's head office: plain Luhn
])
def test_french_company_id_is_a_siret_stored_without_spaces(raw, stored):
    assert decide(create(company_id=raw), new_state())[0].company_id == stored


@pytest.mark.parametrize("bad", [
    "73282932000079",      # Luhn fails
    "7328293200007",       # 13 digits
    "732829320000740",     # 15 digits
    "7328293200007A",      # not digits
    "732.829.320.00074",   # dots are not spaces
    "35600000009076",      # La Poste, digit sum not a multiple of 5
    "",
    "   ",
    "７３２８２９３２０００７４",  # full-width digits
])
def test_bad_sirets_are_refused(bad):
    with pytest.raises(InvalidInput):
        decide(create(company_id=bad), new_state())


def test_company_id_elsewhere_is_a_trimmed_non_empty_string():
    assert decide(create(country="DE", company_id="  HRB 12345 "), new_state())[0].company_id == "HRB 12345"
    for bad in ("", "   ", "x" * 65, "a\nb"):
        with pytest.raises(InvalidInput):
            decide(create(country="DE", company_id=bad), new_state())


def test_company_id_is_optional():
    assert decide(create(company_id=None), new_state())[0].company_id is None


@pytest.mark.parametrize("plan", ["solo", "team", "business", "enterprise"])
def test_plan_at_creation(plan):
    assert decide(create(plan=plan), new_state())[0].plan == plan


@pytest.mark.parametrize("bad", ["gold", "", "TEAM", 5])
def test_bad_plans_are_refused(bad):
    with pytest.raises(InvalidInput):
        decide(create(plan=bad), new_state())


@pytest.mark.parametrize("bad", ["not-an-email", "", "a@", "@b.c", None])
def test_creator_email_must_be_an_email(bad):
    with pytest.raises(InvalidInput):
        decide(create(actor_email=bad), new_state())


def test_referrer_is_recorded():
    assert decide(create(referred_by="acct-2"), new_state())[0].referred_by == "acct-2"


# ----------------------------------------------------------------- members


def test_add_member_with_default_rights_from_role(account):
    events = decide(AddMember(ACTOR, " Bob@Example.com ", "user"), account)
    assert events == [MemberAdded(account_id=account.account_id, actor=ACTOR, email="bob@example.com",
                                  role="user", rights=DEFAULT_RIGHTS["user"])]
    state = run(account, AddMember(ACTOR, "carol@example.com", "viewer"))
    assert state.members["carol@example.com"].rights == DEFAULT_RIGHTS["viewer"]
    assert state.version == 3


def test_add_member_with_explicit_rights_from_the_catalogue(account):
    (event,) = decide(AddMember(ACTOR, "bob@example.com", "user", ["invoices:read", "quotes:write"]), account)
    assert event.rights == ("quotes:write", "invoices:read")
    (event,) = decide(AddMember(ACTOR, "bob@example.com", "viewer", []), account)
    assert event.rights == ()


@pytest.mark.parametrize("role,rights", [
    ("owner", None), ("", None), ("Admin", None), (None, None),
    ("user", ["quotes:delete"]), ("user", ["payroll:read"]), ("user", "quotes:read"), ("user", [1]),
])
def test_add_member_bad_role_or_rights(account, role, rights):
    with pytest.raises(InvalidInput):
        decide(AddMember(ACTOR, "bob@example.com", role, rights), account)


@pytest.mark.parametrize("bad", ["bob", "bob@", "", "a b@example.com"])
def test_add_member_bad_email(account, bad):
    with pytest.raises(InvalidInput):
        decide(AddMember(ACTOR, bad, "user"), account)


def test_no_duplicate_member_whatever_the_case(account):
    with pytest.raises(Conflict) as e:
        decide(AddMember(ACTOR, "ANN@example.com", "user"), account)
    assert code_of(e) == "already_member"


def test_seats_are_limited_by_the_plan():
    solo = run(new_state(), create(plan="solo"))
    with pytest.raises(Conflict) as e:
        decide(AddMember(ACTOR, "bob@example.com", "user"), solo)
    assert code_of(e) == "seat_limit"
    team = run(new_state(), create())
    for i in range(4):
        team = run(team, AddMember(ACTOR, f"m{i}@example.com", "user"))
    assert len(team.members) == 5
    with pytest.raises(Conflict) as e:
        decide(AddMember(ACTOR, "sixth@example.com", "user"), team)
    assert code_of(e) == "seat_limit"
    ent = run(run(new_state(), create(plan="enterprise")), AddMember(ACTOR, "x@example.com", "user"))
    for i in range(30):
        ent = run(ent, AddMember(ACTOR, f"e{i}@example.com", "viewer"))
    assert len(ent.members) == 32


def test_change_member_role_resets_rights_to_the_new_default(account):
    state = run(account, AddMember(ACTOR, "bob@example.com", "user"))
    (event,) = decide(ChangeMember(ACTOR, "BOB@example.com", role="viewer"), state)
    assert isinstance(event, MemberRoleChanged)
    assert event.role == "viewer" and event.rights == DEFAULT_RIGHTS["viewer"]


def test_change_member_rights_only_keeps_the_role(account):
    state = run(account, AddMember(ACTOR, "bob@example.com", "user"))
    state = run(state, ChangeMember(ACTOR, "bob@example.com", rights=["reports:read"]))
    assert state.members["bob@example.com"].role == "user"
    assert state.members["bob@example.com"].rights == ("reports:read",)


def test_change_member_that_changes_nothing_decides_nothing(account):
    state = run(account, AddMember(ACTOR, "bob@example.com", "user"))
    assert decide(ChangeMember(ACTOR, "bob@example.com", role="user"), state) == []


def test_change_member_bad_inputs(account):
    state = run(account, AddMember(ACTOR, "bob@example.com", "user"))
    for command in (
        ChangeMember(ACTOR, "bob@example.com"),  # nothing to change
        ChangeMember(ACTOR, "bob@example.com", role="boss"),
        ChangeMember(ACTOR, "bob@example.com", rights=["quotes:admin"]),
        ChangeMember(ACTOR, "not an email", role="user"),
    ):
        with pytest.raises(InvalidInput):
            decide(command, state)
    with pytest.raises(NotFound):
        decide(ChangeMember(ACTOR, "nobody@example.com", role="user"), state)


def test_never_demote_the_last_admin(account):
    with pytest.raises(Conflict) as e:
        decide(ChangeMember(ACTOR, "ann@example.com", role="user"), account)
    assert code_of(e) == "last_admin"
    state = run(account, AddMember(ACTOR, "bob@example.com", "admin"))
    state = run(state, ChangeMember(ACTOR, "ann@example.com", role="user"))
    assert state.admins == 1 and state.members["ann@example.com"].role == "user"
    # an admin's rights may change without demotion
    assert decide(ChangeMember(ACTOR, "bob@example.com", rights=["quotes:read"]), state)


def test_never_remove_the_last_admin(account):
    with pytest.raises(Conflict) as e:
        decide(RemoveMember(ACTOR, "ann@example.com"), account)
    assert code_of(e) == "last_admin"
    state = run(account, AddMember(ACTOR, "bob@example.com", "admin"))
    (event,) = decide(RemoveMember(ACTOR, "ANN@example.com"), state)
    assert event == MemberRemoved(account_id=account.account_id, actor=ACTOR, email="ann@example.com")
    state = evolve(state, event)
    assert set(state.members) == {"bob@example.com"} and state.version == 4


def test_remove_unknown_member_is_not_found(account):
    with pytest.raises(NotFound):
        decide(RemoveMember(ACTOR, "nobody@example.com"), account)
    with pytest.raises(InvalidInput):
        decide(RemoveMember(ACTOR, "nobody"), account)


def test_removed_member_frees_a_seat():
    state = run(run(new_state(), create(plan="solo")), ChangePlan(ACTOR, "team"))
    state = run(state, AddMember(ACTOR, "bob@example.com", "user"))
    state = run(state, RemoveMember(ACTOR, "bob@example.com"))
    state = run(state, ChangePlan(ACTOR, "solo"))
    assert state.plan == "solo" and len(state.members) == 1


# ----------------------------------------------------------------- plans


def test_change_plan(account):
    (event,) = decide(ChangePlan(ACTOR, "business"), account)
    assert event == PlanChanged(account_id=account.account_id, actor=ACTOR, plan="business")
    assert evolve(account, event).plan == "business"
    assert decide(ChangePlan(ACTOR, "team"), account) == []  # already on it


def test_plan_change_refused_when_members_exceed_its_seats(account):
    state = run(account, AddMember(ACTOR, "bob@example.com", "user"))
    with pytest.raises(Conflict) as e:
        decide(ChangePlan(ACTOR, "solo"), state)
    assert code_of(e) == "seat_limit"


@pytest.mark.parametrize("bad", ["platinum", "", None])
def test_change_plan_bad_plan(account, bad):
    with pytest.raises(InvalidInput):
        decide(ChangePlan(ACTOR, bad), account)


def test_commands_on_a_missing_account_are_not_found():
    for command in (ChangePlan(ACTOR, "solo"), AddMember(ACTOR, "b@example.com", "user"),
                    ChangeMember(ACTOR, "b@example.com", role="user"), RemoveMember(ACTOR, "b@example.com")):
        with pytest.raises(NotFound):
            decide(command, new_state())


# ----------------------------------------------------------------- evolve and authorisation


def test_evolve_counts_versions_and_is_pure(account):
    before = account
    after = evolve(before, PlanChanged(account_id=before.account_id, plan="solo"))
    assert before.plan == "team" and before.version == 2
    assert after.plan == "solo" and after.version == 3


def test_authorize_against_current_state(account):
    state = run(account, AddMember(ACTOR, "bob@example.com", "user"))
    assert domain.authorize(state, "ann@example.com", "admin").role == "admin"
    assert domain.authorize(state, "bob@example.com", "viewer").role == "user"
    for email in ("bob@example.com", "eve@example.com", None):
        with pytest.raises(Forbidden):
            domain.authorize(state, email, "admin")
    with pytest.raises(NotFound):
        domain.authorize(new_state(), "ann@example.com", "viewer")


def test_if_match_parsing():
    assert parse_if_match(None) is None and parse_if_match("*") is None
    assert parse_if_match('"3"') == {3} and parse_if_match('W/"4"') == {4} and parse_if_match("5") == {5}
    assert parse_if_match('"3", W/"7" ,"x"') == {3, 7} and parse_if_match('"3", *') is None
    for bad in ('"abc"', "", '"-1"', '"\xb2"', '"١"', '"２"'):
        with pytest.raises(PreconditionFailed):
            parse_if_match(bad)


def test_referral_codes_are_normalised():
    assert normalize_referral_code(" abcd-efgh ") == "ABCDEFGH"
    for bad in (12, "", "   ", "AB\x00CD", "ÉCOLE", "x" * 65, "a.b"):
        with pytest.raises(InvalidInput):
            normalize_referral_code(bad)


@pytest.mark.parametrize("name", ["Durand\u00a0& Fils", "SARL\u202fMartin", "Société Générale"])
def test_names_with_no_break_spaces_and_accents_are_printable(name):
    assert domain.check_name(f"  {name} ") == name


@pytest.mark.parametrize("name", ["a\u2028b", "a\u200bb", "a\x00b", "a\tb", "a\ud800b"])
def test_names_with_separators_format_or_control_characters_are_refused(name):
    with pytest.raises(InvalidInput):
        domain.check_name(name)
