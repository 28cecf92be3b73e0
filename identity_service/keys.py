"""Signing keys: Ed25519 (JWS `EdDSA`) keys kept in the service's database.

- The first replica to start creates a key, under an advisory lock, so
  replicas starting together agree on one.
- `python -m identity_service rotate-keys` adds a new current key and retires
  the previous ones; retired keys stay in the JWKS for `RETIRED_KEEP` (far
  longer than any access token lives) so tokens they signed still verify.
- Each replica keeps its keys in memory (`KeyRing`) and reloads them
  periodically, and at once when it meets a `kid` it does not know.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt import PyJWK
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from shared.auth import parse_jwks

log = logging.getLogger(__name__)

ALG = "EdDSA"
RETIRED_KEEP = "1 day"
PURGE_AFTER = "7 days"
_LOCK = "identity:signing-keys"

MIGRATION = """
CREATE TABLE IF NOT EXISTS signing_keys (
    kid         text        PRIMARY KEY,
    alg         text        NOT NULL,
    private_pem text        NOT NULL,
    public_jwk  jsonb       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    retired_at  timestamptz
);
"""


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _encryption(passphrase: str | None):
    if passphrase:
        return serialization.BestAvailableEncryption(passphrase.encode())
    return serialization.NoEncryption()


def new_key(passphrase: str | None = None) -> tuple[str, str, dict[str, Any]]:
    """(kid, private PEM, public JWK) of a fresh Ed25519 key; the PEM is encrypted
    with `passphrase` when one is configured (IDENTITY_KEY_PASSPHRASE)."""
    private = Ed25519PrivateKey.generate()
    raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    x = _b64(raw)
    # RFC 7638 thumbprint of the public key as its kid
    thumb = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": x}, separators=(",", ":"), sort_keys=True)
    kid = _b64(hashlib.sha256(thumb.encode()).digest())
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, _encryption(passphrase)
    ).decode()
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": ALG, "use": "sig"}
    return kid, pem, jwk


async def _insert_key(conn: AsyncConnection, passphrase: str | None) -> str:
    kid, pem, jwk = new_key(passphrase)
    await conn.execute(
        "INSERT INTO signing_keys (kid, alg, private_pem, public_jwk) VALUES (%s, %s, %s, %s)",
        (kid, ALG, pem, json.dumps(jwk)),
    )
    return kid


async def ensure_key(pool: AsyncConnectionPool, passphrase: str | None = None) -> str:
    """The current key's kid, creating the first key if there is none (race-safe)."""
    async with pool.connection() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (_LOCK,))
        cur = await conn.execute("SELECT kid FROM signing_keys WHERE retired_at IS NULL "
                                 "ORDER BY created_at DESC LIMIT 1")
        row = await cur.fetchone()
        if row:
            return row[0]
        kid = await _insert_key(conn, passphrase)
        log.info("created signing key %s", kid)
        return kid


async def rotate(pool: AsyncConnectionPool, passphrase: str | None = None) -> str:
    """Add a new current key; the previous ones stay published for a while."""
    async with pool.connection() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (_LOCK,))
        await conn.execute("UPDATE signing_keys SET retired_at = clock_timestamp() WHERE retired_at IS NULL")
        await conn.execute(f"DELETE FROM signing_keys WHERE retired_at < now() - interval '{PURGE_AFTER}'")
        kid = await _insert_key(conn, passphrase)
    log.info("rotated signing keys: %s is now current", kid)
    return kid


@dataclass(frozen=True)
class Signer:
    kid: str
    key: Ed25519PrivateKey
    header: str  # the encoded JOSE header, the same for every token

    def sign(self, claims: dict[str, Any]) -> str:
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        signing_input = f"{self.header}.{payload}"
        return f"{signing_input}.{_b64(self.key.sign(signing_input.encode('ascii')))}"


def make_signer(kid: str, private_pem: str, passphrase: str | None = None) -> Signer:
    encrypted = "ENCRYPTED" in private_pem.split("\n", 1)[0]
    if encrypted and not passphrase:
        raise RuntimeError(f"signing key {kid} is encrypted: set IDENTITY_KEY_PASSPHRASE")
    key = serialization.load_pem_private_key(private_pem.encode(),
                                             password=passphrase.encode() if encrypted else None)
    if not isinstance(key, Ed25519PrivateKey):
        raise RuntimeError(f"signing key {kid} is not an Ed25519 key")
    header = _b64(json.dumps({"alg": ALG, "typ": "at+jwt", "kid": kid}, separators=(",", ":")).encode())
    return Signer(kid, key, header)


class KeyRing:
    """This replica's copy of the keys: the current signer and the published JWKS."""

    def __init__(self, pool: AsyncConnectionPool, *, refresh_seconds: float = 30.0, passphrase: str | None = None):
        self.pool = pool
        self.passphrase = passphrase
        self.refresh_seconds = refresh_seconds
        self.signer: Signer | None = None
        self.jwks: dict[str, Any] = {"keys": []}
        self.verification_keys: dict[str, PyJWK] = {}
        self._loaded_at = float("-inf")

    async def load(self) -> None:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT kid, private_pem, public_jwk, retired_at IS NULL FROM signing_keys "
                f"WHERE retired_at IS NULL OR retired_at > now() - interval '{RETIRED_KEEP}' "
                "ORDER BY created_at DESC"
            )
            rows = await cur.fetchall()
        current = next((r for r in rows if r[3]), None)
        if current is not None and (self.signer is None or self.signer.kid != current[0]):
            self.signer = make_signer(current[0], current[1], self.passphrase)
        self.jwks = {"keys": [r[2] for r in rows]}
        self.verification_keys = parse_jwks(self.jwks)
        self._loaded_at = time.monotonic()

    async def maybe_refresh(self, kid: str | None = None) -> None:
        """Reload when stale, or when asked about a kid we do not know (at most once a second)."""
        age = time.monotonic() - self._loaded_at
        if age > self.refresh_seconds or (kid is not None and kid not in self.verification_keys and age > 1.0):
            await self.load()

    def sign(self, claims: dict[str, Any]) -> str:
        if self.signer is None:
            raise RuntimeError("no signing key loaded")
        return self.signer.sign(claims)
