"""Event evolution: events written by the previous schema version (committed
fixtures) are read by the current models, and a new optional field is additive."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import jsonschema
import pytest

from licensing_consumer.domain import evolve
from shared.events import EVENT_TYPES, AccountCreated, Envelope, MemberAdded, envelope
from shared.schema_export import published_schemas

V1 = Path(__file__).resolve().parents[1] / "fixtures" / "events" / "v1"
V1_FILES = sorted(V1.glob("*.json"))


def test_the_v1_fixtures_cover_every_v1_type():
    assert {json.loads(p.read_text())["type"] for p in V1_FILES} == set(EVENT_TYPES)


@pytest.mark.parametrize("path", V1_FILES, ids=lambda p: p.stem)
def test_v1_events_are_read_by_the_current_models(path):
    raw = path.read_bytes()
    event = Envelope.from_json(raw)
    payload = event.payload()
    assert isinstance(payload, EVENT_TYPES[event.type])
    assert payload.account_id == event.subject and payload.actor is None
    # ... and satisfy the current published schema (a new required field would break this)
    schema = published_schemas()[f"{event.type}.json"]
    jsonschema.validate(json.loads(raw), schema)


def test_v1_account_created_gets_the_defaults_of_fields_added_later():
    created = Envelope.from_json((V1 / "01-AccountCreated.json").read_bytes()).payload()
    assert (created.company_id, created.plan, created.referred_by) == (None, "team", None)


def test_a_v1_stream_still_makes_a_licence():
    licence, history = None, []
    for path in V1_FILES:
        env = Envelope.from_json(path.read_bytes())
        licence, entries = evolve(licence, env.payload(), version=env.streamversion, time=env.time)
        history += entries
    assert licence.view(referral_credits=0) == {
        "account_id": "acc-v1-0001", "name": "Bâtiments Dupont", "country": "FR", "company_id": None,
        "plan": "business", "seats_included": 25, "seats_used": 1, "referral_credits": 0,
        "referred_by": None, "version": 6}
    assert [h.type for h in history] == ["AccountCreated", "MemberAdded", "MemberAdded", "MemberRemoved",
                                         "PlanChanged"]


class MemberAddedV2(MemberAdded):
    """What a later, additive version of MemberAdded may look like."""

    type_name: ClassVar[str] = "MemberAdded"
    invited_by: str | None = None


def test_a_new_optional_field_is_additive():
    newer = MemberAddedV2(account_id="a1", email="bob@example.com", role="user", rights=(), invited_by="u9")
    wire = envelope(newer, streamversion=3).to_json()
    assert b'"invited_by":"u9"' in wire
    # an old consumer (today's models) reads it, ignoring the field it does not know
    read = Envelope.from_json(wire).payload()
    assert read == MemberAdded(account_id="a1", email="bob@example.com", role="user", rights=())
    # today's schema accepts it (no additionalProperties: false anywhere)
    jsonschema.validate(json.loads(wire), published_schemas()["MemberAdded.json"])
    # and a newer consumer reads today's events: the new field is optional
    old_wire = envelope(MemberAdded(account_id="a1", email="bob@example.com", role="user", rights=()),
                        streamversion=3).to_json()
    assert MemberAddedV2.model_validate(json.loads(old_wire)["data"]).invited_by is None


def test_unknown_envelope_attributes_and_unknown_types_are_ignored():
    raw = json.loads((V1 / "01-AccountCreated.json").read_text())
    raw["traceparent"] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert Envelope.model_validate(raw).payload() == AccountCreated.model_validate(raw["data"])
    unknown = Envelope.model_validate(raw | {"type": "AccountRenamed", "data": {"account_id": "a"}})
    assert unknown.payload() is None


def test_models_only_gain_optional_fields_relative_to_v1():
    """A field v1 events lack must be optional now; a field they carry must still exist."""
    for path in V1_FILES:
        raw = json.loads(path.read_text())
        data_schema = published_schemas()[f"{raw['type']}.json"]["properties"]["data"]
        assert set(data_schema["required"]) <= set(raw["data"]), path.name
        assert set(raw["data"]) <= set(data_schema["properties"]), path.name
