"""A test access-token issuer, for any service's tests.

An Ed25519 key (EdDSA) with a `kid`, its JWKS document, and `mint(...)` for
RFC 9068 tokens (`typ: at+jwt`) whose `iss`/`aud` default to the values a
service gets from `CommonSettings`' defaults (or the ones you give). A real
`shared.auth.JwksVerifier` fetches the JWKS through an in-memory transport:

    issuer = TestIssuer()                       # or TestIssuer(issuer=settings.issuer)
    app = create_app(settings, verifier=issuer.verifier())
    token = issuer.mint(sub=user_id, email="ann@example.com", acct=account_id, role="admin")

Bad tokens for negative tests: `mint(exp=<past>)`, `mint(typ="JWT")`,
`mint(audience="other")`, `issuer.forge(...)` (signed by a key not in the JWKS).
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm

from shared.auth import JwksVerifier
from shared.settings import CommonSettings

_UNSET: Any = object()

# RFC 8693 token exchange, as the identity service's /oauth2/token takes it
EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS = "urn:ietf:params:oauth:token-type:access_token"


def default_issuer() -> str:
    return CommonSettings.model_fields["identity_url"].default.rstrip("/")


def default_audience() -> str:
    return CommonSettings.model_fields["token_audience"].default


class TestIssuer:
    __test__ = False  # not a pytest test class

    def __init__(self, issuer: str | None = None, audience: str | None = None, kid: str | None = None):
        self.issuer = (issuer or default_issuer()).rstrip("/")
        self.audience = audience or default_audience()
        self.kid = kid or f"test-{uuid.uuid4().hex[:8]}"
        self.key = Ed25519PrivateKey.generate()
        self.requests = 0  # how many times the JWKS was fetched

    @property
    def jwks_url(self) -> str:
        return f"{self.issuer}/.well-known/jwks.json"

    def jwks(self) -> dict[str, Any]:
        public = OKPAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        return {"keys": [public | {"kid": self.kid, "alg": "EdDSA", "use": "sig"}]}

    def mint(
        self,
        sub: str | None = None,
        email: str | None = None,
        acct: str | None = None,
        role: str | None = None,
        rights: Iterable[str] | None = None,
        sid: str | None = None,
        exp: int | None = None,
        *,
        ttl: int = 300,
        iat: int | None = None,
        jti: str | None = None,
        issuer: str | None = None,
        audience: str | None = None,
        typ: str = "at+jwt",
        kid: str | None = _UNSET,
        key: Ed25519PrivateKey | None = None,
        extra: Mapping[str, Any] | None = None,
        drop: Iterable[str] = (),
    ) -> str:
        """A signed access token. `None` claims are left out (e.g. no `acct`);
        `drop` removes required claims for negative tests."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": issuer or self.issuer,
            "aud": audience or self.audience,
            "sub": sub or str(uuid.uuid4()),
            "sid": sid or str(uuid.uuid4()),
            "jti": jti or str(uuid.uuid4()),
            "iat": now if iat is None else iat,
            "exp": now + ttl if exp is None else exp,
        }
        for name, value in (("email", email), ("acct", acct), ("role", role)):
            if value is not None:
                claims[name] = value
        if rights is not None:
            claims["rights"] = list(rights)
        claims.update(extra or {})
        for name in drop:
            claims.pop(name, None)
        headers: dict[str, Any] = {"typ": typ}
        if kid is not None:
            headers["kid"] = self.kid if kid is _UNSET else kid
        return jwt.encode(claims, key or self.key, algorithm="EdDSA", headers=headers)

    def forge(self, **kw: Any) -> str:
        """A token with our kid but signed by another key (a forgery)."""
        return self.mint(key=Ed25519PrivateKey.generate(), **kw)

    def transport(self) -> httpx.MockTransport:
        def handle(request: httpx.Request) -> httpx.Response:
            if request.url.path.endswith("/.well-known/jwks.json"):
                self.requests += 1
                return httpx.Response(200, json=self.jwks())
            return httpx.Response(404, json={"error": "not_found", "detail": "test issuer serves only its JWKS"})

        return httpx.MockTransport(handle)

    def verifier(self, *, issuer: str | None = None, audience: str | None = None) -> JwksVerifier:
        """A real JwksVerifier whose JWKS comes from this issuer, in memory."""
        return JwksVerifier(
            self.jwks_url, issuer=issuer or self.issuer, audience=audience or self.audience,
            client=httpx.AsyncClient(transport=self.transport()), min_refresh_seconds=0.0,
        )

    def rotate(self) -> None:
        """A new key and kid (the verifier refetches the JWKS on the unknown kid)."""
        self.key = Ed25519PrivateKey.generate()
        self.kid = f"test-{uuid.uuid4().hex[:8]}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def claims_of(token: str) -> dict:
    """The claims of a JWT, read without checking anything (to look at what a service issued)."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
