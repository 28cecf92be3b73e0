"""HTTP routes: parse, call the service, map errors. No rules here."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt

from identity_service import domain
from identity_service.domain import NotAMember
from identity_service.service import Caller, IdentityService
from shared.errors import AppError, InvalidToken
from shared.web import bearer_token

GRANT_TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
TOKEN_TYPE_ACCESS = "urn:ietf:params:oauth:token-type:access_token"
TOKEN_TYPE_JWT = "urn:ietf:params:oauth:token-type:jwt"

router = APIRouter()


def service(request: Request) -> IdentityService:
    return request.app.state.identity


Service = Annotated[IdentityService, Depends(service)]


async def caller(request: Request, svc: Service) -> Caller:
    return await svc.authenticate(bearer_token(request))


AnyCaller = Annotated[Caller, Depends(caller)]


def _printable(value: str) -> str:
    if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 or 0xD800 <= ord(c) <= 0xDFFF for c in value):
        raise ValueError("control characters and lone surrogates are not allowed")
    return value


# text that may reach the database: no control characters (PostgreSQL refuses NUL), and
# no lone surrogate (a JSON "\ud800" escape: not encodable in UTF-8, so not storable)
Text = Annotated[str, AfterValidator(_printable)]


class RegisterIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    email: Text = Field(max_length=320)
    password: str = Field(min_length=domain.MIN_PASSWORD_LENGTH, max_length=domain.MAX_PASSWORD_LENGTH)
    display_name: Text | None = Field(None, max_length=200)


class UserOut(BaseModel):
    user_id: str
    email: str


class LoginIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    email: Text = Field(max_length=320)
    password: str = Field(max_length=domain.MAX_PASSWORD_LENGTH)
    account_id: Text | None = Field(None, max_length=200)


class SwitchIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    account_id: Text = Field(min_length=1, max_length=200)
    # a JSON integer: true, "3" or 1.0 are not versions (the fast path agrees)
    min_version: StrictInt | None = Field(None, ge=0, le=2**31 - 1)


class MenuItem(BaseModel):
    account_id: str
    name: str
    country: str
    role: str
    rights: list[str]


class SessionOut(BaseModel):
    session_token: str = Field(description="Opaque; send it as `Authorization: Bearer` to switch and log out.")
    user_id: str
    expires_at: str = Field(description="RFC 3339, UTC")
    accounts: list[MenuItem]
    active_account_id: str | None
    access_token: str = Field(description="JWT (RFC 9068) for `active_account_id`, no `acct` when null")
    token_type: str = "Bearer"
    expires_in: int


class MeOut(BaseModel):
    user_id: str
    email: str
    display_name: str | None
    active_account_id: str | None
    accounts: list[MenuItem]


class SwitchedAccount(BaseModel):
    account_id: str
    name: str
    role: str
    rights: list[str]


class SwitchOut(BaseModel):
    access_token: str
    token_type: str = "Bearer"
    expires_in: int
    account: SwitchedAccount


class ErrorBody(BaseModel):
    error: str = Field(description="Machine code, e.g. invalid_token, not_a_member, too_many_attempts.")
    detail: str | list = Field(description="A human sentence (validation errors: a list).")


def _errors(**codes: str) -> dict[int | str, dict]:
    return {int(status[1:]): {"model": ErrorBody, "description": text} for status, text in codes.items()}


_INVALID_TOKEN = "invalid_token: missing, malformed, expired or revoked token (with WWW-Authenticate: Bearer)"
_VALIDATION = "validation_error"

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


@router.post("/users", status_code=201, response_model=UserOut, tags=["people"], summary="Register",
             responses=_errors(e409="email_taken", e422=_VALIDATION, e413="payload_too_large"))
async def register(body: RegisterIn, svc: Service) -> dict[str, str]:
    name = body.display_name.strip() if body.display_name else None
    return await svc.register(body.email, body.password, name or None)


@router.post("/sessions", status_code=201, tags=["sessions"], summary="Log in",
             responses={201: {"model": SessionOut, "description": "Logged in"}, **_errors(
                 e401="invalid_credentials", e403="not_a_member (account_id given)", e422=_VALIDATION,
                 e429="too_many_attempts (with Retry-After)")})
async def login(body: LoginIn, svc: Service) -> JSONResponse:
    out = await svc.login(body.email, body.password, body.account_id)
    return JSONResponse(out, status_code=201, headers=NO_STORE)


@router.delete("/sessions/current", status_code=204, tags=["sessions"], summary="Log out",
               responses=_errors(e401=_INVALID_TOKEN))
async def logout(who: AnyCaller, svc: Service) -> Response:
    await svc.logout(who)
    return Response(status_code=204)


@router.get("/me", tags=["people"], summary="Who am I, and my accounts",
            responses={200: {"model": MeOut, "description": "The caller"}, **_errors(e401=_INVALID_TOKEN)})
async def me(who: AnyCaller, svc: Service) -> dict[str, Any]:
    return await svc.me(who.principal)


@router.get("/me/accounts", tags=["people"], summary="The user menu: my accounts, by name",
            responses={200: {"model": list[MenuItem], "description": "Sorted by name"},
                       **_errors(e401=_INVALID_TOKEN)})
async def my_accounts(who: AnyCaller, svc: Service) -> list[dict[str, Any]]:
    return await svc.accounts(who.principal)


@router.post("/sessions/current/switch", tags=["sessions"], summary="Switch to another account",
             responses={200: {"model": SwitchOut, "description": "A token for the account"}, **_errors(
                 e401=_INVALID_TOKEN + "; an access token is not a session token", e403="not_a_member",
                 e422=_VALIDATION, e503="not_yet_consistent: min_version not reached in time (Retry-After)")})
async def switch(body: SwitchIn, request: Request, svc: Service) -> JSONResponse:
    token = bearer_token(request)
    if domain.looks_like_jwt(token):
        raise InvalidToken("switching needs the session token, not an access token")
    issued = await svc.grant_for(body.account_id, session_token=token, min_version=body.min_version)
    g = issued.grant
    return JSONResponse({
        "access_token": issued.access_token, "token_type": "Bearer", "expires_in": issued.expires_in,
        "account": {"account_id": g.account_id, "name": g.name, "role": g.role, "rights": list(g.rights)},
    }, headers=NO_STORE)


def oauth_error(error: str, description: str, status: int = 400, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description, "detail": description},
                        status_code=status, headers={**NO_STORE, **(headers or {})})


FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
NOT_A_FORM = "the body must be application/x-www-form-urlencoded (RFC 6749 section 3.2)"

_OAUTH_ERROR = {"type": "object", "required": ["error", "error_description"], "properties": {
    "error": {"type": "string", "enum": ["invalid_request", "unsupported_grant_type", "invalid_target",
                                         "temporarily_unavailable"]},
    "error_description": {"type": "string"}, "detail": {"type": "string"}}}
TOKEN_ENDPOINT_DOC = {
    "requestBody": {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": {
        "type": "object",
        "required": ["grant_type", "subject_token", "subject_token_type", "audience"],
        "properties": {
            "grant_type": {"type": "string", "enum": [GRANT_TOKEN_EXCHANGE]},
            "subject_token": {"type": "string", "description": "an access token of this issuer"},
            "subject_token_type": {"type": "string", "enum": [TOKEN_TYPE_ACCESS, TOKEN_TYPE_JWT]},
            "audience": {"type": "string", "description": "the account id the new token is for"},
            "requested_token_type": {"type": "string", "enum": [TOKEN_TYPE_ACCESS]},
            "min_version": {"type": "integer", "minimum": 0,
                            "description": "wait until the account's events are applied up to this version"},
        }}}}},
    "responses": {
        "200": {"description": "the new access token", "content": {"application/json": {"schema": {
            "type": "object", "required": ["access_token", "issued_token_type", "token_type", "expires_in"],
            "properties": {"access_token": {"type": "string"},
                           "issued_token_type": {"type": "string", "enum": [TOKEN_TYPE_ACCESS]},
                           "token_type": {"type": "string", "enum": ["Bearer"]},
                           "expires_in": {"type": "integer"}}}}}},
        "400": {"description": "RFC 6749 / RFC 8693 error",
                "content": {"application/json": {"schema": _OAUTH_ERROR}}},
        "503": {"description": "the read model is not yet at min_version",
                "content": {"application/json": {"schema": _OAUTH_ERROR}}},
    },
}


@router.post("/oauth2/token", tags=["oauth"], summary="RFC 8693 token exchange", openapi_extra=TOKEN_ENDPOINT_DOC)
async def token_exchange(request: Request, svc: Service) -> JSONResponse:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in FORM_TYPES:
        return oauth_error("invalid_request", NOT_A_FORM)
    try:
        form = await request.form()
    except Exception:  # noqa: BLE001 - not a form at all
        return oauth_error("invalid_request", NOT_A_FORM)
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    grant_type = fields.get("grant_type")
    if not grant_type:
        return oauth_error("invalid_request", "grant_type is required")
    if grant_type != GRANT_TOKEN_EXCHANGE:
        return oauth_error("unsupported_grant_type", f"only {GRANT_TOKEN_EXCHANGE} is supported")
    subject_token, subject_type = fields.get("subject_token"), fields.get("subject_token_type")
    if not subject_token or not subject_type:
        return oauth_error("invalid_request", "subject_token and subject_token_type are required")
    if subject_type not in (TOKEN_TYPE_ACCESS, TOKEN_TYPE_JWT):
        return oauth_error("invalid_request", f"subject_token_type must be {TOKEN_TYPE_ACCESS}")
    requested = fields.get("requested_token_type")
    if requested and requested != TOKEN_TYPE_ACCESS:
        return oauth_error("invalid_request", f"requested_token_type can only be {TOKEN_TYPE_ACCESS}")
    audience = fields.get("audience") or fields.get("resource")
    if not audience:
        # a missing required parameter (RFC 6749 section 5.2); invalid_target is for an audience we refuse
        return oauth_error("invalid_request", "audience (the account id) is required")
    if len(audience) > 200 or any(ord(c) < 0x20 for c in audience):
        return oauth_error("invalid_target", "audience is not an account id")
    min_version = fields.get("min_version")
    if min_version is not None:
        if not (min_version.isascii() and min_version.isdigit()) or len(min_version) > 9:  # not "²"
            return oauth_error("invalid_request", "min_version must be a non-negative integer")
        min_version = int(min_version)
    try:
        claims = await svc.verify_access_token(subject_token)
        issued = await svc.grant_for(audience, session_id=claims.sid, min_version=min_version, record=False)
        if issued.principal.user_id != claims.sub:
            raise InvalidToken("the subject token does not belong to its session")
    except InvalidToken as e:
        return oauth_error("invalid_request", f"subject_token: {e.detail}")
    except NotAMember as e:
        return oauth_error("invalid_target", e.detail)
    except AppError as e:
        return oauth_error("temporarily_unavailable" if e.status == 503 else "invalid_request",
                           e.detail, e.status if e.status == 503 else 400, e.headers)
    return JSONResponse({
        "access_token": issued.access_token,
        "issued_token_type": TOKEN_TYPE_ACCESS,
        "token_type": "Bearer",
        "expires_in": issued.expires_in,
    }, headers=NO_STORE)


@router.get("/.well-known/jwks.json", tags=["discovery"], summary="Public keys of the access tokens")
async def jwks(svc: Service) -> JSONResponse:
    await svc.keyring.maybe_refresh()
    return JSONResponse(svc.keyring.jwks, headers={"Cache-Control": "public, max-age=60"})


@router.get("/.well-known/openid-configuration", tags=["discovery"], summary="Discovery document")
async def discovery(svc: Service) -> dict[str, Any]:
    issuer = svc.settings.issuer
    return {
        "issuer": issuer,
        "jwks_uri": f"{issuer}/.well-known/jwks.json",
        "token_endpoint": f"{issuer}/oauth2/token",
        "grant_types_supported": [GRANT_TOKEN_EXCHANGE],
        "token_endpoint_auth_methods_supported": ["none"],
        "id_token_signing_alg_values_supported": ["EdDSA"],
        "access_token_signing_alg_values_supported": ["EdDSA"],
        "subject_types_supported": ["public"],
        "response_types_supported": [],
        "scopes_supported": [],
    }


@router.get("/ping", tags=["ops"], summary="A trivial endpoint (the benchmark's baseline)")
async def ping() -> Response:
    return Response(b'{"ok":true}', media_type="application/json")
