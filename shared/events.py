"""The event contract: what the account service publishes and consumers read.

Events are facts, named in the past tense, immutable (frozen models). A type
never changes meaning: a new meaning is a new type, and a type only ever gains
optional fields. Consumers ignore fields they do not know yet, so an older
consumer keeps reading newer events.

On the wire each event is a CloudEvents 1.0 structured JSON document
(`Envelope`) whose `data` is one of the models below and whose
`streamversion` is the event's position in its account's stream.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

SPECVERSION = "1.0"
SOURCE = "account-service"


class EventData(BaseModel):
    """Fields every event carries."""

    model_config = ConfigDict(frozen=True, extra="ignore")
    type_name: ClassVar[str]

    account_id: str = Field(description="The account (company) whose stream holds the event.")
    actor: str | None = Field(None, description="User id of the person who caused the event.")


class AccountCreated(EventData):
    """A company account was created; its creator is added by a MemberAdded in the same commit."""

    type_name: ClassVar[str] = "AccountCreated"
    name: str
    country: str = Field(description="ISO 3166-1 alpha-2, upper-case.")
    company_id: str | None = Field(None, description="National company id (a SIRET for FR), without spaces.")
    plan: str = "team"
    referral_code: str = Field(description="This account's own code, to give to others (parrainage).")
    referred_by: str | None = Field(None, description="Account id of the referrer, when created with a referral code.")


class MemberAdded(EventData):
    type_name: ClassVar[str] = "MemberAdded"
    email: str = Field(description="Normalised email (casefolded, IDNA domain).")
    role: Literal["admin", "user", "viewer"]
    rights: tuple[str, ...]


class MemberRoleChanged(EventData):
    type_name: ClassVar[str] = "MemberRoleChanged"
    email: str
    role: Literal["admin", "user", "viewer"]
    rights: tuple[str, ...]


class MemberRemoved(EventData):
    type_name: ClassVar[str] = "MemberRemoved"
    email: str


class PlanChanged(EventData):
    type_name: ClassVar[str] = "PlanChanged"
    plan: str


EVENT_TYPES: dict[str, type[EventData]] = {
    cls.type_name: cls
    for cls in (AccountCreated, MemberAdded, MemberRoleChanged, MemberRemoved, PlanChanged)
}


class Envelope(BaseModel):
    """A CloudEvents 1.0 structured-mode JSON event, plus the `streamversion` extension."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    specversion: Literal["1.0"] = SPECVERSION
    id: str = Field(description="Unique event id (UUID); also the Nats-Msg-Id header.")
    source: str = SOURCE
    type: str = Field(description="The event type, e.g. MemberAdded.")
    subject: str = Field(description="The account id.")
    time: datetime = Field(description="When the event was recorded (RFC 3339).")
    datacontenttype: Literal["application/json"] = "application/json"
    streamversion: int = Field(ge=1, description="Version of the event in its account's stream: 1, 2, 3, ...")
    data: dict[str, Any]

    @property
    def account_id(self) -> str:
        return self.subject

    def payload(self) -> EventData | None:
        """The typed data, or None for a type this code does not know (skip it)."""
        cls = EVENT_TYPES.get(self.type)
        return cls.model_validate(self.data) if cls else None

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> Envelope:
        return cls.model_validate_json(raw)


def envelope(event: EventData, *, streamversion: int, event_id: str | None = None,
             time: datetime | None = None) -> Envelope:
    """Wrap one event for the wire."""
    return Envelope(
        id=event_id or str(uuid.uuid4()),
        type=event.type_name,
        subject=event.account_id,
        time=time or datetime.now(UTC),
        streamversion=streamversion,
        data=event.model_dump(mode="json"),
    )


def subject_for(prefix: str, account_id: str, event_type: str) -> str:
    """The NATS subject of an event: `<prefix>.<account_id>.<type>`."""
    return f"{prefix}.{account_id}.{event_type}"


def json_schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schema of each event type, as a full envelope whose `data` is that type."""
    out: dict[str, dict[str, Any]] = {}
    env = Envelope.model_json_schema()
    for name, cls in EVENT_TYPES.items():
        schema = dict(env)
        schema["title"] = name
        props = dict(schema["properties"])
        props["type"] = {"const": name, "type": "string", "title": "Type"}
        props["data"] = cls.model_json_schema()
        schema["properties"] = props
        out[name] = schema
    return out
