"""The read API: a licence and its history, for that account's admins only."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict

from licensing_consumer.domain import Licence
from licensing_consumer.store import LicenceReader
from shared.auth import AccessTokenGuard
from shared.emails import normalize_email
from shared.errors import Forbidden, InvalidInput, NotFound
from shared.web import bearer_token

router = APIRouter(tags=["licences"])

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing, malformed, forged, expired or revoked token (`invalid_token`)"},
    403: {"description": "`wrong_account`: the token's `acct` is another account; "
                         "`forbidden`: the person is not an admin of the account"},
    404: {"description": "no licence for this account (`not_found`)"},
}


class LicenceOut(BaseModel):
    account_id: str
    name: str
    country: str
    company_id: str | None
    plan: str
    seats_included: int | None
    seats_used: int
    referral_credits: int
    referred_by: str | None
    version: int


class HistoryEntryOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    time: datetime
    type: str
    version: int


def canonical_account_id(raw: str) -> str:
    """Account ids are UUIDs: any spelling of one (upper case, braces, no dashes, urn:uuid:)
    names the same account, as on the identity and account services. Anything else is kept
    as given (and names no licence)."""
    try:
        return str(uuid.UUID(raw.strip()))
    except ValueError:
        return raw


async def admin_licence(request: Request, account_id: str) -> Licence:
    """The licence of `account_id`, if the bearer is one of its admins (else 401/403/404)."""
    guard: AccessTokenGuard = request.app.state.guard
    claims = await guard.check(bearer_token(request))
    account_id = canonical_account_id(account_id)
    if not isinstance(claims.acct, str) or canonical_account_id(claims.acct) != account_id:
        raise Forbidden("this token is for another account: switch to this account first", code="wrong_account")
    reader: LicenceReader = request.app.state.reader
    licence = await reader.licence(account_id)
    if licence is None:
        raise NotFound(f"no licence for account {account_id}")
    try:
        email = normalize_email(claims.email or "")
    except InvalidInput:
        email = None
    if not licence.is_admin(email):
        raise Forbidden("only an admin of this account may read its licence")
    return licence


AdminLicence = Annotated[Licence, Depends(admin_licence)]


@router.get("/licences/{account_id}", response_model=LicenceOut, responses=ERRORS,
            summary="The licence of one company account")
async def get_licence(licence: AdminLicence, request: Request) -> dict[str, Any]:
    reader: LicenceReader = request.app.state.reader
    return licence.view(await reader.credits(licence.account_id))


@router.get("/licences/{account_id}/history", response_model=list[HistoryEntryOut], responses=ERRORS,
            summary="The licence-relevant changes of one account, oldest first")
async def get_history(licence: AdminLicence, request: Request) -> list[dict[str, Any]]:
    reader: LicenceReader = request.app.state.reader
    return await reader.history(licence.account_id)
