"""Verifying access tokens (RFC 9068 JWTs) against the identity service's JWKS.

The rules of RFC 8725: the algorithm comes from an allow-list (asymmetric
only), never from the token alone, and must match the key's own type; `iss`,
`aud` and `exp` are always checked; `typ` must be `at+jwt`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
from jwt import PyJWK

from shared.errors import InvalidToken, Unavailable

ALLOWED_ALGORITHMS: tuple[str, ...] = ("EdDSA", "ES256")
ACCESS_TOKEN_TYPES = ("at+jwt", "application/at+jwt")
REQUIRED_CLAIMS = ["iss", "aud", "sub", "exp", "iat", "jti", "sid"]
LEEWAY_SECONDS = 5


@dataclass(frozen=True, slots=True)
class AccessClaims:
    """What a verified access token says."""

    sub: str
    sid: str
    jti: str
    exp: int
    iat: int
    email: str | None = None
    acct: str | None = None
    role: str | None = None
    rights: tuple[str, ...] = ()
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def user_id(self) -> str:
        return self.sub

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any]) -> AccessClaims:
        rights = claims.get("rights") or ()
        if not isinstance(rights, list | tuple) or not all(isinstance(r, str) for r in rights):
            raise InvalidToken("malformed rights claim")
        for name in ("sub", "sid", "jti"):
            if not isinstance(claims.get(name), str):
                raise InvalidToken(f"malformed {name} claim")
        return cls(
            sub=claims["sub"], sid=claims["sid"], jti=claims["jti"],
            exp=int(claims["exp"]), iat=int(claims["iat"]),
            email=claims.get("email"), acct=claims.get("acct"), role=claims.get("role"),
            rights=tuple(rights), raw=dict(claims),
        )


def decode_access_token(
    token: str,
    keys: Mapping[str, PyJWK],
    *,
    issuer: str,
    audience: str,
    algorithms: tuple[str, ...] = ALLOWED_ALGORITHMS,
) -> AccessClaims:
    """Verify `token` with one of `keys` (by kid). Raises InvalidToken on any doubt."""
    if not isinstance(token, str) or token.count(".") != 2:
        raise InvalidToken("malformed token")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as e:
        raise InvalidToken("malformed token") from e
    alg, kid = header.get("alg"), header.get("kid")
    if header.get("typ") not in ACCESS_TOKEN_TYPES:
        raise InvalidToken("not an access token (typ must be at+jwt)")
    if alg not in algorithms:
        raise InvalidToken("token algorithm not allowed")
    key = keys.get(kid) if isinstance(kid, str) else None
    if key is None:
        raise InvalidToken("unknown signing key")
    if key.algorithm_name != alg:
        raise InvalidToken("token algorithm does not match its key")
    try:
        claims = jwt.decode(
            token, key.key, algorithms=[alg], audience=audience, issuer=issuer,
            leeway=LEEWAY_SECONDS, options={"require": REQUIRED_CLAIMS},
        )
    except jwt.ExpiredSignatureError as e:
        raise InvalidToken("token expired") from e
    except jwt.PyJWTError as e:
        raise InvalidToken(f"invalid token: {e}") from e
    return AccessClaims.from_claims(claims)


def parse_jwks(document: Mapping[str, Any], algorithms: tuple[str, ...] = ALLOWED_ALGORITHMS) -> dict[str, PyJWK]:
    """kid -> key for every usable key of a JWKS document (others are skipped)."""
    keys: dict[str, PyJWK] = {}
    for jwk in document.get("keys", []):
        try:
            key = PyJWK.from_dict(jwk)
        except jwt.PyJWTError:
            continue
        if key.key_id and key.algorithm_name in algorithms and jwk.get("use", "sig") == "sig":
            keys[key.key_id] = key
    return keys


class JwksVerifier:
    """Verifies access tokens with keys fetched from a JWKS URL.

    Keys are cached; an unknown `kid` triggers one refetch (at most every
    `min_refresh_seconds`, so garbage kids cannot make us hammer the issuer).
    """

    def __init__(
        self,
        jwks_url: str,
        *,
        issuer: str,
        audience: str,
        client: httpx.AsyncClient | None = None,
        min_refresh_seconds: float = 10.0,
        algorithms: tuple[str, ...] = ALLOWED_ALGORITHMS,
    ):
        self.jwks_url = jwks_url
        self.issuer = issuer
        self.audience = audience
        self.algorithms = algorithms
        self._client = client or httpx.AsyncClient(timeout=5.0)
        self._owns_client = client is None
        self._keys: dict[str, PyJWK] = {}
        self._fetched_at = float("-inf")
        self._min_refresh = min_refresh_seconds
        self._lock = asyncio.Lock()

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def refresh(self) -> None:
        try:
            resp = await self._client.get(self.jwks_url)
            resp.raise_for_status()
            document = resp.json()
        except (httpx.HTTPError, json.JSONDecodeError, ValueError) as e:
            raise Unavailable(f"cannot fetch the signing keys from {self.jwks_url}") from e
        self._keys = parse_jwks(document, self.algorithms)
        self._fetched_at = time.monotonic()

    async def _ensure_key(self, token: str) -> None:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError:
            return  # decode_access_token reports it
        if not isinstance(kid, str) or kid in self._keys:
            return
        async with self._lock:
            if kid in self._keys or time.monotonic() - self._fetched_at < self._min_refresh:
                return
            try:
                await self.refresh()
            except Unavailable:
                if not self._keys:
                    raise  # nothing can be verified until the issuer answers
                # the keys we hold are current enough: an unknown kid is refused (401)

    async def verify(self, token: str) -> AccessClaims:
        await self._ensure_key(token)
        return decode_access_token(
            token, self._keys, issuer=self.issuer, audience=self.audience, algorithms=self.algorithms
        )


class AccessTokenGuard:
    """What every resource service asks of a bearer token: a valid signature and
    claims (`JwksVerifier`), and a session that has not been logged out
    (`shared.revocations.RevocationList`, optional)."""

    def __init__(self, verifier: JwksVerifier, revocations=None):
        self.verifier = verifier
        self.revocations = revocations

    async def check(self, token: str) -> AccessClaims:
        claims = await self.verifier.verify(token)
        if self.revocations is not None and self.revocations.is_revoked(claims.sid):
            raise InvalidToken("the session of this token has been logged out")
        return claims
