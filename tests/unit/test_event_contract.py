"""The published event contract: docs/schemas/*.json are exactly what the pydantic
models generate, they are valid JSON Schemas that accept real envelopes, and
docs/asyncapi.yaml is a valid AsyncAPI 3.0 document whose payloads resolve to them."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from shared.events import (
    EVENT_TYPES,
    AccountCreated,
    MemberAdded,
    MemberRemoved,
    MemberRoleChanged,
    PlanChanged,
    envelope,
)
from shared.schema_export import published_schemas, render

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
SCHEMAS = DOCS / "schemas"
ASYNCAPI_SCHEMA = ROOT / "tests" / "fixtures" / "asyncapi" / "asyncapi-3.0.0.schema.json"

SAMPLES = {
    "AccountCreated": AccountCreated(account_id="a1", actor="u1", name="Acme", country="FR",
                                     company_id="73282932000074", plan="team", referral_code="R1",
                                     referred_by="a0"),
    "MemberAdded": MemberAdded(account_id="a1", actor="u1", email="bob@example.com", role="user",
                               rights=("quotes:write",)),
    "MemberRoleChanged": MemberRoleChanged(account_id="a1", email="bob@example.com", role="viewer", rights=()),
    "MemberRemoved": MemberRemoved(account_id="a1", email="bob@example.com"),
    "PlanChanged": PlanChanged(account_id="a1", plan="enterprise"),
}


def test_committed_schemas_are_what_the_models_generate():
    expected = published_schemas()
    committed = {p.name for p in SCHEMAS.glob("*.json")}
    assert committed == set(expected), "run: python -m shared.schema_export docs/schemas"
    for filename, schema in expected.items():
        assert (SCHEMAS / filename).read_text(encoding="utf-8") == render(schema), (
            f"docs/schemas/{filename} differs from the models: run python -m shared.schema_export docs/schemas")


def test_every_event_type_is_published_and_sampled():
    assert set(SAMPLES) == set(EVENT_TYPES)
    assert {f"{t}.json" for t in EVENT_TYPES} | {"Envelope.json"} == set(published_schemas())


@pytest.mark.parametrize("filename", sorted(published_schemas()))
def test_schemas_are_valid_json_schema(filename):
    schema = json.loads((SCHEMAS / filename).read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("event_type", sorted(EVENT_TYPES))
def test_real_envelopes_validate_against_their_schema_and_no_other(event_type):
    wire = json.loads(envelope(SAMPLES[event_type], streamversion=2).to_json())
    for name in EVENT_TYPES:
        validator = jsonschema.Draft7Validator(json.loads((SCHEMAS / f"{name}.json").read_text()),
                                               format_checker=jsonschema.FormatChecker())
        errors = list(validator.iter_errors(wire))
        assert (not errors) == (name == event_type), (name, [e.message for e in errors])
    jsonschema.validate(wire, json.loads((SCHEMAS / "Envelope.json").read_text()))


@pytest.mark.parametrize("broken", [
    {"streamversion": 0}, {"specversion": "0.3"}, {"data": {"account_id": "a1"}}, {"type": "MemberRemoved"}])
def test_schemas_reject_malformed_envelopes(broken):
    wire = json.loads(envelope(SAMPLES["MemberAdded"], streamversion=1).to_json()) | broken
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(wire, json.loads((SCHEMAS / "MemberAdded.json").read_text()))


def _asyncapi() -> dict:
    return yaml.safe_load((DOCS / "asyncapi.yaml").read_text(encoding="utf-8"))


def test_asyncapi_document_is_valid_asyncapi_3():
    """Checked with the AsyncAPI Initiative's own JSON Schema of the 3.0.0 specification."""
    spec_schema = json.loads(ASYNCAPI_SCHEMA.read_text(encoding="utf-8"))
    document = _asyncapi()
    assert document["asyncapi"] == "3.0.0"
    errors = [f"{list(e.path)}: {e.message}" for e in jsonschema.Draft7Validator(spec_schema).iter_errors(document)]
    assert errors == []
    # the validator does reject what AsyncAPI 3.0 forbids
    broken = document | {"operations": {"x": {"action": "publish", "channel": {"$ref": "#/channels/MemberAdded"}}}}
    assert list(jsonschema.Draft7Validator(spec_schema).iter_errors(broken))


def _resolve(document: dict, ref: str):
    assert ref.startswith("#/"), ref
    node = document
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def test_asyncapi_covers_every_event_and_its_refs_resolve_to_the_generated_schemas():
    document = _asyncapi()
    schemas = published_schemas()
    assert set(document["channels"]) == set(EVENT_TYPES)
    for name, channel in document["channels"].items():
        assert channel["address"] == "{prefix}.{account_id}." + name
        assert set(channel["parameters"]) == {"prefix", "account_id"}
        (message_ref,) = channel["messages"].values()
        message = _resolve(document, message_ref["$ref"])
        payload_ref = message["payload"]["$ref"]
        assert payload_ref == f"./schemas/{name}.json"
        committed = json.loads((DOCS / payload_ref).read_text(encoding="utf-8"))
        assert committed == schemas[f"{name}.json"]
        for trait in message["traits"]:
            assert "Nats-Msg-Id" in _resolve(document, trait["$ref"])["headers"]["properties"]
        for example in message.get("examples", []):
            jsonschema.validate(example["payload"], committed)
    operations = {op["channel"]["$ref"]: op for op in document["operations"].values()}
    assert set(operations) == {f"#/channels/{n}" for n in EVENT_TYPES}
    for op in operations.values():
        assert op["action"] == "send"
        for ref in op["messages"]:
            _resolve(document, ref["$ref"])
