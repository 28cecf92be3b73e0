"""tests/support/tokens.py, the test token issuer other suites reuse, is what it says."""

from __future__ import annotations

import time

import pytest

from shared.auth import decode_access_token, parse_jwks
from shared.errors import InvalidToken
from shared.settings import CommonSettings
from tests.support.tokens import TestIssuer, bearer


def test_minted_tokens_verify_with_the_jwks_and_the_default_settings():
    issuer = TestIssuer()
    settings = CommonSettings(_env_file=None)
    assert issuer.issuer == CommonSettings.model_fields["identity_url"].default.rstrip("/")
    token = issuer.mint(sub="u1", email="ann@example.com", acct="a1", role="admin", rights=["quotes:read"], sid="s1")
    claims = decode_access_token(token, parse_jwks(issuer.jwks()), issuer=issuer.issuer, audience=settings.token_audience)
    assert (claims.sub, claims.email, claims.acct, claims.role, claims.rights, claims.sid) == (
        "u1", "ann@example.com", "a1", "admin", ("quotes:read",), "s1")
    assert claims.exp - claims.iat == 300
    assert bearer(token) == {"Authorization": f"Bearer {token}"}


def test_absent_claims_are_left_out():
    issuer = TestIssuer()
    claims = decode_access_token(issuer.mint(), parse_jwks(issuer.jwks()), issuer=issuer.issuer,
                                 audience=issuer.audience)
    assert claims.acct is None and claims.email is None and claims.rights == ()


@pytest.mark.parametrize("kw", [
    {"exp": int(time.time()) - 600, "iat": int(time.time()) - 900},
    {"typ": "JWT"},
    {"audience": "other"},
    {"issuer": "https://elsewhere.example"},
    {"kid": None},
    {"kid": "unknown"},
    {"drop": ["jti"]},
])
def test_bad_tokens_for_negative_tests_are_refused(kw):
    issuer = TestIssuer()
    with pytest.raises(InvalidToken):
        decode_access_token(issuer.mint(**kw), parse_jwks(issuer.jwks()), issuer=issuer.issuer,
                            audience=issuer.audience)
    with pytest.raises(InvalidToken):
        decode_access_token(issuer.forge(), parse_jwks(issuer.jwks()), issuer=issuer.issuer,
                            audience=issuer.audience)


async def test_the_in_memory_verifier_fetches_the_jwks_and_follows_rotation():
    issuer = TestIssuer(issuer="http://identity.test/")
    verifier = issuer.verifier()
    try:
        assert (await verifier.verify(issuer.mint(sub="u1"))).sub == "u1"
        issuer.rotate()
        assert (await verifier.verify(issuer.mint(sub="u2"))).sub == "u2"
        assert issuer.requests == 2
    finally:
        await verifier.aclose()
        await verifier._client.aclose()
