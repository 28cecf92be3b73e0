"""The identity domain, pure: landing rule, the switching decision, token claims,
session tokens, throttling, passwords, signing, and refused tokens."""

from __future__ import annotations

import base64
import hashlib
import json
import time

import pytest
from argon2 import PasswordHasher

from identity_service import domain, keys, passwords
from identity_service.domain import Grant, Membership, NotAMember, Principal
from shared.auth import decode_access_token, parse_jwks
from shared.emails import normalize_email
from shared.errors import InvalidInput, InvalidToken
from tests.support import bad_tokens

ALPHA = Membership("a1", "alpha BTP", "FR", "admin", ("settings:write",))
ZETA = Membership("z1", "Zeta SARL", "FR", "user", ("quotes:write",))
BETA = Membership("b1", "Beta", "BE", "viewer", ("quotes:read",))
ME = Principal("u1", "bob@example.com", "s1")


def test_emails_are_one_person_whatever_the_case():
    assert normalize_email(" Bob@Example.COM ") == normalize_email("bob@example.com") == "bob@example.com"
    with pytest.raises(InvalidInput):
        normalize_email("bob@")


def test_menu_is_sorted_by_name_case_insensitively():
    assert [m.name for m in domain.menu([ZETA, ALPHA, BETA])] == ["alpha BTP", "Beta", "Zeta SARL"]


def test_menu_sorts_accented_names_where_a_reader_looks_for_them():
    names = ["Zinc Couverture", "Éclair Élec", "ecole BTP", "Bâti Plus", "Eclair Elec", "Œuvre SAS", "Oasis"]
    menu = domain.menu([Membership(f"id{i}", n, "FR", "user", ()) for i, n in enumerate(names)])
    assert [m.name for m in menu] == ["Bâti Plus", "Eclair Elec", "Éclair Élec", "ecole BTP", "Oasis",
                                      "Œuvre SAS", "Zinc Couverture"]


@pytest.mark.parametrize("requested,last,expected", [
    ("z1", "a1", "z1"),      # the account asked for wins
    (None, "z1", "z1"),      # else the last used
    (None, "gone", "a1"),    # a last used account we left: first by name
    (None, None, "a1"),      # else the first by name
])
def test_landing_rule(requested, last, expected):
    grant = domain.landing([ZETA, BETA, ALPHA], requested=requested, last_used=last)
    assert grant.account_id == expected


def test_landing_without_accounts_and_on_a_foreign_account():
    assert domain.landing([], requested=None, last_used="x") == domain.NO_ACCOUNT
    with pytest.raises(NotAMember):
        domain.landing([ALPHA], requested="z1", last_used=None)


def test_decision_grants_exactly_what_the_read_model_holds():
    grant = domain.decide("z1", ZETA)
    assert grant == Grant("z1", "Zeta SARL", "user", ("quotes:write",))
    with pytest.raises(NotAMember) as e:
        domain.decide("z1", None)
    assert e.value.status == 403 and e.value.code == "not_a_member"
    with pytest.raises(NotAMember):
        domain.decide("z1", ALPHA)  # a membership of another account proves nothing


def test_access_claims():
    c = domain.access_claims(ME, domain.decide("z1", ZETA), issuer="http://id", audience="multicompte", now=1000)
    assert c["iss"] == "http://id" and c["aud"] == "multicompte" and c["sub"] == "u1"
    assert c["email"] == "bob@example.com" and c["sid"] == "s1" and c["acct"] == "z1"
    assert c["role"] == "user" and c["rights"] == ["quotes:write"]
    assert c["iat"] == 1000 and c["exp"] == 1300 and len(c["jti"]) >= 16
    none = domain.access_claims(ME, domain.NO_ACCOUNT, issuer="i", audience="a", now=0, ttl=3600)
    assert "acct" not in none and "role" not in none and none["exp"] == 300  # never more than 300 s
    other = domain.access_claims(ME, domain.NO_ACCOUNT, issuer="i", audience="a", now=0)
    assert other["jti"] != none["jti"]


def test_session_tokens_are_high_entropy_and_stored_as_hashes():
    tokens = {domain.new_session_token() for _ in range(100)}
    assert len(tokens) == 100
    token = tokens.pop()
    assert len(base64.urlsafe_b64decode(token.removeprefix("mcs_") + "=")) * 8 >= 256
    assert not domain.looks_like_jwt(token)
    assert domain.hash_session_token(token) == hashlib.sha256(token.encode()).digest()


def test_throttle_lockout_grows():
    kw = {"max_failures": 5, "lockout_seconds": 60}
    assert domain.throttle_retry_after(4, **kw) is None
    assert domain.throttle_retry_after(5, **kw) == 60
    assert domain.throttle_retry_after(6, **kw) == 120
    assert domain.throttle_retry_after(50, **kw) == 3600


def test_password_rules():
    with pytest.raises(InvalidInput):
        domain.check_password("short")
    assert domain.check_password("long enough") == "long enough"


async def test_passwords_are_argon2id_at_owasp_parameters():
    stored = await passwords.hash_password("correct horse")
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert await passwords.verify_password(stored, "correct horse") == (True, False)
    assert (await passwords.verify_password(stored, "wrong horse"))[0] is False
    assert (await passwords.verify_password(None, "correct horse"))[0] is False
    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash("correct horse")
    assert await passwords.verify_password(weak, "correct horse") == (True, True)  # rehash on login


@pytest.fixture(scope="module")
def key():
    kid, pem, jwk = keys.new_key()
    return keys.make_signer(kid, pem), jwk


def test_signed_tokens_verify_with_the_shared_verifier(key):
    signer, jwk = key
    claims = domain.access_claims(ME, domain.decide("z1", ZETA), issuer="http://id", audience="mc",
                                  now=int(time.time()))
    token = signer.sign(claims)
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header == {"alg": "EdDSA", "typ": "at+jwt", "kid": signer.kid}
    out = decode_access_token(token, parse_jwks({"keys": [jwk]}), issuer="http://id", audience="mc")
    assert out.acct == "z1" and out.role == "user" and out.rights == ("quotes:write",) and out.sid == "s1"
    assert "d" not in jwk


def test_bad_tokens_are_refused(key):
    signer, jwk = key
    ring = parse_jwks({"keys": [jwk]})
    now = int(time.time())
    claims = domain.access_claims(ME, domain.decide("z1", ZETA), issuer="http://id", audience="mc", now=now)
    good = signer.sign(claims)
    h, p, s = good.split(".")
    kid2, pem2, _ = keys.new_key()
    forged = keys.make_signer(signer.kid, pem2).sign(claims)
    tampered = bad_tokens.tampered(good, {**claims, "role": "admin"})
    none = bad_tokens.alg_none(good, signer.kid)
    hs256 = bad_tokens.hs256(good, signer.kid, base64.urlsafe_b64decode(jwk["x"] + "=="))
    expired = signer.sign({**claims, "iat": now - 900, "exp": now - 600})
    untyped = f"{bad_tokens.b64url(json.dumps({'alg': 'EdDSA', 'kid': signer.kid}).encode())}.{p}.{s}"
    for bad in (forged, tampered, none, hs256, expired, untyped, "", "x.y.z"):
        with pytest.raises(InvalidToken):
            decode_access_token(bad, ring, issuer="http://id", audience="mc")
    with pytest.raises(InvalidToken):
        decode_access_token(good, ring, issuer="http://other", audience="mc")
    with pytest.raises(InvalidToken):
        decode_access_token(good, ring, issuer="http://id", audience="other")


def test_the_switch_fast_path_only_takes_well_formed_requests():
    from identity_service.fastpath import parse

    ok = [(b"authorization", b"Bearer mcs_abc"), (b"content-type", b"application/json; charset=utf-8")]
    assert parse(ok, b'{"account_id": "a1", "extra": 1}') == ("mcs_abc", "a1", None)
    assert parse(ok, b'{"account_id": "a1", "min_version": 3}') == ("mcs_abc", "a1", 3)
    # everything else goes to the FastAPI route, which answers with the usual errors
    for body in (b"", b"[]", b"{bad", b'{"account_id": ""}', b'{"account_id": 5}', b'{"min_version": 1}',
                 b'{"account_id": "a1", "min_version": "3"}', b'{"account_id": "a1", "min_version": true}',
                 b'{"account_id": "a1", "min_version": -1}', b'{"account_id": "' + b"x" * 201 + b'"}'):
        assert parse(ok, body) is None, body
    assert parse(ok[1:], b'{"account_id": "a1"}') is None                       # no token
    assert parse(ok[:1], b'{"account_id": "a1"}') is None                       # not JSON
    assert parse([(b"authorization", b"Bearer a.b.c"), ok[1]], b'{"account_id": "a1"}') is None  # access token


def test_account_ids_are_canonical_uuids():
    import uuid
    u = uuid.uuid4()
    for spelling in (str(u).upper(), u.hex, "{%s}" % u):
        assert domain.canonical_account_id(spelling) == str(u)
    assert domain.canonical_account_id("not-a-uuid") == "not-a-uuid"
    m = Membership(str(u), "Acme", "FR", "user", ())
    assert domain.landing([m], requested=str(u).upper(), last_used=None).account_id == str(u)


async def test_version_waiters_wake_exactly_the_satisfied_ones():
    import asyncio

    from identity_service.projector import VersionWaiters

    w = VersionWaiters()
    v2, v3, other = w.register("a", 2), w.register("a", 3), w.register("b", 1)
    w.applied("a", 1)
    assert not v2.done() and not v3.done()
    w.applied("a", 2)
    assert v2.result() == 2 and not v3.done() and not other.done()
    w.discard("a", v3)
    w.applied("a", 5)
    assert not v3.done()  # discarded waiters are forgotten
    w.wake_all()
    assert other.done() and other.result() is None  # a re-check, not a version
    await asyncio.sleep(0)


def test_is_account_id_only_for_canonical_uuids():
    from identity_service.domain import canonical_account_id, is_account_id

    u = "0b6f5d7e-2a4b-4c1d-9e8f-1a2b3c4d5e6f"
    assert is_account_id(u) and is_account_id(canonical_account_id(u.upper()))
    assert not is_account_id(u.upper()) and not is_account_id("zzz") and not is_account_id("")


def test_the_issuer_is_where_the_service_listens_unless_identity_url_says_otherwise(monkeypatch):
    from identity_service.settings import Settings

    monkeypatch.delenv("IDENTITY_URL", raising=False)
    monkeypatch.setenv("IDENTITY_PORT", "18555")
    assert Settings().issuer == "http://127.0.0.1:18555"
    monkeypatch.setenv("HOST", "0.0.0.0")
    assert Settings().issuer == "http://127.0.0.1:18555"
    monkeypatch.setenv("IDENTITY_URL", "https://id.example.com/")
    assert Settings().issuer == "https://id.example.com"
    monkeypatch.delenv("IDENTITY_URL")
    monkeypatch.delenv("IDENTITY_PORT")
    monkeypatch.delenv("HOST")
    assert Settings().issuer == "http://127.0.0.1:8001"
