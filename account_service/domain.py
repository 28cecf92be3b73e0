"""The account domain, pure: state, commands, decide() and evolve().

No I/O here (no FastAPI, psycopg or NATS). A command is decided against the
current state of one account stream and yields the events to append; the
state is the left fold of `evolve` over the stream's events.

Choices where the contract is silent:
- `company_id` outside France: a trimmed, non-empty string of at most 64
  printable characters (compared as given after trimming). In France it must
  be a SIRET (python-stdnum's check, La Poste's rule included), stored as its
  14 digits.
- A plan change to the current plan, or a member change that changes nothing,
  decides no event (the write answers with the current version).
- Changing a member's role without giving `rights` resets the rights to the
  new role's defaults; giving `rights` alone keeps the role.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

import pycountry
from stdnum.exceptions import ValidationError as StdnumError
from stdnum.fr import siret

from shared import catalogue
from shared.emails import normalize_email
from shared.errors import Conflict, Forbidden, InvalidInput, NotFound
from shared.events import (
    AccountCreated,
    EventData,
    MemberAdded,
    MemberRemoved,
    MemberRoleChanged,
    PlanChanged,
)

NAME_MAX = 200
COMPANY_ID_MAX = 64
ROLE_RANK = {"viewer": 0, "user": 1, "admin": 2}


# --------------------------------------------------------------------------- state


@dataclass(frozen=True, slots=True)
class Member:
    email: str
    role: str
    rights: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AccountState:
    """What one account stream says so far. `version` counts its events."""

    account_id: str
    version: int = 0
    name: str = ""
    country: str = ""
    company_id: str | None = None
    plan: str = catalogue.DEFAULT_PLAN
    referral_code: str = ""
    referred_by: str | None = None
    members: Mapping[str, Member] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def exists(self) -> bool:
        return self.version > 0

    @property
    def admins(self) -> int:
        return sum(1 for m in self.members.values() if m.role == "admin")

    @property
    def seats(self) -> int | None:
        return catalogue.PLANS.get(self.plan)


def evolve(state: AccountState, event: EventData) -> AccountState:
    """The state after one more event of the stream (its version + 1)."""
    members = dict(state.members)
    match event:
        case AccountCreated():
            state = replace(
                state, name=event.name, country=event.country, company_id=event.company_id,
                plan=event.plan, referral_code=event.referral_code, referred_by=event.referred_by,
            )
        case MemberAdded() | MemberRoleChanged():
            members[event.email] = Member(event.email, event.role, tuple(event.rights))
        case MemberRemoved():
            members.pop(event.email, None)
        case PlanChanged():
            state = replace(state, plan=event.plan)
        case _:
            pass  # an event type this code does not know changes nothing it knows
    return replace(state, members=MappingProxyType(members), version=state.version + 1)


def fold(account_id: str, events: Iterable[EventData]) -> AccountState:
    state = AccountState(account_id)
    for event in events:
        state = evolve(state, event)
    return state


# --------------------------------------------------------------------------- validation


def check_name(raw: object) -> str:
    if not isinstance(raw, str):
        raise InvalidInput("name must be a string")
    name = raw.strip()
    if not 1 <= len(name) <= NAME_MAX:
        raise InvalidInput(f"name must be 1 to {NAME_MAX} characters after trimming")
    if not all(_printable(c) for c in name):
        raise InvalidInput("name must contain printable characters only (no control characters or line breaks)")
    return name


def _printable(c: str) -> bool:
    """Printable as a person means it: letters, marks, digits, punctuation, symbols and
    spaces, no-break spaces included (French typography puts them before « : » and
    inside « Durand & Fils »); never controls, format characters, line or paragraph
    separators, surrogates or unassigned code points."""
    return c.isprintable() or unicodedata.category(c) == "Zs"


def check_country(raw: object) -> str:
    if not isinstance(raw, str):
        raise InvalidInput("country must be a string")
    code = raw.strip().upper()
    if len(code) != 2 or not code.isascii() or not code.isalpha() or pycountry.countries.get(alpha_2=code) is None:
        raise InvalidInput(f"country must be an ISO 3166-1 alpha-2 code such as FR or DE; got {raw!r}")
    return code


def check_company_id(country: str, raw: object) -> str | None:
    """The stored form of a company id for `country` (None when absent)."""
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise InvalidInput("company_id must be a string")
    if country == "FR":
        digits = "".join(raw.split())  # spaces (any whitespace) allowed, nothing else
        if len(digits) != 14 or not (digits.isascii() and digits.isdigit()):
            raise InvalidInput("company_id for FR must be a SIRET: 14 digits (spaces allowed)")
        try:
            return siret.validate(digits)
        except StdnumError as e:
            raise InvalidInput(f"company_id is not a valid SIRET ({e.message})") from e
    value = raw.strip()
    if not 1 <= len(value) <= COMPANY_ID_MAX or not value.isprintable():
        raise InvalidInput(f"company_id must be 1 to {COMPANY_ID_MAX} printable characters after trimming")
    return value


def check_plan(raw: object) -> str:
    if not isinstance(raw, str):
        raise InvalidInput("plan must be a string")
    return catalogue.check_plan(raw)


def check_rights(role: str, rights: object) -> tuple[str, ...]:
    if rights is not None and (
        not isinstance(rights, list | tuple) or not all(isinstance(r, str) for r in rights)
    ):
        raise InvalidInput("rights must be a list of names such as 'quotes:write'")
    if not isinstance(role, str):
        raise InvalidInput("role must be a string")
    return catalogue.rights_for(role, rights)


# --------------------------------------------------------------------------- commands


@dataclass(frozen=True, slots=True)
class CreateAccount:
    actor: str  # user id
    actor_email: str
    name: str
    country: str
    referral_code: str  # the new account's own code
    company_id: str | None = None
    plan: str | None = None
    referred_by: str | None = None  # the referrer's account id, already resolved


@dataclass(frozen=True, slots=True)
class ChangePlan:
    actor: str
    plan: str


@dataclass(frozen=True, slots=True)
class AddMember:
    actor: str
    email: str
    role: str
    rights: tuple[str, ...] | list[str] | None = None


@dataclass(frozen=True, slots=True)
class ChangeMember:
    actor: str
    email: str
    role: str | None = None
    rights: tuple[str, ...] | list[str] | None = None


@dataclass(frozen=True, slots=True)
class RemoveMember:
    actor: str
    email: str


Command = CreateAccount | ChangePlan | AddMember | ChangeMember | RemoveMember


def decide(command: Command, state: AccountState) -> list[EventData]:
    """The events `command` causes on `state`, or one of our errors."""
    if isinstance(command, CreateAccount):
        return _create(command, state)
    if not state.exists:
        raise NotFound("no such account")
    acct = state.account_id
    match command:
        case ChangePlan(actor=actor, plan=raw_plan):
            plan = check_plan(raw_plan)
            if plan == state.plan:
                return []
            seats = catalogue.PLANS[plan]
            if seats is not None and len(state.members) > seats:
                raise Conflict(
                    f"the {plan} plan has {seats} seats but the account has {len(state.members)} members",
                    code="seat_limit",
                )
            return [PlanChanged(account_id=acct, actor=actor, plan=plan)]
        case AddMember(actor=actor, email=raw_email, role=role, rights=rights):
            email = normalize_email(raw_email)
            granted = check_rights(role, rights)
            if email in state.members:
                raise Conflict(f"{email} is already a member of this account", code="already_member")
            seats = state.seats
            if seats is not None and len(state.members) >= seats:
                raise Conflict(f"all {seats} seats of the {state.plan} plan are taken", code="seat_limit")
            return [MemberAdded(account_id=acct, actor=actor, email=email, role=role, rights=granted)]
        case ChangeMember(actor=actor, email=raw_email, role=role, rights=rights):
            email = normalize_email(raw_email)
            if role is None and rights is None:
                raise InvalidInput("give a role, rights, or both")
            current = _member(state, email)
            new_role = current.role if role is None else role
            if rights is not None:
                granted = check_rights(new_role, rights)
            elif new_role != current.role:
                granted = check_rights(new_role, None)
            else:
                granted = current.rights
            if new_role == current.role and granted == current.rights:
                return []
            if current.role == "admin" and new_role != "admin" and state.admins <= 1:
                raise Conflict("demoting the last admin would leave the account without an admin",
                               code="last_admin")
            return [MemberRoleChanged(account_id=acct, actor=actor, email=email, role=new_role, rights=granted)]
        case RemoveMember(actor=actor, email=raw_email):
            email = normalize_email(raw_email)
            current = _member(state, email)
            if current.role == "admin" and state.admins <= 1:
                raise Conflict("removing the last admin would leave the account without an admin",
                               code="last_admin")
            return [MemberRemoved(account_id=acct, actor=actor, email=email)]
    raise TypeError(f"not a command: {command!r}")


def _create(command: CreateAccount, state: AccountState) -> list[EventData]:
    if state.exists:
        raise Conflict("this account already exists", code="account_exists")
    name = check_name(command.name)
    country = check_country(command.country)
    company_id = check_company_id(country, command.company_id)
    plan = catalogue.DEFAULT_PLAN if command.plan is None else check_plan(command.plan)
    email = normalize_email(command.actor_email)
    acct = state.account_id
    return [
        AccountCreated(
            account_id=acct, actor=command.actor, name=name, country=country, company_id=company_id,
            plan=plan, referral_code=command.referral_code, referred_by=command.referred_by,
        ),
        MemberAdded(
            account_id=acct, actor=command.actor, email=email, role="admin",
            rights=catalogue.DEFAULT_RIGHTS["admin"],
        ),
    ]


def _member(state: AccountState, email: str) -> Member:
    member = state.members.get(email)
    if member is None:
        raise NotFound(f"{email} is not a member of this account", code="not_a_member")
    return member


# --------------------------------------------------------------------------- authorisation


def authorize(state: AccountState, email: str | None, needed: str) -> Member:
    """The acting member if, in `state`, `email` holds at least role `needed`."""
    if not state.exists:
        raise NotFound("no such account")
    member = state.members.get(email) if email else None
    if member is None:
        raise Forbidden("you are not a member of this account")
    if ROLE_RANK[member.role] < ROLE_RANK[needed]:
        raise Forbidden(f"this needs the {needed} role in this account; you are {member.role}")
    return member
