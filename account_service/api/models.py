"""Request and response bodies of the account API (the OpenAPI document's schemas).

Requests only check JSON types here; the domain validates values (422 with a
clear detail) so the rules live in one place."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from account_service.domain import AccountState, Member


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class CreateAccountRequest(_Request):
    name: str = Field(description="1-200 printable characters, trimmed.", examples=["Bâtiments Durand"])
    country: str = Field(description="ISO 3166-1 alpha-2 code, any case.", examples=["FR"])
    company_id: str | None = Field(None, description="For FR a SIRET (14 digits, spaces allowed).")
    plan: str | None = Field(None, description="solo, team (default), business or enterprise.")
    referral_code: str | None = Field(None, description="Another account's referral code (parrainage).")


class ChangePlanRequest(_Request):
    plan: str


class AddMemberRequest(_Request):
    email: str
    role: str = Field(description="admin, user or viewer.")
    rights: list[str] | None = Field(None, description="Defaults from the role when omitted.")


class ChangeMemberRequest(_Request):
    role: str | None = None
    rights: list[str] | None = None


class AccountView(BaseModel):
    account_id: str
    name: str
    country: str
    company_id: str | None
    plan: str
    referral_code: str
    referred_by: str | None
    seats_included: int | None
    seats_used: int
    version: int

    @classmethod
    def of(cls, state: AccountState) -> AccountView:
        return cls(
            account_id=state.account_id, name=state.name, country=state.country, company_id=state.company_id,
            plan=state.plan, referral_code=state.referral_code, referred_by=state.referred_by,
            seats_included=state.seats, seats_used=len(state.members), version=state.version,
        )


class PlanView(BaseModel):
    plan: str
    version: int


class MemberView(BaseModel):
    email: str
    role: str
    rights: list[str]

    @classmethod
    def of(cls, member: Member) -> MemberView:
        return cls(email=member.email, role=member.role, rights=list(member.rights))


class MemberWriteView(MemberView):
    version: int


class VersionView(BaseModel):
    version: int


class EventPage(BaseModel):
    events: list[dict]
    next: int | None = Field(description="Pass as `after` for the next page; null at the end.")


class ErrorBody(BaseModel):
    error: str = Field(description="Machine code, e.g. seat_limit, last_admin, wrong_account.")
    detail: str | list = Field(description="A human sentence (validation errors: a list).")


def _error(description: str) -> dict:
    return {"model": ErrorBody, "description": description}


ERROR_RESPONSES: dict[int | str, dict] = {
    401: _error("invalid_token: missing, malformed, forged, expired or revoked token"),
    403: _error("wrong_account (the token is for another account) or forbidden (role or membership)"),
    404: _error("not_found / not_a_member"),
    409: _error("seat_limit, already_member, last_admin, company_id_taken, concurrent_modification"),
    412: _error("precondition_failed: If-Match names another version"),
    422: _error("validation_error (or unknown_referral_code)"),
}
