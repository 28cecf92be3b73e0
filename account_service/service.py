"""Command handlers: load a stream, authorise, decide, append (with bounded retries).

Small functions between the HTTP edge and the domain; the only place that
combines the event store with the domain rules.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import uuid
from collections.abc import Collection
from dataclasses import dataclass, replace

from prometheus_client import Counter

from account_service import domain
from account_service.domain import AccountState
from account_service.eventstore import ConcurrencyError, EventStore, ReferralCodeTaken, StoredEvent
from shared.errors import Conflict, InvalidInput, NotFound, PreconditionFailed

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 10
RETRY_JITTER_SECONDS = 0.005
REFERRAL_ALPHABET = "ABCDEFGHJKMNPQRSTVWXYZ23456789"  # no 0/O, 1/I/L, U
REFERRAL_LENGTH = 10

COMMANDS = Counter("account_commands_total", "Commands handled", ["command", "outcome"])
RETRIES = Counter("account_occ_retries_total", "Commands retried after losing an optimistic-concurrency race")


def new_referral_code() -> str:
    return "".join(secrets.choice(REFERRAL_ALPHABET) for _ in range(REFERRAL_LENGTH))


def normalize_referral_code(raw: object) -> str:
    """Codes are read case-insensitively, spaces and dashes ignored; anything else is unknown."""
    if not isinstance(raw, str):
        raise InvalidInput("referral_code must be a string")
    code = "".join(raw.split()).upper().replace("-", "")
    if not code or len(code) > 64 or not (code.isascii() and code.isalnum()):
        raise InvalidInput("unknown referral_code: no account has this code", code="unknown_referral_code")
    return code


def parse_account_id(raw: str) -> str:
    """The canonical form of an account id, or 404 (an id we never issued)."""
    try:
        return str(uuid.UUID(raw))
    except (ValueError, AttributeError, TypeError):
        raise NotFound("no such account") from None


def parse_if_match(raw: str | None) -> frozenset[int] | None:
    """`If-Match: "<version>"` -> the versions it accepts (None: no condition).

    Each entity tag may be strong or weak (`W/"4"`) or a bare number, and the header
    may list several (`"3", "4"`: any of them matches, RFC 9110). `*` is no condition.
    A header naming no version at all can match nothing: 412."""
    if raw is None:
        return None
    versions: set[int] = set()
    for part in raw.split(","):
        value = part.strip()
        if value == "*":
            return None
        if value.startswith("W/"):
            value = value[2:]
        value = value.strip('"')
        if value.isascii() and value.isdigit():  # ASCII digits only: "²".isdigit() is True too
            versions.add(int(value))
    if not versions:
        raise PreconditionFailed('If-Match must be a quoted stream version such as "3"')
    return frozenset(versions)


@dataclass(frozen=True, slots=True)
class Outcome:
    state: AccountState
    events: list[StoredEvent]

    @property
    def version(self) -> int:
        return self.state.version


class AccountService:
    def __init__(self, store: EventStore, *, max_attempts: int = MAX_ATTEMPTS):
        self.store = store
        self.max_attempts = max_attempts

    async def load(self, account_id: str) -> AccountState:
        events = await self.store.read_stream(account_id)
        state = AccountState(account_id)
        for stored in events:
            payload = stored.payload()
            # an event type this code does not know still counts in the version
            state = domain.evolve(state, payload) if payload is not None else replace(state, version=state.version + 1)
        return state

    async def get(self, account_id: str, *, email: str | None, needed: str = "viewer") -> AccountState:
        state = await self.load(account_id)
        domain.authorize(state, email, needed)
        return state

    async def create_account(
        self, *, actor: str, actor_email: str, name: str, country: str, company_id: str | None,
        plan: str | None, referral_code: str | None,
    ) -> Outcome:
        referred_by = None
        if referral_code is not None:
            referred_by = await self.store.referrer(normalize_referral_code(referral_code))
            if referred_by is None:
                raise InvalidInput("unknown referral_code: no account has this code", code="unknown_referral_code")
        for _ in range(self.max_attempts):
            account_id = str(uuid.uuid4())
            command = domain.CreateAccount(
                actor=actor, actor_email=actor_email, name=name, country=country,
                company_id=company_id, plan=plan, referral_code=new_referral_code(), referred_by=referred_by,
            )
            state = AccountState(account_id)
            events = domain.decide(command, state)
            try:
                stored = await self.store.append(account_id, 0, events)
            except ReferralCodeTaken:
                continue  # one chance in ~10^14: draw another code
            COMMANDS.labels("CreateAccount", "ok").inc()
            return Outcome(_apply(state, events), stored)
        raise Conflict("could not allocate a referral code; try again")

    async def handle(
        self, account_id: str, command: domain.Command, *, actor_email: str | None,
        if_match: int | Collection[int] | None = None,
    ) -> Outcome:
        """Run a command on an existing account as an admin, retrying lost races.

        `if_match`: the version(s) the account must be at (412 otherwise)."""
        if isinstance(if_match, int):
            if_match = frozenset({if_match})
        name = type(command).__name__
        for attempt in range(1, self.max_attempts + 1):
            state = await self.load(account_id)
            domain.authorize(state, actor_email, "admin")
            if if_match is not None and state.version not in if_match:
                wanted = " or ".join(str(v) for v in sorted(if_match))
                raise PreconditionFailed(
                    f"the account is at version {state.version}, not {wanted}", code="precondition_failed"
                )
            events = domain.decide(command, state)
            if not events:
                COMMANDS.labels(name, "unchanged").inc()
                return Outcome(state, [])
            try:
                stored = await self.store.append(account_id, state.version, events)
            except ConcurrencyError:
                RETRIES.inc()
                log.debug("%s on %s lost a race (attempt %d)", name, account_id, attempt)
                # a little random back-off spreads the racers apart
                await asyncio.sleep(random.uniform(0, RETRY_JITTER_SECONDS * attempt))
                continue
            COMMANDS.labels(name, "ok").inc()
            return Outcome(_apply(state, events), stored)
        COMMANDS.labels(name, "conflict").inc()
        raise ConcurrencyError("the account is being changed by others; try again")


def _apply(state: AccountState, events) -> AccountState:
    for event in events:
        state = domain.evolve(state, event)
    return state
