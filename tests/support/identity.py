"""Helpers for the identity integration tests: an in-process identity replica
(its real lifespan: pool, keys, NATS, projector, LISTEN) and an event publisher."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
from fastapi import FastAPI

from identity_service.app import create_app
from identity_service.settings import Settings
from shared.bus import NatsLink, OutgoingMessage, publish_batch
from shared.revocations import revocation_bucket
from shared.events import AccountCreated, Envelope, MemberAdded, MemberRemoved, MemberRoleChanged, PlanChanged
from shared.events import envelope, subject_for

PASSWORD = "correct horse battery"


def unique_email(tag: str) -> str:
    """A fresh address; `tag` tells which test module made it."""
    return f"{tag}{uuid.uuid4().hex[:10]}@example.com"


def settings_for(db_url: str, names, **overrides) -> Settings:
    # a refusal waits this long for the read model (the default is for production clients)
    overrides.setdefault("identity_switch_grace_seconds", 0.3)
    return Settings(identity_database_url=db_url, nats_url=names.url, nats_stream=names.stream,
                    nats_subject_prefix=names.prefix, identity_url="http://identity.test",
                    **overrides)


@dataclass
class Replica:
    app: FastAPI
    client: httpx.AsyncClient

    @property
    def service(self):
        return self.app.state.identity

    async def register(self, email: str, password: str = PASSWORD) -> str:
        r = await self.client.post("/users", json={"email": email, "password": password})
        assert r.status_code == 201, r.text
        return r.json()["user_id"]

    async def login(self, email: str, password: str = PASSWORD, **extra) -> dict:
        r = await self.client.post("/sessions", json={"email": email, "password": password, **extra})
        assert r.status_code == 201, r.text
        return r.json()

    async def switch(self, session_token: str, account_id: str, min_version: int | None = None) -> httpx.Response:
        body = {"account_id": account_id}
        if min_version is not None:
            body["min_version"] = min_version
        return await self.client.post("/sessions/current/switch", json=body,
                                      headers={"Authorization": f"Bearer {session_token}"})


@contextlib.asynccontextmanager
async def replica(settings: Settings) -> AsyncIterator[Replica]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://identity.test") as c:
            yield Replica(app, c)


class Publisher:
    """Writes account streams to NATS as the account service's relay would."""

    def __init__(self, names):
        self.names = names
        self.link = NatsLink(names.url, "test-publisher", stream=names.stream, subjects=[f"{names.prefix}.>"])
        self.versions: dict[str, int] = {}

    async def __aenter__(self) -> Publisher:
        await self.link.start(wait=5)
        await self.link.wait_connected(5)
        return self

    async def __aexit__(self, *exc) -> None:
        try:  # the revocation bucket a logout creates lives beside the test's stream
            await self.link.js.delete_key_value(revocation_bucket(self.names.stream))
        except Exception:  # noqa: BLE001 - none was made
            pass
        await self.link.close()

    def next(self, event) -> Envelope:
        v = self.versions.get(event.account_id, 0) + 1
        self.versions[event.account_id] = v
        return envelope(event, streamversion=v)

    async def send(self, *envelopes: Envelope) -> None:
        await publish_batch(self.link.js, [
            OutgoingMessage(subject_for(self.names.prefix, e.account_id, e.type), e.to_json(), e.id)
            for e in envelopes])

    async def create_account(self, name: str, admin_email: str, country: str = "FR") -> tuple[str, int]:
        account_id = str(uuid.uuid4())
        await self.send(
            self.next(AccountCreated(account_id=account_id, name=name, country=country,
                                     referral_code=uuid.uuid4().hex[:8])),
            self.next(MemberAdded(account_id=account_id, email=admin_email, role="admin",
                                  rights=("settings:write",))),
        )
        return account_id, self.versions[account_id]

    def added(self, account_id: str, email: str, role: str = "user", rights=("quotes:write",)) -> Envelope:
        return self.next(MemberAdded(account_id=account_id, email=email, role=role, rights=tuple(rights)))

    def changed(self, account_id: str, email: str, role: str, rights=()) -> Envelope:
        return self.next(MemberRoleChanged(account_id=account_id, email=email, role=role, rights=tuple(rights)))

    def removed(self, account_id: str, email: str) -> Envelope:
        return self.next(MemberRemoved(account_id=account_id, email=email))

    def plan(self, account_id: str, plan: str) -> Envelope:
        return self.next(PlanChanged(account_id=account_id, plan=plan))


@contextlib.asynccontextmanager
async def identity_stack(new_database, nats_names, **overrides) -> AsyncIterator[tuple[Replica, Publisher, Settings]]:
    """A replica on a fresh database and an event publisher on the test's stream."""
    settings = settings_for(new_database("identity"), nats_names, **overrides)
    async with Publisher(nats_names) as pub, replica(settings) as rep:
        yield rep, pub, settings
