"""Bad access tokens made from a good one, for the tests that check a service
refuses them: claims changed under the old signature, `alg: none`, and HS256
signed with the public key (the algorithm-confusion attack)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _segment(value: dict[str, Any]) -> str:
    return b64url(json.dumps(value).encode())


def tampered(token: str, claims: dict[str, Any]) -> str:
    """`token`'s header and signature around other claims."""
    header, _, sig = token.split(".")
    return f"{header}.{_segment(claims)}.{sig}"


def alg_none(token: str, kid: str) -> str:
    """`token`'s claims, unsigned, under an `alg: none` header."""
    payload = token.split(".")[1]
    return f"{_segment({'alg': 'none', 'typ': 'at+jwt', 'kid': kid})}.{payload}."


def hs256(token: str, kid: str, secret: bytes) -> str:
    """`token`'s claims, HMAC-SHA256-signed with `secret` (say, the public key)."""
    payload = token.split(".")[1]
    head = _segment({"alg": "HS256", "typ": "at+jwt", "kid": kid})
    return f"{head}.{payload}." + b64url(hmac.new(secret, f"{head}.{payload}".encode(), hashlib.sha256).digest())


def public_key_secrets(jwk: dict[str, Any]) -> tuple[bytes, ...]:
    """The ways a confused verifier may take an Ed25519 JWK as an HMAC secret:
    the raw key, the `x` text, the whole JWK."""
    return base64.urlsafe_b64decode(jwk["x"] + "=="), jwk["x"].encode(), json.dumps(jwk).encode()
