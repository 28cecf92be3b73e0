"""Routes of the account resource."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from account_service.api.deps import AccountId, Claims, IfMatch, Service, set_etag, actor_email, token_email
from account_service.api.models import (
    ERROR_RESPONSES,
    AccountView,
    ChangePlanRequest,
    CreateAccountRequest,
    EventPage,
    PlanView,
)
from account_service.domain import ChangePlan

router = APIRouter(tags=["accounts"], responses=ERROR_RESPONSES)


@router.post("/accounts", status_code=201, response_model=AccountView,
             summary="Create a company account; the caller becomes its admin")
async def create_account(body: CreateAccountRequest, claims: Claims, service: Service, response: Response):
    outcome = await service.create_account(
        actor=claims.sub, actor_email=actor_email(claims), name=body.name, country=body.country,
        company_id=body.company_id, plan=body.plan, referral_code=body.referral_code,
    )
    response.headers["Location"] = f"/accounts/{outcome.state.account_id}"
    set_etag(response, outcome.version)
    return AccountView.of(outcome.state)


@router.get("/accounts/{account_id}", response_model=AccountView, summary="The account (members only)")
async def get_account(account_id: AccountId, claims: Claims, service: Service, response: Response):
    state = await service.get(account_id, email=token_email(claims))
    set_etag(response, state.version)
    return AccountView.of(state)


@router.put("/accounts/{account_id}/plan", response_model=PlanView, summary="Change the plan (admins)")
async def change_plan(account_id: AccountId, body: ChangePlanRequest, claims: Claims, service: Service,
                      if_match: IfMatch, response: Response):
    outcome = await service.handle(
        account_id, ChangePlan(actor=claims.sub, plan=body.plan), actor_email=token_email(claims), if_match=if_match
    )
    set_etag(response, outcome.version)
    return PlanView(plan=outcome.state.plan, version=outcome.version)


@router.get("/accounts/{account_id}/events", response_model=EventPage,
            summary="The account's event stream as CloudEvents envelopes (admins): the audit log")
async def list_events(
    account_id: AccountId, claims: Claims, service: Service,
    after: Annotated[int, Query(ge=0, description="Only events with a larger version")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
):
    await service.get(account_id, email=token_email(claims), needed="admin")
    stored = await service.store.read_stream(account_id, after=after, limit=limit + 1)
    page, more = stored[:limit], len(stored) > limit
    return {"events": [e.envelope().model_dump(mode="json") for e in page],
            "next": page[-1].version if more else None}
