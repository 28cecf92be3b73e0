"""The licensing tests' access tokens: `tests.support.tokens.TestIssuer` (one
key, its JWKS, a real `JwksVerifier` fed in memory) under the licensing tests'
issuer and audience, with the call they use: `token(email=, acct=, ...)`, an
admin's token unless told."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.support.tokens import TestIssuer

ISSUER = "http://identity.test"
AUDIENCE = "multicompte"


class TokenIssuer(TestIssuer):
    def __init__(self, issuer: str = ISSUER, audience: str = AUDIENCE, kid: str = "test-key"):
        super().__init__(issuer=issuer, audience=audience, kid=kid)

    def token(self, *, email: str | None, acct: str | None, sub: str | None = None, sid: str | None = None,
              role: str = "admin", ttl: int = 300, key: Ed25519PrivateKey | None = None, **extra) -> str:
        return self.mint(sub=sub, email=email, acct=acct, role=role, rights=(), sid=sid, ttl=ttl, key=key,
                         extra=extra)
