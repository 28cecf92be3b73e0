"""A minimal downstream consumer of the account events: seats used per account,
kept in SQLite, exactly once and in order per account (see docs/events.md).

    python docs/examples/billing_consumer.py  # NATS_URL, NATS_STREAM, NATS_SUBJECT_PREFIX
"""

import asyncio
import json
import os
import sqlite3

import nats
from nats.js.api import AckPolicy, ConsumerConfig

SEATS = {"MemberAdded": 1, "MemberRemoved": -1}  # unknown types: no effect, but the version moves


async def consume(url: str, stream: str, prefix: str, db_path: str, durable: str = "billing",
                  until_idle: bool = False) -> None:
    db = sqlite3.connect(db_path)
    db.execute("CREATE TABLE IF NOT EXISTS positions (account_id TEXT PRIMARY KEY, version INT NOT NULL)")
    db.execute("CREATE TABLE IF NOT EXISTS seats (account_id TEXT PRIMARY KEY, used INT NOT NULL)")
    nc = await nats.connect(url)
    sub = await nc.jetstream().pull_subscribe(
        f"{prefix}.>", durable=durable, stream=stream,
        config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=30, max_deliver=-1))
    try:
        while True:
            try:
                msgs = await sub.fetch(100, timeout=1)
            except TimeoutError:
                if until_idle:
                    return
                continue
            for msg in msgs:
                event = json.loads(msg.data)
                account, version = event["subject"], event["streamversion"]
                with db:  # one transaction: the effect and the account's position commit together
                    row = db.execute("SELECT version FROM positions WHERE account_id = ?", (account,)).fetchone()
                    last = row[0] if row else 0
                    if version > last + 1:  # a gap: its predecessor comes later; try again soon
                        await msg.nak(delay=1)
                        continue
                    if version == last + 1:  # else a duplicate: already applied, just ack it
                        db.execute("INSERT INTO seats VALUES (?, ?) ON CONFLICT(account_id) "
                                   "DO UPDATE SET used = used + excluded.used",
                                   (account, SEATS.get(event["type"], 0)))
                        db.execute("INSERT OR REPLACE INTO positions VALUES (?, ?)", (account, version))
                await msg.ack()  # only after the commit: a crash before it means a redelivery
    finally:
        await nc.close()
        db.close()


if __name__ == "__main__":
    asyncio.run(consume(os.environ.get("NATS_URL", "nats://127.0.0.1:4222"),
                        os.environ.get("NATS_STREAM", "ACCOUNTS"),
                        os.environ.get("NATS_SUBJECT_PREFIX", "accounts"), "billing.db"))
