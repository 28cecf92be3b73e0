"""Dependencies the routes share: the verified token, the account scope, the service."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, Header, Path, Request, Response

from account_service.service import AccountService, parse_account_id, parse_if_match
from shared.auth import AccessClaims
from shared.emails import normalize_email
from shared.errors import AppError, Forbidden
from shared.web import bearer_token


async def verified_claims(request: Request) -> AccessClaims:
    """The claims of a valid, unrevoked access token, or 401 invalid_token."""
    return await request.app.state.guard.check(bearer_token(request))


Claims = Annotated[AccessClaims, Depends(verified_claims)]


def get_service(request: Request) -> AccountService:
    return request.app.state.service


Service = Annotated[AccountService, Depends(get_service)]


def token_email(claims: AccessClaims) -> str | None:
    """The token's email in normal form (None when absent or unusable)."""
    if not isinstance(claims.email, str):
        return None
    try:
        return normalize_email(claims.email)
    except AppError:
        return None


def account_scope(claims: Claims, account_id: Annotated[str, Path(description="The account id")]) -> str:
    """The path's account id, once the token is scoped to it (403 wrong_account otherwise)."""
    if not isinstance(claims.acct, str) or same_id(claims.acct) != same_id(account_id):
        raise Forbidden("this token is for another account: switch to this account first", code="wrong_account")
    return parse_account_id(account_id)


def same_id(raw: str) -> str:
    """Account ids are UUIDs: any spelling of one (upper case, braces, no dashes, urn:uuid:)
    names the same account, as on the identity service. Anything else is compared as given."""
    try:
        return str(uuid.UUID(raw.strip()))
    except ValueError:
        return raw.strip().lower()


AccountId = Annotated[str, Depends(account_scope)]


IF_MATCH_HELP = ('"<version>": only write if the account is at it (412 otherwise). Weak (W/"3") and bare (3) '
                 'forms and lists ("3", "4") are accepted; * is no condition.')


def if_match_version(
    if_match: Annotated[str | None, Header(description=IF_MATCH_HELP)] = None,
) -> frozenset[int] | None:
    return parse_if_match(if_match)


IfMatch = Annotated[frozenset[int] | None, Depends(if_match_version)]


def actor_email(claims: AccessClaims) -> str:
    email = token_email(claims)
    if email is None:
        raise Forbidden("this token carries no usable email claim")
    return email


def set_etag(response: Response, version: int) -> None:
    """Every response about one account names its stream version as the entity tag."""
    response.headers["ETag"] = f'"{version}"'
