"""Retention: deletion deadlines, erasure, max age, holds, crash and concurrency safety, proof.

Sweeps run against a real mongod with an injected clock (``now``), so a 180-day grace is
tested to the second without waiting; one test runs the real scheduler on a short interval.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY

from retention import deletion
from retention.forecast import forecast
from retention.holds import place_hold, release_hold
from retention.housekeeping import remove_orphans
from retention.records import purge_records
from retention.rules import RetentionPolicy, subject_hmac
from retention.sweep import sweep
from scheduler.jobs import Jobs, guarded
from scheduler.runner import scheduler
from store.accounts import mark_deleted, register_account, request_erasure, restore
from store.blobs import sha256_hex
from store.database import Database
from store.documents import (
    Account,
    Blob,
    Conversation,
    Hold,
    HoldKind,
    Message,
    PurgeRecord,
    PurgeRule,
    utcnow,
)
from tests.conftest import Api
from tests.factories import chat, email
from tests.helpers import eventually

GRACE = timedelta(days=180)
MAX_AGE = timedelta(days=1095)
POLICY = RetentionPolicy(
    grace=GRACE, max_age=MAX_AGE, secret_key=b"k" * 32, batch_size=2,
    blob_quiet_period=timedelta(0),
)  # fmt: skip
PDF = b"%PDF-1.4 the customer's contract"


async def content_of(account_id: str) -> tuple[int, int]:
    return (
        await Message.find({"account_id": account_id}).count(),
        await Conversation.find({"account_id": account_id}).count(),
    )


@pytest.fixture
async def ann(database: Database) -> Account:
    """An account with 5 messages in 4 conversations (2 email threads, 2 chats), one with an
    attachment."""
    await register_account(account_id="ann", emails=["ann@example.com"], name="Ann Customer")
    await email(account_id="ann", attachments=[("contract.pdf", "application/pdf", PDF)])
    await email(account_id="ann", message_id="<ann-2@example.com>", body="second")
    await chat("chat one", account_id="ann", conversation="ann-chat")
    await chat("chat two", account_id="ann", conversation="ann-chat")
    await chat("other chat", account_id="ann", conversation="ann-chat-2")
    account = await Account.get("ann")
    assert account is not None
    return account


async def test_a_deleted_account_is_purged_at_its_deadline_and_not_before(
    database: Database, ann: Account
) -> None:
    deleted_at = utcnow()
    await mark_deleted(account_id="ann", deleted_at=deleted_at, grace=GRACE)
    await email(account_id="bob", message_id="<bob@example.com>", sender="bob@example.org",
                attachments=[("other.pdf", "application/pdf", b"bob's")])  # fmt: skip

    early = await sweep(database, now=deleted_at + GRACE - timedelta(seconds=1), policy=POLICY)
    assert early.messages == 0
    assert await content_of("ann") == (5, 4)

    report = await sweep(database, now=deleted_at + GRACE, policy=POLICY)
    assert report.messages == 5
    assert await content_of("ann") == (0, 0)
    assert await Blob.get(sha256_hex(PDF)) is None
    assert await Blob.count() == 2  # bob's raw email and attachment only
    tombstone = await Account.get("ann")
    assert tombstone is not None and tombstone.purged_at == deleted_at + GRACE
    assert (tombstone.emails, tombstone.name) == ([], None)
    assert await content_of("bob") == (1, 1)


async def test_a_blob_shared_with_a_surviving_message_stays(
    database: Database, ann: Account
) -> None:
    await email(account_id="bob", message_id="<bob@example.com>",
                attachments=[("same.pdf", "application/pdf", PDF)])  # fmt: skip
    now = utcnow()
    await request_erasure(account_id="ann", now=now)
    await sweep(database, now=now, policy=POLICY)
    assert await Blob.get(sha256_hex(PDF)) is not None


async def test_restoring_before_the_deadline_cancels_the_purge(
    database: Database, ann: Account
) -> None:
    deleted_at = utcnow()
    await mark_deleted(account_id="ann", deleted_at=deleted_at, grace=GRACE)
    await restore(account_id="ann")
    await sweep(database, now=deleted_at + GRACE * 2, policy=POLICY)
    assert await content_of("ann") == (5, 4)
    assert await Message.find({"restricted": True}).count() == 0


async def test_an_erasure_request_purges_at_once(database: Database, ann: Account) -> None:
    now = utcnow()
    await request_erasure(account_id="ann", now=now)
    report = await sweep(database, now=now, policy=POLICY)
    assert report.messages == 5
    [record] = await purge_records(secret_key=POLICY.secret_key, account_id="ann")
    assert record.rule.value == "erasure"


async def test_mail_arriving_after_deletion_is_accepted_and_purged_with_the_rest(
    database: Database, ann: Account
) -> None:
    deleted_at = utcnow()
    await mark_deleted(account_id="ann", deleted_at=deleted_at, grace=GRACE)
    late = await email(message_id="<late@example.com>", body="are you still there?")
    assert late.account_id == "ann" and late.restricted
    await sweep(database, now=deleted_at + GRACE, policy=POLICY)
    assert await Message.get(late.id) is None


async def test_content_past_the_maximum_age_is_purged_linked_or_not(database: Database) -> None:
    old_unlinked = await chat("ancient", conversation="old")
    old_linked = await email(account_id="carl", message_id="<old@example.com>")
    fresh = await chat("recent", conversation="new")
    for message in (old_unlinked, old_linked):
        message.collected_at = utcnow() - MAX_AGE - timedelta(days=1)
        await message.save()
    report = await sweep(database, now=utcnow(), policy=POLICY)
    assert report.messages == 2
    assert await Message.get(fresh.id) is not None
    assert await Message.count() == 1
    assert await Conversation.count() == 1
    [record] = await purge_records(secret_key=POLICY.secret_key, account_id="carl")
    assert record.rule.value == "max_age"


async def test_an_account_hold_blocks_every_purge_path(database: Database, ann: Account) -> None:
    now = utcnow()
    await place_hold(
        database, account_id="ann", conversation_id=None, kind=HoldKind.DISPUTE,
        reason="chargeback", case_ref="CB-1", expires_at=None, created_by="legal",
    )  # fmt: skip
    await request_erasure(account_id="ann", now=now)
    old = await Message.find_one({"account_id": "ann"})
    assert old is not None
    old.collected_at = now - MAX_AGE * 2
    await old.save()
    report = await sweep(database, now=now + GRACE * 10, policy=POLICY)
    assert report.messages == 0 and report.accounts_blocked == 1
    assert await content_of("ann") == (5, 4)


async def test_a_conversation_hold_keeps_that_conversation_only(
    database: Database, ann: Account
) -> None:
    held = await Conversation.find_one({"external_id": "ann-chat"})
    assert held is not None and held.id is not None
    await place_hold(database, account_id=None, conversation_id=held.id,
                     kind=HoldKind.CRIMINAL_INVESTIGATION, reason="fraud", case_ref=None,
                     expires_at=None, created_by="legal")  # fmt: skip
    now = utcnow()
    await request_erasure(account_id="ann", now=now)
    report = await sweep(database, now=now, policy=POLICY)
    assert report.messages == 3
    assert await content_of("ann") == (2, 1)  # the held chat and its two messages
    assert (await Account.get("ann")).purged_at is None  # type: ignore[union-attr]


async def test_releasing_a_hold_lets_the_next_sweep_purge(database: Database, ann: Account) -> None:
    hold = await place_hold(database, account_id="ann", conversation_id=None,
                            kind=HoldKind.DISPUTE, reason="r", case_ref=None, expires_at=None,
                            created_by="legal")  # fmt: skip
    now = utcnow()
    await request_erasure(account_id="ann", now=now)
    assert (await sweep(database, now=now, policy=POLICY)).messages == 0
    assert hold.id is not None
    await release_hold(hold_id=hold.id, released_by="legal", reason="settled", now=now)
    assert (await sweep(database, now=now + timedelta(seconds=1), policy=POLICY)).messages == 5
    assert (await Account.get("ann")).purged_at is not None  # type: ignore[union-attr]


async def test_an_expired_hold_stops_protecting(database: Database, ann: Account) -> None:
    now = utcnow()
    await place_hold(database, account_id="ann", conversation_id=None, kind=HoldKind.DISPUTE,
                     reason="r", case_ref=None, expires_at=now + timedelta(days=30),
                     created_by="legal")  # fmt: skip
    await request_erasure(account_id="ann", now=now)
    assert (await sweep(database, now=now + timedelta(days=29), policy=POLICY)).messages == 0
    assert (await sweep(database, now=now + timedelta(days=30), policy=POLICY)).messages == 5


async def test_a_hold_placed_while_a_sweep_runs_protects_what_remains(
    database: Database, ann: Account
) -> None:
    now = utcnow()
    await request_erasure(account_id="ann", now=now)
    batches = 0

    async def hold_arrives_after_the_first_batch() -> None:
        nonlocal batches
        batches += 1
        if batches == 2:  # the sweep has read the holds (none) and deleted one batch
            await place_hold(database, account_id="ann", conversation_id=None,
                             kind=HoldKind.LEGAL_OBLIGATION, reason="court order",
                             case_ref="C-9", expires_at=None, created_by="legal")  # fmt: skip

    report = await sweep(database, now=now, policy=POLICY,
                         before_batch=hold_arrives_after_the_first_batch)  # fmt: skip
    assert report.messages == POLICY.batch_size  # only the batch before the hold
    assert await Message.find({"account_id": "ann"}).count() == 5 - POLICY.batch_size


async def test_a_sweep_killed_after_deleting_messages_is_finished_by_the_next(
    database: Database, ann: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = utcnow()
    await request_erasure(account_id="ann", now=now)
    real = deletion.collect_blobs

    class Killed(Exception):
        """The process dies between deleting a batch of messages and their blobs."""

    async def crash(shas: list[str], **kwargs: Any) -> tuple[int, int]:
        if shas:  # the first batch with blobs (batches come in no particular order)
            raise Killed
        return await real(shas, **kwargs)

    monkeypatch.setattr(deletion, "collect_blobs", crash)
    with pytest.raises(Killed):
        await sweep(database, now=now, policy=POLICY)
    [interrupted] = await PurgeRecord.find().to_list()
    assert interrupted.done_at is None and interrupted.pending_blobs

    monkeypatch.setattr(deletion, "collect_blobs", real)
    await sweep(database, now=now + timedelta(minutes=10), policy=POLICY)
    assert await content_of("ann") == (0, 0)
    assert await Blob.count() == 0, "orphan blobs left behind"
    [record] = await PurgeRecord.find().to_list()
    assert record.id == interrupted.id and record.done_at is not None
    assert record.pending_blobs == []
    assert record.counts.messages == 5


async def test_two_schedulers_at_once_purge_once_with_one_record(
    database: Database, ann: Account
) -> None:
    now = utcnow()
    await request_erasure(account_id="ann", now=now)
    first, second = (Jobs(database=database, policy=POLICY, interval=timedelta(seconds=1),
                          clock=lambda: now) for _ in range(2))  # fmt: skip
    reports = await asyncio.gather(first.purge_sweep(), second.purge_sweep(),
                                   first.purge_sweep(), second.purge_sweep())  # fmt: skip
    assert sum(r.messages for r in reports if r is not None) == 5
    assert await PurgeRecord.find({"subjects": subject_hmac(POLICY.secret_key, "ann")}).count() == 1
    await first.stop()
    await second.stop()


async def test_the_purge_record_verifies_by_account_id_and_holds_no_personal_data(
    database: Database, ann: Account
) -> None:
    now = utcnow()
    await request_erasure(account_id="ann", now=now)
    await sweep(database, now=now, policy=POLICY)
    [record] = await purge_records(secret_key=POLICY.secret_key, account_id="ann")
    assert record.done_at is not None and record.counts.messages == 5
    assert await purge_records(secret_key=POLICY.secret_key, account_id="bob") == []
    stored = json.dumps(await PurgeRecord.get_pymongo_collection().find_one(), default=str)
    for personal in ("ann@example.com", "Ann Customer", "chat one", "second", '"ann"'):
        assert personal not in stored


async def test_a_recently_referenced_blob_is_kept_and_housekeeping_removes_it_later(
    database: Database, ann: Account
) -> None:
    careful = RetentionPolicy(grace=GRACE, max_age=MAX_AGE, secret_key=b"k" * 32)
    now = utcnow()
    await request_erasure(account_id="ann", now=now)
    await sweep(database, now=now, policy=careful)
    assert await Message.count() == 0
    assert await Blob.get(sha256_hex(PDF)) is not None  # referenced minutes ago: kept for now
    assert await remove_orphans(quiet_period=timedelta(0)) >= 1
    assert await Blob.count() == 0


async def test_the_forecast_lists_what_is_due_when_and_what_blocks_it(
    database: Database, ann: Account
) -> None:
    deleted_at = utcnow()
    await mark_deleted(account_id="ann", deleted_at=deleted_at, grace=GRACE)
    hold = await place_hold(database, account_id="ann", conversation_id=None,
                            kind=HoldKind.DISPUTE, reason="r", case_ref=None, expires_at=None,
                            created_by="legal")  # fmt: skip
    [item] = [i for i in await forecast(now=deleted_at, policy=POLICY) if i.account_id]
    assert (item.account_id, item.due_at, item.messages) == ("ann", deleted_at + GRACE, 5)
    assert item.blocked_by == [str(hold.id)] and item.held_messages == 5
    assert await Hold.count() == 1


async def test_the_forecast_gives_every_stored_message_a_date(database: Database) -> None:
    """Before: with 12 messages stored, one line ("max_age - 3"): the 9 of an active account
    had no due date anywhere. Now each message is in exactly one row: a deleted account's,
    or the month its maximum age ends in."""
    now = utcnow()
    await register_account(account_id="bo", emails=["bo@example.com"], name="Bo")
    for days in (0, 1, 2, 40, 41, 42, 70, 71, 72):
        await chat(f"day {days}", account_id="bo", conversation=f"bo-{days}",
                   at=now - timedelta(days=days))  # fmt: skip
    for n in range(3):
        await chat("very old", conversation=f"old-{n}", at=now - POLICY.max_age - timedelta(days=n))
    items = await forecast(now=now, policy=POLICY)
    assert sum(i.messages for i in items) == await Message.count() == 12
    assert all(i.rule is PurgeRule.MAX_AGE and i.account_id is None for i in items)
    overdue = [i for i in items if i.due_at <= now]
    assert sum(i.messages for i in overdue) == 3
    later = sorted(i.due_at for i in items if i.due_at > now)
    assert later[0] == now - timedelta(days=72) + POLICY.max_age  # the month's first message


@pytest.fixture
async def running_scheduler(database: Database) -> AsyncIterator[Jobs]:
    fast = RetentionPolicy(grace=timedelta(seconds=2), max_age=MAX_AGE, secret_key=b"k" * 32,
                           blob_quiet_period=timedelta(0))  # fmt: skip
    jobs = Jobs(database=database, policy=fast, interval=timedelta(seconds=1))
    async with scheduler(jobs):
        yield jobs


@pytest.mark.slow
async def test_the_scheduler_purges_after_the_deadline_and_not_before(
    ann: Account, running_scheduler: Jobs
) -> None:
    deleted_at = utcnow()
    deadline = deleted_at + timedelta(seconds=2)
    await mark_deleted(account_id="ann", deleted_at=deleted_at, grace=timedelta(seconds=2))
    checks = 0
    while utcnow() < deadline:
        # Sweeps run every second meanwhile; until the deadline everything stays. A read that
        # ended before the deadline cannot have seen a sweep's deletion (a sweep deletes only
        # with its clock past the deadline), however slow the machine. (The exact deadline is
        # tested to the second with an injected clock above.)
        content = await content_of("ann")
        if utcnow() < deadline:
            assert content == (5, 4)
            checks += 1
        await asyncio.sleep(0.1)
    assert checks > 0

    async def gone() -> bool:  # and the sweep that removed it has closed its record
        closed = await PurgeRecord.find({"done_at": {"$ne": None}}).count()
        return await content_of("ann") == (0, 0) and closed == 1

    await eventually(gone, timeout=30)
    [record] = await PurgeRecord.find().to_list()
    assert record.due_at == deadline


async def test_a_sweep_is_counted_timed_and_its_lateness_exposed(
    api: Api, database: Database, ann: Account
) -> None:
    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    purged_before = sample("archive_purged_total", kind="messages")
    runs_before = sample("archive_job_seconds_count", job="purge_sweep")
    due = utcnow() - timedelta(minutes=3)
    await request_erasure(account_id="ann", now=due)
    jobs = Jobs(database=database, policy=POLICY, interval=timedelta(seconds=1))
    await guarded("purge_sweep")(jobs.purge_sweep)()
    await jobs.stop()

    assert sample("archive_purged_total", kind="messages") - purged_before == 5
    assert sample("archive_job_seconds_count", job="purge_sweep") - runs_before == 1
    assert sample("archive_purge_lateness_seconds") >= 180  # three minutes overdue
    text = await (await api.get("/metrics", None)).text()
    assert "archive_purge_lateness_seconds" in text and "archive_purged_total" in text
