"""The identity service's use cases: register, log in, authenticate, log out,
the user menu, and switching (one decision path for the switch route and the
RFC 8693 token exchange)."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import jwt

from identity_service import domain, passwords
from identity_service.domain import Grant, NotAMember, Principal
from identity_service.keys import KeyRing
from identity_service.projector import VersionWaiters
from identity_service.settings import Settings
from identity_service.store import Store
from shared.auth import LEEWAY_SECONDS, AccessClaims, decode_access_token
from shared.emails import normalize_email
from shared.errors import InvalidToken, TooManyRequests, Unauthenticated, Unavailable

log = logging.getLogger(__name__)

T = TypeVar("T")


class InvalidCredentials(Unauthenticated):
    code = "invalid_credentials"

    def __init__(self) -> None:
        # a 401 always names its scheme (RFC 9110 §11.6.1); the credentials were not a token
        super().__init__("wrong email or password", headers={"WWW-Authenticate": 'Bearer realm="multicompte"'})


@dataclass(frozen=True, slots=True)
class Caller:
    principal: Principal
    via: str  # "session" or "access"
    claims: AccessClaims | None = None


@dataclass(frozen=True, slots=True)
class Issued:
    principal: Principal
    grant: Grant
    access_token: str
    expires_in: int


class IdentityService:
    def __init__(self, settings: Settings, store: Store, keyring: KeyRing, waiters: VersionWaiters,
                 revocations: Any = None):
        self.settings = settings
        self.store = store
        self.keyring = keyring
        self.waiters = waiters
        self.revocations = revocations
        self.token_ttl = max(1, min(settings.identity_access_token_ttl_seconds, domain.MAX_ACCESS_TOKEN_TTL))
        self._background: set[asyncio.Task] = set()

    # -- people -------------------------------------------------------------------------

    async def register(self, email: str, password: str, display_name: str | None) -> dict[str, str]:
        email = normalize_email(email)
        domain.check_password(password)
        password_hash = await passwords.hash_password(password)
        user_id = await self.store.create_user(email, display_name, password_hash)
        return {"user_id": user_id, "email": email}

    # -- tokens ----------------------------------------------------------------------------

    def issue(self, principal: Principal, grant: Grant) -> Issued:
        claims = domain.access_claims(principal, grant, issuer=self.settings.issuer,
                                      audience=self.settings.token_audience, now=int(time.time()),
                                      ttl=self.token_ttl)
        return Issued(principal, grant, self.keyring.sign(claims), self.token_ttl)

    async def verify_access_token(self, token: str) -> AccessClaims:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError as e:
            raise InvalidToken("malformed token") from e
        await self.keyring.maybe_refresh(kid if isinstance(kid, str) else None)
        return decode_access_token(token, self.keyring.verification_keys, issuer=self.settings.issuer,
                                   audience=self.settings.token_audience)

    async def authenticate(self, token: str) -> Caller:
        """A session token or an access token whose session is still live."""
        if domain.looks_like_jwt(token):
            claims = await self.verify_access_token(token)
            principal = await self.store.session_by_id(claims.sid)
            if principal is None or principal.user_id != claims.sub:
                raise InvalidToken("the session of this token has ended")
            principal = Principal(principal.user_id, principal.email, principal.session_id, claims.acct)
            return Caller(principal, "access", claims)
        principal = await self.store.session_by_hash(domain.hash_session_token(token))
        if principal is None:
            raise InvalidToken("unknown, expired or logged-out session")
        return Caller(principal, "session")

    # -- sessions --------------------------------------------------------------------------

    async def login(self, email: str, password: str, account_id: str | None) -> dict[str, Any]:
        email = normalize_email(email)
        s = self.settings
        locked = await self.store.locked_for(email)
        if locked:
            raise TooManyRequests(f"too many failed logins for this email; retry in {locked} s",
                                  headers={"Retry-After": str(locked)})
        user = await self.store.user_by_email(email)
        ok, rehash = await passwords.verify_password(user[1] if user else None, password)
        if not ok:
            retry = await self.store.record_failure(email, max_failures=s.identity_login_max_failures,
                                                    window=s.identity_login_failure_window_seconds,
                                                    lockout=s.identity_login_lockout_seconds)
            if retry is not None:
                raise TooManyRequests(f"too many failed logins for this email; retry in {retry} s",
                                      headers={"Retry-After": str(retry)})
            raise InvalidCredentials()
        user_id, _, last_used = user
        await self.store.clear_failures(email)
        if rehash:
            await self.store.set_password_hash(user_id, await passwords.hash_password(password))
        accounts = domain.menu(await self.store.memberships_of(email))
        try:
            grant = domain.landing(accounts, requested=account_id, last_used=last_used)
        except NotAMember:
            # just added to that account? give the read model a moment (see grant_for)
            target = domain.canonical_account_id(account_id)

            async def attempt() -> list[domain.Membership] | None:
                found = domain.menu(await self.store.memberships_of(email))
                return found if any(m.account_id == target for m in found) else None

            if not domain.is_account_id(target) or (found := await self.within_grace(target, attempt)) is None:
                raise
            accounts = found
            grant = domain.landing(accounts, requested=target, last_used=last_used)
        token = domain.new_session_token()
        expires_at = datetime.now(UTC) + timedelta(seconds=s.identity_session_ttl_seconds)
        session_id = await self.store.create_session(user_id, domain.hash_session_token(token), expires_at,
                                                     grant.account_id)
        principal = Principal(user_id, email, session_id, grant.account_id)
        issued = self.issue(principal, grant)
        return {
            "session_token": token,
            "user_id": user_id,
            "expires_at": expires_at.isoformat().replace("+00:00", "Z"),
            "accounts": [m.as_menu_item() for m in accounts],
            "active_account_id": grant.account_id,
            "access_token": issued.access_token,
            "token_type": "Bearer",
            "expires_in": issued.expires_in,
        }

    async def logout(self, caller: Caller) -> None:
        sid = caller.principal.session_id
        await self.store.revoke_session(sid)
        if self.revocations is not None:
            until = time.time() + self.token_ttl + LEEWAY_SECONDS + 5
            try:
                await asyncio.wait_for(self.revocations.revoke(sid, until), 3.0)
            except Exception as e:  # noqa: BLE001 - NATS away: keep trying in the background
                log.warning("could not publish the revocation of session %s yet (%s); retrying", sid, e)
                task = asyncio.create_task(self._publish_revocation(sid, until))
                self._background.add(task)
                task.add_done_callback(self._background.discard)

    async def _publish_revocation(self, sid: str, until: float) -> None:
        while time.time() < until:
            try:
                await asyncio.wait_for(self.revocations.revoke(sid, until), 5.0)
                return
            except Exception:  # noqa: BLE001
                await asyncio.sleep(1.0)

    # -- the user menu -------------------------------------------------------------------------

    async def accounts(self, principal: Principal) -> list[dict[str, Any]]:
        return [m.as_menu_item() for m in domain.menu(await self.store.memberships_of(principal.email))]

    async def me(self, principal: Principal) -> dict[str, Any]:
        profile = await self.store.user_profile(principal.user_id)
        return {
            "user_id": principal.user_id,
            "email": principal.email,
            "display_name": profile[1] if profile else None,
            "active_account_id": principal.active_account_id,
            "accounts": await self.accounts(principal),
        }

    # -- switching: one decision for the switch route and the token exchange --------------------

    async def grant_for(
        self,
        account_id: str,
        *,
        session_token: str | None = None,
        session_id: str | None = None,
        min_version: int | None = None,
        record: bool = True,
    ) -> Issued:
        """A token for `account_id` if the session's person is a member of it in the read model.

        Raises InvalidToken (session not live), NotAMember, or Unavailable when
        `min_version` is not reached within the bound."""
        account_id = domain.canonical_account_id(account_id)
        key = {"token_hash": domain.hash_session_token(session_token)} if session_token is not None \
            else {"session_id": session_id}
        ctx = await self.store.switch_context(account_id, min_version=min_version or 0, record=record, **key)
        if ctx is None:
            raise InvalidToken("unknown, expired or logged-out session")
        if min_version is not None and ctx[3] < min_version:
            await self.wait_for_version(account_id, min_version)
            ctx = await self.store.switch_context(account_id, min_version=min_version, record=record, **key)
            if ctx is None:
                raise InvalidToken("unknown, expired or logged-out session")
        if ctx[2] is None and min_version is None and domain.is_account_id(account_id):
            # The read model says no, but the client gave no version to wait for: it may have
            # just created the account, or been added by someone else (who alone knows the
            # version). Wait, boundedly, for that account's next events before refusing.
            async def attempt():
                again = await self.store.switch_context(account_id, min_version=0, record=record, **key)
                return ("ok", again) if again is None or again[2] is not None else None

            settled = await self.within_grace(account_id, attempt)
            if settled is not None:
                ctx = settled[1]
                if ctx is None:
                    raise InvalidToken("unknown, expired or logged-out session")
        principal, _, membership, _, _ = ctx
        # the decision; the statement above recorded the switch only in the case it grants
        grant = domain.decide(account_id, membership)
        return self.issue(principal, grant)

    async def within_grace(self, account_id: str, attempt: Callable[[], Awaitable[T | None]]) -> T | None:
        """Re-run `attempt` each time the read model applies an event of `account_id`, until
        it returns a value or `identity_switch_grace_seconds` have passed (then None)."""
        grace = self.settings.identity_switch_grace_seconds
        if grace <= 0:
            return None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while True:
            # registered before the attempt, so an event applied meanwhile still wakes us
            fut = self.waiters.register(account_id, await self.store.applied_version(account_id) + 1)
            try:
                result = await attempt()
                if result is not None:
                    return result
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return None
                try:  # woken by the projector (or NOTIFY); re-checks now and then as a safety net
                    await asyncio.wait_for(asyncio.shield(fut), min(remaining, 1.0))
                except TimeoutError:
                    pass
            finally:
                self.waiters.discard(account_id, fut)

    async def wait_for_version(self, account_id: str, version: int) -> None:
        """Until the read model has applied `account_id` up to `version`, at most
        `identity_switch_wait_seconds`. Woken by this process's projector or by NOTIFY from
        another replica; re-checks the read model at most once a second as a safety net."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.identity_switch_wait_seconds
        while True:
            fut = self.waiters.register(account_id, version)
            try:
                if await self.store.applied_version(account_id) >= version:
                    return
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise Unavailable(
                        f"account {account_id} is not yet up to version {version} here; retry shortly",
                        code="not_yet_consistent", headers={"Retry-After": "1"})
                try:
                    await asyncio.wait_for(asyncio.shield(fut), min(remaining, 1.0))
                except TimeoutError:
                    pass
            finally:
                self.waiters.discard(account_id, fut)
