"""Routes of the members of an account."""

from __future__ import annotations

from fastapi import APIRouter, Response

from account_service.api.deps import AccountId, Claims, IfMatch, Service, set_etag, token_email
from account_service.api.models import (
    ERROR_RESPONSES,
    AddMemberRequest,
    ChangeMemberRequest,
    MemberView,
    MemberWriteView,
    VersionView,
)
from account_service.domain import AddMember, ChangeMember, RemoveMember
from shared.emails import normalize_email

router = APIRouter(tags=["members"], responses=ERROR_RESPONSES)


@router.get("/accounts/{account_id}/members", response_model=list[MemberView], summary="The members (members only)")
async def list_members(account_id: AccountId, claims: Claims, service: Service, response: Response):
    state = await service.get(account_id, email=token_email(claims))
    set_etag(response, state.version)
    return [MemberView.of(m) for m in sorted(state.members.values(), key=lambda m: m.email)]


@router.post("/accounts/{account_id}/members", status_code=201, response_model=MemberWriteView,
             summary="Add a member by email (admins)")
async def add_member(account_id: AccountId, body: AddMemberRequest, claims: Claims, service: Service,
                     if_match: IfMatch, response: Response):
    command = AddMember(actor=claims.sub, email=body.email, role=body.role, rights=body.rights)
    outcome = await service.handle(account_id, command, actor_email=token_email(claims), if_match=if_match)
    member = outcome.state.members[normalize_email(body.email)]
    set_etag(response, outcome.version)
    return MemberWriteView(**MemberView.of(member).model_dump(), version=outcome.version)


@router.patch("/accounts/{account_id}/members/{email}", response_model=MemberWriteView,
              summary="Change a member's role and/or rights (admins)")
async def change_member(account_id: AccountId, email: str, body: ChangeMemberRequest, claims: Claims,
                        service: Service, if_match: IfMatch, response: Response):
    command = ChangeMember(actor=claims.sub, email=email, role=body.role, rights=body.rights)
    outcome = await service.handle(account_id, command, actor_email=token_email(claims), if_match=if_match)
    member = outcome.state.members[normalize_email(email)]
    set_etag(response, outcome.version)
    return MemberWriteView(**MemberView.of(member).model_dump(), version=outcome.version)


@router.delete("/accounts/{account_id}/members/{email}", response_model=VersionView,
               summary="Remove a member (admins)")
async def remove_member(account_id: AccountId, email: str, claims: Claims, service: Service,
                        if_match: IfMatch, response: Response):
    command = RemoveMember(actor=claims.sub, email=email)
    outcome = await service.handle(account_id, command, actor_email=token_email(claims), if_match=if_match)
    set_etag(response, outcome.version)
    return VersionView(version=outcome.version)
