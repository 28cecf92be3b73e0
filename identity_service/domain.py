"""The identity domain: pure rules, no I/O.

- the landing rule (which account a login lands in);
- the switching decision, shared by `POST /sessions/current/switch` and the
  RFC 8693 token exchange: a member of the target account in the read model
  gets a token for it, with the role and rights the read model holds, never
  more; anyone else is refused;
- the claims of an access token;
- session tokens: high-entropy, opaque, stored only as a hash.
"""

from __future__ import annotations

import hashlib
import secrets
import unicodedata
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.errors import Forbidden, InvalidInput

MAX_ACCESS_TOKEN_TTL = 300
MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 1024
SESSION_TOKEN_PREFIX = "mcs_"
SESSION_TOKEN_BYTES = 32  # 256 bits of entropy


class NotAMember(Forbidden):
    code = "not_a_member"

    def __init__(self, account_id: str):
        super().__init__(f"you are not a member of account {account_id}")
        self.account_id = account_id


@dataclass(frozen=True, slots=True)
class Membership:
    """One line of the user menu: a person's place in one account."""

    account_id: str
    name: str
    country: str
    role: str
    rights: tuple[str, ...]

    def as_menu_item(self) -> dict[str, Any]:
        return {"account_id": self.account_id, "name": self.name, "country": self.country,
                "role": self.role, "rights": list(self.rights)}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a live session's person."""

    user_id: str
    email: str
    session_id: str
    active_account_id: str | None = None


@dataclass(frozen=True, slots=True)
class Grant:
    """What a token may carry: an account and the holder's role and rights in it."""

    account_id: str | None
    name: str | None = None
    role: str | None = None
    rights: tuple[str, ...] = field(default=())


NO_ACCOUNT = Grant(account_id=None)


def check_password(password: str) -> str:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(f"password must be at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidInput(f"password must be at most {MAX_PASSWORD_LENGTH} characters")
    return password


def canonical_account_id(raw: str) -> str:
    """Account ids are UUIDs: any spelling of one (upper case, braces, no dashes)
    names the same account. Anything else is kept as given (and will match nothing)."""
    try:
        return str(uuid.UUID(raw))
    except (ValueError, AttributeError, TypeError):
        return raw


def is_account_id(value: str) -> bool:
    """Whether `value` is the canonical spelling of an account id (a UUID)."""
    try:
        return str(uuid.UUID(value)) == value
    except (ValueError, AttributeError, TypeError):
        return False


_LIGATURES = str.maketrans({"œ": "oe", "æ": "ae", "ø": "o", "đ": "d", "ł": "l"})


def collation_key(name: str) -> str:
    """A name as a reader looks it up: case and accents ignored ("Éclair" with the e's,
    "Œuvre" as "oeuvre")."""
    folded = unicodedata.normalize("NFKD", name.casefold()).translate(_LIGATURES)
    return "".join(c for c in folded if not unicodedata.combining(c))


def menu(memberships: Sequence[Membership]) -> list[Membership]:
    """The user menu's order: by name as a reader looks it up (case and accents ignored),
    then case-insensitively, then exactly, then id for ties."""
    return sorted(memberships, key=lambda m: (collation_key(m.name), m.name.casefold(), m.name, m.account_id))


def decide(account_id: str, membership: Membership | None) -> Grant:
    """The switching decision: the read model's membership of `account_id`, or refusal.

    Role and rights come from the read model only, so a token never carries
    more than the person holds in the target account.
    """
    if membership is None or membership.account_id != account_id:
        raise NotAMember(account_id)
    return Grant(account_id=membership.account_id, name=membership.name,
                 role=membership.role, rights=tuple(membership.rights))


def landing(
    memberships: Sequence[Membership], *, requested: str | None, last_used: str | None
) -> Grant:
    """Where a login lands: the account asked for (must be a member), else the one
    used last, else the first by name, else none."""
    by_id = {m.account_id: m for m in memberships}
    if requested is not None:
        requested = canonical_account_id(requested)
        return decide(requested, by_id.get(requested))
    if last_used is not None and last_used in by_id:
        return decide(last_used, by_id[last_used])
    ordered = menu(memberships)
    if ordered:
        return decide(ordered[0].account_id, ordered[0])
    return NO_ACCOUNT


def access_claims(
    principal: Principal,
    grant: Grant,
    *,
    issuer: str,
    audience: str,
    now: int,
    ttl: int = MAX_ACCESS_TOKEN_TTL,
) -> dict[str, Any]:
    """The claims of an access token (RFC 9068 plus ours). `acct` and `role` are
    absent when the token is for no account."""
    ttl = max(1, min(int(ttl), MAX_ACCESS_TOKEN_TTL))
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "sub": principal.user_id,
        "email": principal.email,
        "sid": principal.session_id,
        "iat": now,
        "exp": now + ttl,
        "jti": uuid.uuid4().hex,
        "rights": list(grant.rights),
    }
    if grant.account_id is not None:
        claims["acct"] = grant.account_id
        claims["role"] = grant.role
    return claims


def new_session_token() -> str:
    return SESSION_TOKEN_PREFIX + secrets.token_urlsafe(SESSION_TOKEN_BYTES)


def hash_session_token(token: str) -> bytes:
    """SHA-256 is enough for a 256-bit random secret (no dictionary to attack)."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2


def throttle_retry_after(failures: int, *, max_failures: int, lockout_seconds: int) -> int | None:
    """Seconds to lock an email out after `failures` consecutive failures, or None.

    The lockout doubles with every further failure past the threshold (capped
    at 1 hour), so a patient attacker gains nothing by waiting it out."""
    if failures < max_failures:
        return None
    return min(lockout_seconds * 2 ** (failures - max_failures), 3600)
