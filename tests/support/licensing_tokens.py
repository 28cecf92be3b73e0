"""A minimal access-token issuer for the licensing tests: an Ed25519 key, its
JWKS, signed `at+jwt` tokens, and a real `JwksVerifier` that fetches the JWKS
through an in-memory HTTP transport."""

from __future__ import annotations

import time
import uuid

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm

from shared.auth import JwksVerifier

ISSUER = "http://identity.test"
AUDIENCE = "multicompte"


class TokenIssuer:
    def __init__(self, issuer: str = ISSUER, audience: str = AUDIENCE, kid: str = "test-key"):
        self.issuer, self.audience, self.kid = issuer, audience, kid
        self._key = Ed25519PrivateKey.generate()
        public = OKPAlgorithm.to_jwk(self._key.public_key(), as_dict=True)
        self.jwks = {"keys": [public | {"kid": kid, "alg": "EdDSA", "use": "sig"}]}

    def token(self, *, email: str | None, acct: str | None, sub: str | None = None, sid: str | None = None,
              role: str = "admin", ttl: int = 300, key: Ed25519PrivateKey | None = None, **extra) -> str:
        now = int(time.time())
        claims = {"iss": self.issuer, "aud": self.audience, "sub": sub or str(uuid.uuid4()),
                  "sid": sid or str(uuid.uuid4()), "jti": str(uuid.uuid4()), "iat": now, "exp": now + ttl,
                  "role": role, "rights": []}
        if email is not None:
            claims["email"] = email
        if acct is not None:
            claims["acct"] = acct
        claims |= extra
        return jwt.encode(claims, key or self._key, algorithm="EdDSA", headers={"kid": self.kid, "typ": "at+jwt"})

    def verifier(self) -> JwksVerifier:
        transport = httpx.MockTransport(lambda request: httpx.Response(200, json=self.jwks))
        return JwksVerifier(f"{self.issuer}/.well-known/jwks.json", issuer=self.issuer, audience=self.audience,
                            client=httpx.AsyncClient(transport=transport))
