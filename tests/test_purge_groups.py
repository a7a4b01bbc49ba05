"""The sweep purges due accounts in groups: each account keeps its own exact record and residue
scan, a hold still protects exactly what it covers, and the database work of a sweep grows
with the number of groups and batches, not with the number of accounts."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

import retention.sweep
from retention.forecast import LATENESS_ACCOUNTS
from retention.holds import place_hold
from retention.records import records_of_purges
from retention.rules import RetentionPolicy, subject_hmac
from retention.sweep import sweep
from store.accounts import register_account, request_erasure
from store.database import Database
from store.documents import (
    Account,
    Conversation,
    HoldKind,
    Message,
    PurgeRecord,
    SpoolEntry,
    utcnow,
)
from store.embedded import EmbeddedMongo
from store.spool import Spool
from tests.factories import chat
from tests.helpers import counting, operations, whole_reads

POLICY = RetentionPolicy(
    grace=timedelta(days=180), max_age=timedelta(days=1095), secret_key=b"g" * 32,
    batch_size=4, account_group=3, blob_quiet_period=timedelta(0),
)  # fmt: skip


async def customers(n: int, *, messages: Any = lambda i: 2, prefix: str = "c") -> list[str]:
    """``n`` erased accounts, the i-th with ``messages(i)`` chat messages in two chats."""
    ids = []
    for i in range(n):
        account = f"{prefix}{i}"
        await register_account(account_id=account, emails=[f"{account}@example.com"], name=None)
        for m in range(messages(i)):
            await chat(f"message {m}", account_id=account, conversation=f"{account}-{m % 2}")
        ids.append(account)
    for account in ids:
        await request_erasure(account_id=account, now=utcnow())
    return ids


async def record_of(account: str) -> PurgeRecord:
    [record] = await PurgeRecord.find(
        {"subjects": subject_hmac(POLICY.secret_key, account)}
    ).to_list()
    return record


async def test_accounts_purged_together_each_get_their_own_exact_record(
    database: Database,
) -> None:
    # Seven accounts of 1 to 7 messages: groups of three, batches of four that span accounts.
    accounts = await customers(7, messages=lambda i: i + 1)
    held = accounts[3]
    await place_hold(database, account_id=held, conversation_id=None, kind=HoldKind.DISPUTE,
                     reason="chargeback", case_ref=None, expires_at=None,
                     created_by="legal")  # fmt: skip

    report = await sweep(database, now=utcnow(), policy=POLICY)

    assert report.accounts_purged == 6 and report.accounts_blocked == 1
    assert report.messages == sum(range(1, 8)) - 4 and report.residue == 0
    for i, account in enumerate(accounts):
        if account == held:
            continue
        record = await record_of(account)
        assert record.counts.messages == i + 1, account
        assert record.counts.conversations == min(i + 1, 2), account
        assert record.done_at is not None and record.residue is not None
        assert record.residue["clean"], (account, record.residue)
        tombstone = await Account.get(account)
        assert tombstone is not None and tombstone.purged_at is not None
        assert tombstone.emails == []
    assert await Message.find({"account_id": held}).count() == 4
    assert await Conversation.find({"account_id": held}).count() == 2
    assert await PurgeRecord.find({"subjects": subject_hmac(POLICY.secret_key, held)}).count() == 0


async def test_a_second_sweep_finds_nothing_more_and_writes_no_new_record(
    database: Database,
) -> None:
    await customers(5)
    now = utcnow()
    first = await sweep(database, now=now, policy=POLICY)
    again = await sweep(database, now=now, policy=POLICY)
    assert first.accounts_purged == 5 and first.messages == 10
    assert again.messages == 0 and again.accounts_purged == 0 and again.records == []
    assert await PurgeRecord.count() == 5


async def test_a_purge_held_back_by_a_hold_keeps_one_record_for_the_sweeps_that_find_nothing(
    database: Database,
) -> None:
    """Before: every sweep (every 20 s in the trial) wrote another record of the same purge,
    each repeating the same findings. Now the sweeps that find nothing more to delete take up
    the record of the last one that did not either."""
    [account] = await customers(1)
    held = await Conversation.find_one({"external_id": f"{account}-1"})
    assert held is not None and held.id is not None
    await place_hold(database, account_id=None, conversation_id=held.id, kind=HoldKind.DISPUTE,
                     reason="r", case_ref=None, expires_at=None, created_by="legal")  # fmt: skip
    for _ in range(5):
        await sweep(database, now=utcnow(), policy=POLICY)
    first, waiting = await PurgeRecord.find_all().sort("purge_key").to_list()
    assert first.counts.messages == 1 and first.done_at is not None  # the unheld chat went
    assert waiting.counts.messages == 0 and waiting.done_at is not None
    assert waiting.residue is not None and waiting.residue["verdict"] == "kept"
    assert waiting.residue["checked_at"] > waiting.started_at  # checked again at each sweep


async def sweep_cost(
    database: Database, mongo: EmbeddedMongo, accounts: int, prefix: str
) -> Counter[str]:
    """The commands a sweep over ``accounts`` erased accounts of two messages each sends."""
    await customers(accounts, prefix=prefix)
    policy = replace(POLICY, batch_size=500, account_group=200)
    async with counting(mongo, database) as listener:
        assert listener.database is not None
        report = await sweep(listener.database, now=utcnow(), policy=policy)
        sent = Counter(listener.sent)
    assert report.accounts_purged == accounts and report.residue == 0
    return sent


async def test_a_sweeps_database_work_does_not_grow_with_the_number_of_accounts(
    database: Database, mongo: EmbeddedMongo
) -> None:
    # Both above the 20 accounts the lateness metric looks at (a fixed cost of the sweep).
    few = await sweep_cost(database, mongo, LATENESS_ACCOUNTS + 5, "few")
    many = await sweep_cost(database, mongo, LATENESS_ACCOUNTS + 65, "many")
    # One account at a time cost some fifty commands each: 60 more would be 3,000 more.
    assert many.total() <= few.total() + 10, f"85 accounts: {many}; 25 accounts: {few}"


async def test_a_groups_earlier_records_are_found_by_their_keys_not_by_reading_all_records(
    database: Database,
) -> None:
    # Every group of a sweep looks up the records of its purges (to resume, never double, an
    # unfinished one): over the life of an archive the records run into the millions.
    now = utcnow()
    await PurgeRecord.get_pymongo_collection().insert_many([
        {"purge_key": f"deletion:{n:064x}:{now.isoformat()}:1", "rule": "deletion",
         "due_at": now, "started_at": now, "done_at": now, "subjects": []}
        for n in range(500)
    ])  # fmt: skip
    wanted = [f"deletion:{n:064x}:{now.isoformat()}" for n in (7, 300, 10_000)]
    plan: dict[str, Any] = (
        await PurgeRecord.get_pymongo_collection().find(records_of_purges(wanted)).explain()
    )
    stats = plan["executionStats"]
    assert stats["nReturned"] == 2
    # Each range ends on one key past its last match: 3 ranges, 2 matches, at most 5 keys.
    assert stats["totalKeysExamined"] <= 5, stats["totalKeysExamined"]


async def test_a_sweep_reads_the_archive_through_indexes_not_whole_collections(
    database: Database,
) -> None:
    # A sweep runs every interval over an archive of millions: which accounts are due, the
    # records an earlier sweep left pending, the conversations that name a purged address.
    await customers(3)
    async with operations(database) as ops:
        await sweep(database, now=utcnow(), policy=POLICY)
    assert whole_reads(ops, "accounts", "purge_records", "conversations", "messages") == []
    naming = [o for o in ops if o.collection == "conversations" and "customer_emails" in o.fields]
    assert naming, "the residue scan looks for conversations naming the purged addresses"
    assert all("customer_emails" in o.plan for o in naming), [o.plan for o in naming]


async def rests_of_a_sweep(database: Database, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    rests: list[float] = []

    async def rest(seconds: float) -> None:
        rests.append(seconds)

    monkeypatch.setattr(retention.sweep, "_rest", rest)
    await customers(7)
    await sweep(database, now=utcnow(), policy=POLICY)
    return rests


async def test_the_sweep_stands_aside_while_deliveries_wait_to_be_filed(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    await Spool().put_email(b"Subject: waiting\r\n\r\nhello", envelope=None,
                            received_at=utcnow())  # fmt: skip
    assert len(await rests_of_a_sweep(database, monkeypatch)) >= 3  # groups and batches


async def test_a_delivery_waiting_for_its_retry_does_not_slow_the_sweep(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = Spool()
    await spool.put_email(b"Subject: broken\r\n\r\nhello", envelope=None, received_at=utcnow())
    [entry] = await SpoolEntry.find_all().to_list()
    await spool.failed(entry, "ValueError: cannot be filed")
    assert await rests_of_a_sweep(database, monkeypatch) == []
