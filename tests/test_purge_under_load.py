"""A large purge runs in bounded batches: ingestion keeps answering while it runs."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest
from bson import ObjectId

from retention.rules import RetentionPolicy
from retention.sweep import sweep
from store.accounts import request_erasure
from store.database import Database
from store.documents import Account, Message, utcnow
from store.spool import Spool
from tests.conftest import report
from tests.mail import make_email, running, send

MESSAGES = 100_000
CONVERSATIONS = 1_000


async def load_account(account_id: str) -> None:
    """100,000 messages in the store's shape, written in bulk (filing them one by one through
    SMTP would take the test's whole budget)."""
    conversations = [ObjectId() for _ in range(CONVERSATIONS)]
    now = utcnow()
    await Account(id=account_id, emails=[f"{account_id}@example.com"]).insert()
    await Message.get_pymongo_collection().database["conversations"].insert_many(
        [{"_id": c, "channel": "chat", "account_id": account_id, "message_count": 100,
          "collected_at": now, "restricted": False, "guard": 0} for c in conversations]
    )  # fmt: skip
    batch = []
    for n in range(MESSAGES):
        batch.append({
            "conversation_id": conversations[n % CONVERSATIONS], "account_id": account_id,
            "channel": "chat", "direction": "inbound", "dedup_key": f"load:{n}",
            "author": {"role": "customer"}, "sent_at": now, "collected_at": now,
            "text": f"message {n}", "attachments": [],
            "has_attachments": False, "restricted": False,
        })  # fmt: skip
        if len(batch) == 10_000:
            await Message.get_pymongo_collection().insert_many(batch, ordered=False)
            batch = []


@pytest.mark.slow
async def test_a_100000_message_purge_keeps_smtp_answering(database: Database) -> None:
    await load_account("big")
    assert await Message.find({"account_id": "big"}).count() == MESSAGES
    now = utcnow()
    await request_erasure(account_id="big", now=now)
    policy = RetentionPolicy(grace=timedelta(days=180), max_age=timedelta(days=1095),
                             secret_key=b"k" * 32, batch_size=500)  # fmt: skip

    spool = Spool()
    async with running(spool) as port:
        started = time.perf_counter()
        purge = asyncio.create_task(sweep(database, now=now, policy=policy))
        latencies = []
        n = 0
        try:
            while not purge.done():
                sent = time.perf_counter()
                code, _ = await send(port, make_email(message_id=f"<during-{n}@example.com>"))
                latencies.append(time.perf_counter() - sent)
                assert code == 250
                n += 1
        finally:
            # A failure here must not leave the sweep running into the next test's database.
            if not purge.done():
                purge.cancel()
        swept = await purge
        took = time.perf_counter() - started
        assert await spool.empty(within=30)

    assert swept.messages == MESSAGES
    assert await Message.find({"account_id": "big"}).count() == 0
    assert n >= 5, "the purge ended before ingestion was exercised during it"
    assert await Message.find({"message_id_header": {"$regex": "^during-"}}).count() == n
    latencies.sort()
    p50, worst = latencies[len(latencies) // 2] * 1000, latencies[-1] * 1000
    report(
        f"purged {MESSAGES} messages in {took:.1f}s ({MESSAGES / took:.0f}/s); "
        f"{n} emails accepted meanwhile, latency p50 {p50:.0f} ms, max {worst:.0f} ms"
    )
