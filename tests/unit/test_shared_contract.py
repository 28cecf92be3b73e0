"""The shared contract: catalogues, email normal form, envelopes, token checks."""

from __future__ import annotations

import json
import time
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt import PyJWK
from jwt.algorithms import OKPAlgorithm

from shared import catalogue
from shared.auth import decode_access_token, parse_jwks
from shared.emails import normalize_email
from shared.errors import InvalidInput, InvalidToken
from shared.events import EVENT_TYPES, MemberAdded, envelope, json_schemas, subject_for, Envelope


def test_default_rights_follow_the_role():
    assert set(catalogue.DEFAULT_RIGHTS["admin"]) == {f"{a}:write" for a in catalogue.AREAS}
    user = set(catalogue.DEFAULT_RIGHTS["user"])
    assert "settings:read" in user and "settings:write" not in user and "quotes:write" in user
    assert set(catalogue.DEFAULT_RIGHTS["viewer"]) == {f"{a}:read" for a in catalogue.AREAS}


@pytest.mark.parametrize("bad", [["quotes:delete"], ["payroll:read"], ["quotes"], [""]])
def test_unknown_rights_are_refused(bad):
    with pytest.raises(InvalidInput):
        catalogue.check_rights(bad)


def test_rights_are_deduplicated_in_catalogue_order():
    assert catalogue.check_rights(["invoices:read", "quotes:write", "invoices:read"]) == (
        "quotes:write", "invoices:read")


def test_plans():
    assert catalogue.PLANS == {"solo": 1, "team": 5, "business": 25, "enterprise": None}
    assert catalogue.DEFAULT_PLAN == "team"
    with pytest.raises(InvalidInput):
        catalogue.check_plan("platinum")


@pytest.mark.parametrize("raw,expected", [
    ("Bob@Example.COM", "bob@example.com"),
    ("  bob@example.com ", "bob@example.com"),
    ("BOB@EXÄMPLE.com", "bob@exämple.com"),
    ("bob@xn--exmple-cua.com", "bob@exämple.com"),
    ("Straße@Example.com", "strasse@example.com"),
])
def test_email_normal_form(raw, expected):
    assert normalize_email(raw) == expected


@pytest.mark.parametrize("bad", ["", "bob", "bob@", "@example.com", "a..b@example.com", "bob@localhost", "x" * 250 + "@e.com"])
def test_malformed_emails_are_refused(bad):
    with pytest.raises(InvalidInput):
        normalize_email(bad)


def test_envelope_round_trip_and_subject():
    event = MemberAdded(account_id="acc1", actor="u1", email="bob@example.com", role="user", rights=("quotes:write",))
    env = envelope(event, streamversion=3)
    again = Envelope.from_json(env.to_json())
    assert again == env and again.payload() == event
    assert again.specversion == "1.0" and again.source == "account-service"
    assert subject_for("accounts", "acc1", "MemberAdded") == "accounts.acc1.MemberAdded"
    assert env.to_json().decode().count('"time":"') == 1


def test_unknown_event_types_are_skipped_not_fatal():
    env = Envelope(id="x", type="SomethingNew", subject="a", time="2026-01-01T00:00:00Z", streamversion=1, data={})
    assert env.payload() is None


def test_every_event_has_a_json_schema():
    schemas = json_schemas()
    assert set(schemas) == set(EVENT_TYPES)
    assert schemas["MemberAdded"]["properties"]["type"]["const"] == "MemberAdded"


def _keypair(kid="k1"):
    private = Ed25519PrivateKey.generate()
    jwk = OKPAlgorithm.to_jwk(private.public_key(), as_dict=True) | {"kid": kid, "alg": "EdDSA", "use": "sig"}
    return private, parse_jwks({"keys": [jwk]})


def _claims(**over):
    now = int(time.time())
    return {"iss": "http://id", "aud": "multicompte", "sub": "u1", "sid": "s1", "jti": str(uuid.uuid4()),
            "iat": now, "exp": now + 300, "acct": "a1", "role": "admin", "rights": ["quotes:write"]} | over


def test_a_good_token_verifies():
    private, keys = _keypair()
    token = jwt.encode(_claims(), private, algorithm="EdDSA", headers={"kid": "k1", "typ": "at+jwt"})
    claims = decode_access_token(token, keys, issuer="http://id", audience="multicompte")
    assert claims.acct == "a1" and claims.rights == ("quotes:write",)


@pytest.mark.parametrize("mutate", ["expired", "wrong_iss", "wrong_aud", "no_typ", "unknown_kid", "none_alg", "hs256", "tampered"])
def test_bad_tokens_are_refused(mutate):
    private, keys = _keypair()
    claims, headers, alg, key = _claims(), {"kid": "k1", "typ": "at+jwt"}, "EdDSA", private
    if mutate == "expired":
        claims["exp"] = int(time.time()) - 60
    elif mutate == "wrong_iss":
        claims["iss"] = "http://evil"
    elif mutate == "wrong_aud":
        claims["aud"] = "other"
    elif mutate == "no_typ":
        headers = {"kid": "k1"}
    elif mutate == "unknown_kid":
        headers["kid"] = "k2"
    if mutate == "none_alg":
        token = jwt.encode(claims, None, algorithm="none", headers=headers)
    elif mutate == "hs256":
        public_pem = keys["k1"].key.public_bytes_raw()
        # the classic confusion attack: HMAC keyed with the public key's bytes
        token = jwt.api_jws.PyJWS().encode(json.dumps(claims).encode(), public_pem, algorithm="HS256", headers=headers)
    else:
        token = jwt.encode(claims, key, algorithm=alg, headers=headers)
    if mutate == "tampered":
        head, body, sig = token.split(".")
        token = f"{head}.{body[:-2]}AA.{sig}"
    with pytest.raises(InvalidToken):
        decode_access_token(token, keys, issuer="http://id", audience="multicompte")


async def test_unknown_kid_is_401_not_503_when_the_issuer_is_away_but_keys_are_cached():
    import httpx

    from shared.auth import JwksVerifier
    from shared.errors import Unavailable

    private, keys = _keypair()
    jwk = keys["k1"]
    document = {"keys": [jwk._jwk_data]}
    up = {"yes": True}

    def handler(request):
        return httpx.Response(200, json=document) if up["yes"] else httpx.Response(503)

    verifier = JwksVerifier("http://id/.well-known/jwks.json", issuer="http://id", audience="multicompte",
                            client=httpx.AsyncClient(transport=httpx.MockTransport(handler)), min_refresh_seconds=0)
    good = jwt.encode(_claims(), private, algorithm="EdDSA", headers={"kid": "k1", "typ": "at+jwt"})
    assert (await verifier.verify(good)).sub == "u1"
    up["yes"] = False
    other, _ = _keypair("k9")
    forged = jwt.encode(_claims(), other, algorithm="EdDSA", headers={"kid": "k9", "typ": "at+jwt"})
    with pytest.raises(InvalidToken):
        await verifier.verify(forged)
    cold = JwksVerifier("http://id/.well-known/jwks.json", issuer="http://id", audience="multicompte",
                        client=httpx.AsyncClient(transport=httpx.MockTransport(handler)))
    with pytest.raises(Unavailable):
        await cold.verify(good)


def test_identity_port_alone_tells_every_service_where_identity_is(monkeypatch):
    from account_service.settings import Settings as AccountSettings
    from licensing_consumer.settings import Settings as LicensingSettings

    monkeypatch.setenv("IDENTITY_PORT", "9101")
    monkeypatch.delenv("IDENTITY_URL", raising=False)
    for settings in (AccountSettings(), LicensingSettings()):
        assert settings.jwks_url == "http://127.0.0.1:9101/.well-known/jwks.json"
    monkeypatch.setenv("IDENTITY_URL", "https://id.example.com/")
    assert AccountSettings().issuer == "https://id.example.com"
