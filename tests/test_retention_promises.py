"""Retention promises an audit found broken, one test each (issue 13): content linked to a
purged account, blobs and records of deferred deletions, conversation metadata after a partial
purge, a restore or a hold racing a sweep, the cost of a large hold, and honest lateness.

Each was seen to fail on the code before its fix. Sweeps run on a real mongod with an injected
clock (``now``).
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import pytest
from bson import ObjectId

import retention.sweep
from retention import deletion
from retention.forecast import lateness
from retention.holds import place_hold, release_hold
from retention.housekeeping import remove_orphans
from retention.rules import RetentionPolicy
from retention.sweep import sweep
from scheduler.jobs import Jobs, LeaseLost
from scheduler.runner import scheduler
from store import accounts, messages
from store.accounts import mark_deleted, register_account, request_erasure, restore
from store.blobs import put_blob, sha256_hex
from store.database import Database
from store.documents import (
    Account,
    AccountStatus,
    Blob,
    Conversation,
    Hold,
    HoldKind,
    Message,
    PurgeRecord,
    utcnow,
)
from tests.factories import chat, email
from tests.helpers import eventually
from tests.test_retention import GRACE, MAX_AGE, PDF, POLICY, ann, content_of

__all__ = ["ann"]  # the fixture, shared with test_retention

LEGAL = {"kind": HoldKind.LEGAL_OBLIGATION, "reason": "court order", "case_ref": "C-1",
         "expires_at": None, "created_by": "legal"}  # fmt: skip


async def purged(database: Database, account_id: str = "ann") -> Account:
    """Erase the account and sweep: it ends a tombstone."""
    now = utcnow()
    await request_erasure(account_id=account_id, now=now)
    await sweep(database, now=now, policy=POLICY)
    account = await Account.get(account_id)
    assert account is not None and account.purged_at is not None
    return account


# --- 1. a purged account stays a retention subject ------------------------------------------


async def test_a_chat_naming_a_purged_account_is_purged_by_the_next_sweep(
    database: Database, ann: Account
) -> None:
    await purged(database)
    late = await chat("I am back", account_id="ann", conversation="after-purge")
    assert late.restricted and late.purge_due_at is not None
    await sweep(database, now=utcnow(), policy=POLICY)
    assert await Message.get(late.id) is None
    assert await content_of("ann") == (0, 0)


async def test_mail_imported_for_a_purged_account_is_purged_by_the_next_sweep(
    database: Database, ann: Account
) -> None:
    await purged(database)
    imported = await email(account_id="ann", message_id="<imported@example.com>")
    await sweep(database, now=utcnow(), policy=POLICY)
    assert await Message.get(imported.id) is None


async def test_a_second_erasure_request_removes_what_linked_since(
    database: Database, ann: Account
) -> None:
    await purged(database)
    late = await chat("me again", account_id="ann", conversation="after-purge")
    again = utcnow() + timedelta(seconds=1)
    await request_erasure(account_id="ann", now=again)
    report = await sweep(database, now=again, policy=POLICY)
    assert report.messages == 1 and await Message.get(late.id) is None
    assert await PurgeRecord.find({"rule": "erasure"}).count() == 2


async def test_registering_a_purged_account_again_starts_a_new_life_without_old_content(
    database: Database, ann: Account
) -> None:
    await purged(database)
    residue = await chat("linked to the tombstone", account_id="ann", conversation="c-old")
    account = await register_account(account_id="ann", emails=["ann@example.com"], name="Ann")
    assert (account.status, account.life, account.purged_at) == (AccountStatus.ACTIVE, 2, None)
    fresh = await email(message_id="<new-life@example.com>", sender="ann@example.com")
    assert fresh.account_id == "ann" and not fresh.restricted and fresh.purge_due_at is None

    await sweep(database, now=utcnow() + timedelta(seconds=1), policy=POLICY)
    assert await Message.get(residue.id) is None, "the previous life's content came back"
    assert await Message.get(fresh.id) is not None
    assert (await Account.get("ann")).status is AccountStatus.ACTIVE  # type: ignore[union-attr]


async def test_a_restore_in_a_new_life_does_not_revive_the_previous_lifes_residue(
    database: Database, ann: Account
) -> None:
    await purged(database)
    residue = await chat("old life", account_id="ann", conversation="c-old")
    await register_account(account_id="ann", emails=["ann@example.com"], name="Ann")
    await request_erasure(account_id="ann", now=utcnow() + timedelta(days=1))
    await restore(account_id="ann")
    assert (await Message.get(residue.id)).restricted  # type: ignore[union-attr]
    await sweep(database, now=utcnow() + timedelta(seconds=1), policy=POLICY)
    assert await Message.get(residue.id) is None


# --- 2 and 11. deferred blobs are never forgotten, and their removal is recorded ----------


async def test_a_blob_in_its_quiet_period_stays_pending_and_a_later_sweep_removes_and_counts_it(
    database: Database, ann: Account
) -> None:
    careful = RetentionPolicy(grace=GRACE, max_age=MAX_AGE, secret_key=b"k" * 32)
    now = utcnow()
    await request_erasure(account_id="ann", now=now)
    await sweep(database, now=now, policy=careful)
    [record] = await PurgeRecord.find().to_list()
    assert sha256_hex(PDF) in record.pending_blobs, "a deferred blob was forgotten"
    blobs_then = record.counts.blobs

    # The quiet period passes (the blobs were last referenced long ago).
    await Blob.get_pymongo_collection().update_many(
        {}, {"$set": {"last_referenced_at": now - timedelta(hours=1)}}
    )
    await sweep(database, now=now + timedelta(minutes=10), policy=careful)
    assert await Blob.get(sha256_hex(PDF)) is None
    [record] = await PurgeRecord.find().to_list()
    assert record.pending_blobs == []
    assert record.counts.blobs > blobs_then, "the later removal is recorded nowhere"


async def test_the_certificate_no_longer_says_pending_once_a_later_sweep_removed_the_blobs(
    database: Database, ann: Account
) -> None:
    careful = RetentionPolicy(grace=GRACE, max_age=MAX_AGE, secret_key=b"k" * 32)
    assert careful.blob_quiet_period > timedelta(0)
    now = utcnow()
    await request_erasure(account_id="ann", now=now)
    await sweep(database, now=now, policy=careful)
    [record] = await PurgeRecord.find().to_list()
    assert record.residue is not None and _kinds(record.residue)["blobs"] == {"pending"}

    await Blob.get_pymongo_collection().update_many(
        {}, {"$set": {"last_referenced_at": now - timedelta(hours=1)}}
    )
    later = now + timedelta(minutes=10)
    await sweep(database, now=later, policy=careful)
    [record] = await PurgeRecord.find().to_list()
    assert record.pending_blobs == [] and record.residue is not None
    assert "blobs" not in _kinds(record.residue), record.residue["findings"]
    assert record.residue["clean"] and record.residue["residue"] == 0
    assert abs(record.residue["rechecked_at"] - later) < timedelta(seconds=1)


def _kinds(residue: dict[str, Any]) -> dict[str, set[str]]:
    kinds: dict[str, set[str]] = {}
    for finding in residue["findings"]:
        kinds.setdefault(finding["place"], set()).add(finding["kind"])
    return kinds


async def test_housekeeping_reaches_an_orphan_behind_more_than_ten_thousand_referenced_blobs(
    database: Database,
) -> None:
    long_ago = utcnow() - timedelta(days=30)
    conversation = ObjectId()
    shas = [f"{n:064x}" for n in range(10_050)]
    await Blob.get_pymongo_collection().insert_many(
        [{"_id": sha, "size": 1, "data": b"x", "chunk_count": 0, "created_at": long_ago,
          "last_referenced_at": long_ago} for sha in shas]
    )  # fmt: skip
    await Message.get_pymongo_collection().insert_many(
        [
            {"conversation_id": conversation, "dedup_key": sha, "raw": {"sha256": sha, "size": 1}}
            for sha in shas
        ]
    )  # fmt: skip  (only what a blob reference needs: no sweep reads them here)
    orphan = await put_blob(b"the raw mail of an erased customer")
    await Blob.get_pymongo_collection().update_one(
        {"_id": orphan.sha256}, {"$set": {"last_referenced_at": long_ago + timedelta(days=1)}}
    )
    assert await remove_orphans(quiet_period=timedelta(minutes=5)) == 1
    assert await Blob.get(orphan.sha256) is None
    assert await Blob.count() == len(shas)


async def test_housekeeping_runs_when_the_scheduler_starts(database: Database) -> None:
    orphan = await put_blob(b"left behind by a crash")
    await Blob.get_pymongo_collection().update_one(
        {"_id": orphan.sha256}, {"$set": {"last_referenced_at": utcnow() - timedelta(days=1)}}
    )
    jobs = Jobs(database=database, policy=POLICY, interval=timedelta(hours=1))
    async with scheduler(jobs):

        async def gone() -> bool:
            return await Blob.get(orphan.sha256) is None

        await eventually(gone, timeout=30)


async def test_the_record_says_when_the_purge_ended(database: Database, ann: Account) -> None:
    now = utcnow()
    await request_erasure(account_id="ann", now=now)
    await sweep(database, now=now, policy=POLICY)
    [record] = await PurgeRecord.find().to_list()
    assert record.done_at is not None and record.done_at > record.started_at


# --- 5. a partial purge leaves nothing of the purged messages in their conversation --------


async def test_a_max_age_purge_leaves_no_trace_of_old_messages_in_their_conversation(
    database: Database,
) -> None:
    old = await email(message_id="<old@example.com>", sender="old-customer@example.org",
                      subject="old thread")  # fmt: skip
    new = await email(message_id="<new@example.com>", in_reply_to="<old@example.com>",
                      sender="new-customer@example.org", subject="Re: old thread")  # fmt: skip
    assert new.conversation_id == old.conversation_id
    await Message.get_pymongo_collection().update_one(
        {"_id": old.id}, {"$set": {"collected_at": utcnow() - MAX_AGE - timedelta(days=1)}}
    )
    await sweep(database, now=utcnow(), policy=POLICY)
    conversation = await Conversation.get(new.conversation_id)
    assert conversation is not None and conversation.message_count == 1
    stored = json.dumps(conversation.model_dump(mode="json"))
    assert "old-customer@example.org" not in stored
    assert conversation.first_message_at == new.sent_at


# --- 6. a restore during a sweep wins -------------------------------------------------------


async def test_a_restore_during_a_sweep_keeps_the_rest_and_the_account(
    database: Database, ann: Account
) -> None:
    now = utcnow()
    await request_erasure(account_id="ann", now=now)
    batches = 0

    async def restored_after_the_first_batch() -> None:
        nonlocal batches
        batches += 1
        if batches == 2:
            await restore(account_id="ann")

    report = await sweep(database, now=now, policy=POLICY,
                         before_batch=restored_after_the_first_batch)  # fmt: skip
    assert report.messages == POLICY.batch_size
    account = await Account.get("ann")
    assert account is not None and account.status is AccountStatus.ACTIVE
    assert account.purged_at is None and account.emails == ["ann@example.com"]
    assert (await content_of("ann"))[0] == 5 - POLICY.batch_size


async def test_a_restore_that_lands_inside_a_batch_transaction_wins(
    database: Database, ann: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The restore commits its account write while a batch's transaction is open (after the
    batch read the account), and is paused before it gives the messages back. The batch
    conflicts on the account, is retried, and its re-check of the account sees it restored.
    With the plain "still due" filter instead, the batch deletes what the restore is about to
    give back (its messages are still stamped due)."""
    now = utcnow()
    await request_erasure(account_id="ann", now=now)
    account_written, go_on = asyncio.Event(), asyncio.Event()
    monkeypatch.setattr(accounts, "Message", _PausedBeforeGivingBack(account_written, go_on))
    restoring: list[asyncio.Task[Account]] = []

    async def restore_lands_now() -> None:
        if not restoring:
            restoring.append(asyncio.create_task(restore(account_id="ann")))
            await asyncio.wait_for(account_written.wait(), timeout=10)

    report = await sweep(database, now=now, policy=POLICY, in_transaction=restore_lands_now)
    go_on.set()
    restored = await restoring[0]
    assert restored.status is AccountStatus.ACTIVE and restored.purged_at is None
    assert report.messages == 0
    assert await content_of("ann") == (5, 4), "the batch deleted what the restore gave back"


class _PausedBeforeGivingBack:
    """``Message`` as store.accounts sees it: a restore's write that gives the messages back
    (unrestricted) waits for ``go_on``, after saying it got there."""

    def __init__(self, reached: asyncio.Event, go_on: asyncio.Event) -> None:
        self.reached, self.go_on = reached, go_on

    def __getattr__(self, name: str) -> Any:
        return getattr(Message, name)

    def get_pymongo_collection(self) -> Any:
        return _PausedCollection(Message.get_pymongo_collection(), self)


class _PausedCollection:
    def __init__(self, real: Any, pause: _PausedBeforeGivingBack) -> None:
        self.real, self.pause = real, pause

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    async def update_many(self, query: Any, update: Any, **options: Any) -> Any:
        if update.get("$set", {}).get("restricted") is False:
            self.pause.reached.set()
            await self.pause.go_on.wait()
        return await self.real.update_many(query, update, **options)


# --- 8. the hold/sweep guard ----------------------------------------------------------------


async def test_a_hold_committed_while_a_batch_transaction_is_open_protects_what_it_covers(
    database: Database, ann: Account
) -> None:
    """The batch's transaction has read the holds (none) when the hold commits; its guard
    write then conflicts, the transaction is retried, and sees the hold. Without the guard
    writes this test fails: the batch deletes on its stale snapshot."""
    now = utcnow()
    await request_erasure(account_id="ann", now=now)
    placed: list[Hold] = []

    async def hold_commits_now() -> None:
        if not placed:
            placed.append(await place_hold(database, account_id="ann", conversation_id=None,
                                           **LEGAL))  # fmt: skip

    report = await sweep(database, now=now, policy=POLICY, in_transaction=hold_commits_now)
    assert placed and report.messages == 0
    assert await content_of("ann") == (5, 4)


async def test_a_conversation_hold_committed_while_a_batch_transaction_is_open_protects_it(
    database: Database, ann: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As above, for a hold on one conversation of the batch: it writes the conversation's
    guard only, so without the batch's guard write on its conversations this test fails."""
    now = utcnow()
    await request_erasure(account_id="ann", now=now)
    batches = _record_batches(monkeypatch)
    held: list[tuple[ObjectId, int]] = []

    async def hold_commits_now() -> None:
        if not held:
            conversation = batches[0][0].conversation_id
            count = await Message.find({"conversation_id": conversation}).count()
            held.append((conversation, count))
            await place_hold(database, account_id=None, conversation_id=conversation, **LEGAL)

    await sweep(database, now=now, policy=POLICY, in_transaction=hold_commits_now)
    [(conversation, count)] = held
    assert await Message.find({"conversation_id": conversation}).count() == count
    await sweep(database, now=now, policy=POLICY)  # the rest goes; the held conversation stays
    assert await Message.find({"account_id": "ann"}).count() == count


async def test_a_hold_committed_while_a_max_age_batch_transaction_is_open_protects_it(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The maximum-age path, with unlinked mail (no account guard to conflict on): a hold on
    the conversation of one message of the batch keeps that message."""
    kept = await email(message_id="<old-1@example.com>", sender="one@example.org", subject="a")
    gone = await email(message_id="<old-2@example.com>", sender="two@example.org", subject="b")
    assert kept.conversation_id != gone.conversation_id
    await Message.get_pymongo_collection().update_many(
        {}, {"$set": {"collected_at": utcnow() - MAX_AGE - timedelta(days=1)}}
    )
    batches = _record_batches(monkeypatch)
    placed: list[Hold] = []

    async def hold_commits_now() -> None:
        if not placed:
            assert {m.id for m in batches[0]} == {kept.id, gone.id}
            held = kept.conversation_id
            placed.append(await place_hold(database, account_id=None, conversation_id=held,
                                           **LEGAL))  # fmt: skip

    report = await sweep(database, now=utcnow(), policy=POLICY, in_transaction=hold_commits_now)
    assert placed and report.messages == 1
    assert await Message.get(kept.id) is not None, "the held message was deleted"
    assert await Message.get(gone.id) is None


def _record_batches(monkeypatch: pytest.MonkeyPatch) -> list[list[Any]]:
    """The batches the sweep reads, in order (a test's hook knows what the open one holds)."""
    batches: list[list[Any]] = []
    real = deletion.next_batch

    async def recorded(query: dict[str, Any], size: int, **options: Any) -> list[Any]:
        batch = await real(query, size, **options)
        batches.append(batch)
        return batch

    monkeypatch.setattr(deletion, "next_batch", recorded)
    return batches


# --- 9. held content is left out at a cost that does not grow with the hold ---------------


async def test_the_max_age_queries_do_not_grow_with_the_size_of_a_hold(
    database: Database,
) -> None:
    held = await chat("held", conversation="held-chat")
    conversation = held.conversation_id
    ancient = utcnow() - MAX_AGE - timedelta(days=10)
    document = held.model_dump(by_alias=True, exclude={"id"})
    await Message.get_pymongo_collection().insert_many(
        [document | {"dedup_key": f"held-{n}", "collected_at": ancient} for n in range(2_000)]
    )
    await place_hold(database, account_id=None, conversation_id=conversation, **LEGAL)
    await chat("old and free", conversation="free-chat")
    await Message.get_pymongo_collection().update_many(
        {"conversation_id": {"$ne": conversation}}, {"$set": {"collected_at": ancient}}
    )
    sizes = await _profiled_filter_sizes(database, sweep(database, now=utcnow(), policy=POLICY))
    assert sizes and max(sizes) < 2_000, f"a query carries {max(sizes)} bytes of filter"
    assert await Message.find({"conversation_id": conversation}).count() == 2_001


async def _profiled_filter_sizes(database: Database, work: Any) -> list[int]:
    await database.db.command({"profile": 2})
    try:
        await work
    finally:
        await database.db.command({"profile": 0})
    ops = database.db["system.profile"].find({"ns": f"{database.db.name}.messages", "op": "query"})
    return [len(json.dumps(op["command"].get("filter", {}), default=str)) async for op in ops]


# --- 12. lateness counts from when content became purgeable ---------------------------------


async def test_lateness_after_a_hold_release_counts_from_the_release(
    database: Database, ann: Account
) -> None:
    long_ago = utcnow() - timedelta(days=30)
    hold = await place_hold(database, account_id="ann", conversation_id=None, **LEGAL)
    await request_erasure(account_id="ann", now=long_ago)
    released = utcnow()
    assert hold.id is not None
    await release_hold(hold_id=hold.id, released_by="legal", reason="closed", now=released)
    late = await lateness(now=released + timedelta(seconds=30), policy=POLICY)
    assert 29 <= late <= 31, late


async def test_held_content_is_not_late(database: Database, ann: Account) -> None:
    await place_hold(database, account_id="ann", conversation_id=None, **LEGAL)
    await request_erasure(account_id="ann", now=utcnow() - timedelta(days=30))
    assert await lateness(now=utcnow(), policy=POLICY) == 0


async def test_many_held_accounts_do_not_hide_a_late_one(database: Database) -> None:
    """Held accounts keep their passed deadline (their content waits for the hold's end):
    however many come first, the late account behind them is seen."""
    now = utcnow()
    for n in range(25):
        await register_account(account_id=f"held-{n}", emails=[], name=None)
        await place_hold(database, account_id=f"held-{n}", conversation_id=None, **LEGAL)
        await chat("held", account_id=f"held-{n}", conversation=f"held-chat-{n}")
        await request_erasure(account_id=f"held-{n}", now=now - timedelta(hours=2))
    await register_account(account_id="late", emails=[], name=None)
    await chat("late", account_id="late", conversation="late-chat")
    await request_erasure(account_id="late", now=now - timedelta(hours=1))
    late = await lateness(now=now, policy=POLICY)
    assert 3599 <= late <= 3601, late


# --- races a review found (each forced at the exact interleaving) ---------------------------


async def test_a_restore_between_the_sweeps_read_and_its_stamp_wins(
    database: Database, ann: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    await mark_deleted(account_id="ann", deleted_at=utcnow() - GRACE - timedelta(hours=1),
                       grace=GRACE)  # fmt: skip
    real = retention.sweep.stamp_deleted_contents

    async def restored_first(accounts: list[Account]) -> None:
        await restore(account_id="ann")  # the platform restores just after the sweep read it
        await real(accounts)

    monkeypatch.setattr(retention.sweep, "stamp_deleted_contents", restored_first)
    await sweep(database, now=utcnow(), policy=POLICY)
    account = await Account.get("ann")
    assert account is not None and account.status is AccountStatus.ACTIVE
    assert await content_of("ann") == (5, 4), "the restored account's content was deleted"


async def test_content_that_lands_just_after_a_sweep_forgot_its_account_is_purged_later(
    database: Database, ann: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    await purged(database)
    real = messages.apply_link_terms

    async def sweep_before_the_insert(batch: list[Message]) -> None:
        await real(batch)  # the message takes the tombstone's deadline ...
        await sweep(database, now=utcnow(), policy=POLICY)  # ... a sweep concludes meanwhile

    monkeypatch.setattr(messages, "apply_link_terms", sweep_before_the_insert)
    late = await email(account_id="ann", message_id="<late@example.com>")
    monkeypatch.setattr(messages, "apply_link_terms", real)
    await sweep(database, now=utcnow() + timedelta(seconds=1), policy=POLICY)
    assert await Message.get(late.id) is None


async def test_a_sweep_killed_between_a_batch_and_its_conversations_leaves_them_to_the_next(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    await email(message_id="<a@example.com>", sender="old@example.org", subject="secret subject")
    await email(message_id="<b@example.com>", sender="old2@example.org", subject="other")
    await Message.get_pymongo_collection().update_many(
        {}, {"$set": {"collected_at": utcnow() - MAX_AGE - timedelta(days=1)}}
    )

    async def killed_before_settling(*args: Any) -> int:
        raise LeaseLost("purge-sweep")  # the process stops between a batch and its settling

    with monkeypatch.context() as patch:
        patch.setattr(deletion, "settle_pending_conversations", killed_before_settling)
        with pytest.raises(LeaseLost):
            await sweep(database, now=utcnow(), policy=POLICY)
    assert await Conversation.count() == 2  # their messages are gone, they are not yet
    await sweep(database, now=utcnow(), policy=POLICY)
    assert await Message.count() == 0
    assert await Conversation.count() == 0, "a conversation outlived its messages"


async def test_a_reply_racing_the_registration_of_its_account_is_linked_and_purged(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await email(message_id="<t1@example.com>", sender="bob@example.org")
    real = messages.insert_unless_stored

    async def registered_meanwhile(batch: list[Message]) -> set[str]:
        await register_account(account_id="bob", emails=["bob@example.org"], name="Bob")
        return await real(batch)

    monkeypatch.setattr(messages, "insert_unless_stored", registered_meanwhile)
    reply = await email(message_id="<t2@example.com>", in_reply_to="<t1@example.com>",
                        sender="bob@example.org")  # fmt: skip
    monkeypatch.setattr(messages, "insert_unless_stored", real)
    assert (await Message.get(reply.id)).account_id == "bob"  # type: ignore[union-attr]
    await request_erasure(account_id="bob", now=utcnow())
    await sweep(database, now=utcnow(), policy=POLICY)
    assert await Message.get(reply.id) is None
    assert await Conversation.get(first.conversation_id) is None
