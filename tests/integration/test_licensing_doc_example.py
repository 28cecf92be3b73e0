"""The consumer example published in docs/events.md works as documented: exact
seat counts from a stream with duplicates and events out of version order."""

from __future__ import annotations

import importlib.util
import sqlite3
from pathlib import Path

import pytest

from tests.support.licensing_events import Story, publish

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "docs" / "examples" / "billing_consumer.py"


def test_the_example_is_the_one_in_the_docs():
    code = EXAMPLE.read_text(encoding="utf-8")
    assert code.split('"""', 2)[2].strip() in (ROOT / "docs" / "events.md").read_text(encoding="utf-8")


async def test_the_example_counts_seats_exactly(nats_names, tmp_path):
    spec = importlib.util.spec_from_file_location("billing_consumer", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    story = Story()
    a = story.create("A", admin="alice@example.com")
    b = story.create("B", admin="bob@example.com")
    story.add_member(a, "x@example.com")
    story.add_member(a, "y@example.com")
    story.remove_member(a, "x@example.com")
    story.add_member(b, "z@example.com")
    envs = story.envelopes
    disordered = [envs[0], envs[1], envs[5], envs[4], envs[2], envs[3], envs[6], envs[7]]  # a: v4 before v3
    await publish(nats_names.url, nats_names.stream, nats_names.prefix, disordered)
    await publish(nats_names.url, nats_names.stream, nats_names.prefix, envs[:3],
                  msg_ids=[f"{e.id}-again" for e in envs[:3]])  # duplicates
    db = tmp_path / "billing.db"
    for _ in range(5):  # a gap is naked and comes back: run until everything is in
        await example.consume(nats_names.url, nats_names.stream, nats_names.prefix, str(db), until_idle=True)
        with sqlite3.connect(db) as conn:
            seats = dict(conn.execute("SELECT account_id, used FROM seats"))
            positions = dict(conn.execute("SELECT account_id, version FROM positions"))
        if positions == dict(story.versions):
            break
    assert positions == dict(story.versions)
    assert seats == {a: 2, b: 2}
