"""Retention: what is due when (pure rules), what blocks it, the forecast, and the purge sweep.

The sweep is safe to kill at any point and to run from several processes (one at a time, by
a lease held by the caller): every step is idempotent or resumed from its purge record.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from beanie import PydanticObjectId
from pymongo.asynchronous.client_session import AsyncClientSession

from store.blobs import referenced
from store.database import Database
from store.documents import (
    Account,
    AccountStatus,
    Blob,
    BlobChunk,
    Conversation,
    Hold,
    Message,
    PurgeRecord,
    PurgeRule,
    utcnow,
)
from store.exports import remove_exports
from store.holds import active_holds_query, held_scopes

log = logging.getLogger("archive.purge")


@dataclass(frozen=True)
class RetentionPolicy:
    grace: timedelta
    max_age: timedelta
    secret_key: bytes
    batch_size: int = 500
    # A blob referenced this recently may be about to gain a message (ingest writes the blob,
    # then the message): it is left for a later sweep rather than deleted under that message.
    blob_quiet_period: timedelta = timedelta(minutes=5)


# --- pure rules -----------------------------------------------------------------------------


def subject_hmac(secret_key: bytes, account_id: str) -> str:
    """How a purge record names an account: verifiable by whoever knows the id, and nothing
    more (no email, no name)."""
    return hmac.new(secret_key, account_id.encode(), hashlib.sha256).hexdigest()


def deletion_deadline(*, deleted_at: datetime, grace: timedelta) -> datetime:
    return deleted_at + grace


def max_age_cutoff(*, now: datetime, max_age: timedelta) -> datetime:
    """Content collected before this is past the maximum age."""
    return now - max_age


def rule_for(account: Account) -> PurgeRule:
    return PurgeRule.ERASURE if account.erasure_requested_at else PurgeRule.ACCOUNT_DELETION


# --- the forecast ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ForecastItem:
    rule: PurgeRule
    due_at: datetime
    account_id: str | None
    messages: int
    held_messages: int
    blocked_by: list[str]  # hold ids


async def forecast(
    *, now: datetime, policy: RetentionPolicy, limit: int = 1000
) -> list[ForecastItem]:
    """What will be purged when, and what holds block: deleted accounts by deadline, then the
    content past (or next to pass) the maximum age."""
    items = []
    accounts = Account.find({"purge_due_at": {"$ne": None}, "purged_at": None}).sort(
        "+purge_due_at"
    )
    async for account in accounts.limit(limit):
        assert account.purge_due_at is not None
        items.append(await _account_item(account, now=now))
    items += await _max_age_items(now=now, policy=policy)
    return sorted(items, key=lambda item: item.due_at)


async def _account_item(account: Account, *, now: datetime) -> ForecastItem:
    conversations = [c.id async for c in Conversation.find({"account_id": account.id}) if c.id]
    held_accounts, held_conversations = await held_scopes(
        account_ids=[account.id], conversation_ids=conversations, now=now
    )
    blocked = await _blocking_hold_ids(account.id, held_conversations, now=now)
    total = await Message.find({"account_id": account.id}).count()
    if held_accounts:
        held = total
    elif held_conversations:
        held = await Message.find(
            {"account_id": account.id, "conversation_id": {"$in": list(held_conversations)}}
        ).count()
    else:
        held = 0
    assert account.purge_due_at is not None
    return ForecastItem(rule_for(account), account.purge_due_at, account.id, total, held, blocked)


async def _blocking_hold_ids(
    account_id: str, conversations: set[PydanticObjectId], *, now: datetime
) -> list[str]:
    scope = [{"account_id": account_id}, {"conversation_id": {"$in": sorted(conversations)}}]
    query = {"$and": [{"$or": scope}, active_holds_query(now)]}
    return [str(h.id) async for h in Hold.find(query)]


async def _max_age_items(*, now: datetime, policy: RetentionPolicy) -> list[ForecastItem]:
    cutoff = max_age_cutoff(now=now, max_age=policy.max_age)
    due = await Message.find({"collected_at": {"$lt": cutoff}}).count()
    items = []
    if due:
        items.append(ForecastItem(PurgeRule.MAX_AGE, now, None, due, 0, []))
    oldest = (
        await Message.find({"collected_at": {"$gte": cutoff}}).sort("+collected_at").first_or_none()
    )
    if oldest is not None:
        next_due = oldest.collected_at + policy.max_age
        count = (
            await Message.find(
                {"collected_at": {"$lt": oldest.collected_at + timedelta(days=1)}}
            ).count()
            - due
        )
        items.append(ForecastItem(PurgeRule.MAX_AGE, next_due, None, count, 0, []))
    return items


# --- the sweep ------------------------------------------------------------------------------


@dataclass
class SweepReport:
    accounts_purged: int = 0
    accounts_blocked: int = 0
    conversations: int = 0
    messages: int = 0
    blobs: int = 0
    bytes: int = 0
    # How long past its due time the most overdue purgeable item was when the sweep began.
    lateness_seconds: float = 0.0
    seconds: float = 0.0
    records: list[str] = field(default_factory=list)


BeforeBatch = Callable[[], Awaitable[None]]


async def _nothing() -> None:
    return None


async def sweep(
    database: Database,
    *,
    now: datetime,
    policy: RetentionPolicy,
    before_batch: BeforeBatch = _nothing,
) -> SweepReport:
    """One purge sweep: finish what an interrupted sweep left, purge every account past its
    deadline, then everything past the maximum age. Held content is never deleted."""
    started = time.perf_counter()
    report = SweepReport(lateness_seconds=await lateness(now=now, policy=policy))
    await _finish_pending_blobs(policy, report)
    due = Account.find({"purge_due_at": {"$lte": now}, "purged_at": None}).sort("+purge_due_at")
    async for account in due:
        await _purge_account(database, account, now=now, policy=policy, report=report,
                             before_batch=before_batch)  # fmt: skip
    await _purge_max_age(database, now=now, policy=policy, report=report, before_batch=before_batch)
    report.seconds = time.perf_counter() - started
    if report.messages or report.accounts_blocked:
        log.info(
            "sweep: %d messages, %d conversations, %d blobs purged; %d accounts purged, "
            "%d blocked by holds; %.2fs",
            report.messages, report.conversations, report.blobs, report.accounts_purged,
            report.accounts_blocked, report.seconds,
        )  # fmt: skip
    return report


async def lateness(*, now: datetime, policy: RetentionPolicy) -> float:
    """Seconds the most overdue (unheld) item is past due; 0 when nothing is overdue."""
    worst = 0.0
    account = (
        await Account.find({"purge_due_at": {"$lte": now}, "purged_at": None})
        .sort("+purge_due_at")
        .first_or_none()
    )
    if account is not None and account.purge_due_at is not None:
        held_accounts, _ = await held_scopes(account_ids=[account.id], conversation_ids=[], now=now)
        if not held_accounts:
            worst = (now - account.purge_due_at).total_seconds()
    cutoff = max_age_cutoff(now=now, max_age=policy.max_age)
    oldest = (
        await Message.find({"collected_at": {"$lt": cutoff}}).sort("+collected_at").first_or_none()
    )
    if oldest is not None:
        worst = max(worst, (cutoff - oldest.collected_at).total_seconds())
    return worst


async def _purge_account(
    database: Database,
    account: Account,
    *,
    now: datetime,
    policy: RetentionPolicy,
    report: SweepReport,
    before_batch: BeforeBatch,
) -> None:
    assert account.purge_due_at is not None
    held_accounts, _ = await held_scopes(account_ids=[account.id], conversation_ids=[], now=now)
    if held_accounts:
        report.accounts_blocked += 1
        return
    record = await _open_record(
        rule_for(account), account.purge_due_at, policy=policy, account_id=account.id, now=now
    )
    while True:
        _, held_conversations = await held_scopes(
            account_ids=[], conversation_ids=await _conversation_ids(account.id), now=now
        )
        query = {"account_id": account.id, "conversation_id": {"$nin": list(held_conversations)}}
        batch = await _next_batch(query, policy.batch_size)
        if not batch:
            break
        await before_batch()
        if not await _purge_batch(
            database, batch, record=record, now=now, policy=policy, report=report
        ):
            break  # everything left is held (a hold arrived during the sweep)
    report.conversations += await _drop_empty_conversations({"account_id": account.id}, record, now)
    if await Message.find({"account_id": account.id}).count() == 0:
        await _forget_account(account.id, now=now)
        report.accounts_purged += 1
    else:
        report.accounts_blocked += 1
    await _close_record(record, now=now, report=report)


async def _purge_max_age(
    database: Database,
    *,
    now: datetime,
    policy: RetentionPolicy,
    report: SweepReport,
    before_batch: BeforeBatch,
) -> None:
    cutoff = max_age_cutoff(now=now, max_age=policy.max_age)
    due = {"collected_at": {"$lt": cutoff}}
    if await Message.find(due).first_or_none() is None:
        return
    record = await _open_record(PurgeRule.MAX_AGE, cutoff, policy=policy, account_id=None, now=now)
    touched: set[PydanticObjectId] = set()
    held: set[PydanticObjectId] = set()  # messages a hold kept: not fetched again
    while True:
        batch = await _next_batch({**due, "_id": {"$nin": sorted(held)}}, policy.batch_size)
        if not batch:
            break
        await before_batch()
        await _purge_batch(database, batch, record=record, now=now, policy=policy,
                           report=report, subjects=True)  # fmt: skip
        touched |= {m.conversation_id for m in batch}
        held |= await _still_there(batch)
    report.conversations += await _drop_empty_conversations(
        {"_id": {"$in": sorted(touched)}}, record, now
    )
    await _close_record(record, now=now, report=report)


async def _still_there(batch: list[_Doomed]) -> set[PydanticObjectId]:
    ids = [m.id for m in batch]
    return {
        m["_id"]
        async for m in Message.get_pymongo_collection().find({"_id": {"$in": ids}}, {"_id": 1})
    }


async def _conversation_ids(account_id: str) -> list[PydanticObjectId]:
    return [
        c["_id"]
        async for c in Conversation.get_pymongo_collection().find(
            {"account_id": account_id}, {"_id": 1}
        )
    ]


@dataclass(frozen=True)
class _Doomed:
    """What the purge needs of a message it deletes (read without its content)."""

    id: PydanticObjectId
    account_id: str | None
    conversation_id: PydanticObjectId
    blobs: tuple[str, ...]


_DOOMED_FIELDS = {"account_id": 1, "conversation_id": 1, "raw.sha256": 1,
                  "attachments.sha256": 1}  # fmt: skip


async def _next_batch(query: dict[str, Any], size: int) -> list[_Doomed]:
    found = Message.get_pymongo_collection().find(query, _DOOMED_FIELDS).limit(size)
    return [_doomed(m) async for m in found]


def _doomed(message: dict[str, Any]) -> _Doomed:
    blobs = [a["sha256"] for a in message.get("attachments") or []]
    if message.get("raw"):
        blobs.append(message["raw"]["sha256"])
    return _Doomed(
        id=message["_id"],
        account_id=message.get("account_id"),
        conversation_id=message["conversation_id"],
        blobs=tuple(blobs),
    )


async def _purge_batch(
    database: Database,
    batch: list[_Doomed],
    *,
    record: PurgeRecord,
    now: datetime,
    policy: RetentionPolicy,
    report: SweepReport,
    subjects: bool = False,
) -> int:
    """Delete one batch of messages unless a hold covers them, checked inside the delete's
    transaction; then their blobs. Returns how many messages were deleted."""
    blobs = sorted({ref for m in batch for ref in m.blobs})
    await PurgeRecord.get_pymongo_collection().update_one(
        {"_id": record.id}, {"$addToSet": {"pending_blobs": {"$each": blobs}}}
    )  # before the delete: a crash after it leaves the blobs listed for the next sweep
    accounts = sorted({m.account_id for m in batch if m.account_id})
    conversations = sorted({m.conversation_id for m in batch})
    ids = [m.id for m in batch]

    def counted(deleted: int) -> dict[str, Any]:
        update: dict[str, Any] = {"$inc": {"counts.messages": deleted}}
        if subjects and accounts and deleted:
            hmacs = [subject_hmac(policy.secret_key, a) for a in accounts]
            update["$addToSet"] = {"subjects": {"$each": hmacs}}
        return update

    async def delete(session: AsyncClientSession) -> int:
        # Guard writes first: a hold placed after this transaction began makes it conflict and
        # retry (and see the hold); one placed later waits for it to commit.
        if accounts:
            await Account.get_pymongo_collection().update_many(
                {"_id": {"$in": accounts}}, {"$inc": {"guard": 1}}, session=session
            )
        await Conversation.get_pymongo_collection().update_many(
            {"_id": {"$in": conversations}}, {"$inc": {"guard": 1}}, session=session
        )
        held_accounts, held_conversations = await held_scopes(
            account_ids=accounts, conversation_ids=conversations, now=now, session=session
        )
        query: dict[str, Any] = {"_id": {"$in": ids}}
        if held_accounts:
            query["account_id"] = {"$nin": sorted(held_accounts)}
        if held_conversations:
            query["conversation_id"] = {"$nin": sorted(held_conversations)}
        result = await Message.get_pymongo_collection().delete_many(query, session=session)
        # Counted in the same transaction: the record and the deletion cannot disagree.
        await PurgeRecord.get_pymongo_collection().update_one(
            {"_id": record.id}, counted(result.deleted_count), session=session
        )
        return result.deleted_count

    async with database.client.start_session() as session:
        deleted: int = await session.with_transaction(delete)
    report.messages += deleted
    count, size = await _collect_blobs(blobs, record=record, policy=policy)
    report.blobs += count
    report.bytes += size
    await PurgeRecord.get_pymongo_collection().update_one(
        {"_id": record.id}, {"$inc": {"counts.blobs": count, "counts.bytes": size}}
    )
    return deleted


async def _collect_blobs(
    shas: list[str], *, record: PurgeRecord, policy: RetentionPolicy
) -> tuple[int, int]:
    """Delete the blobs no message references any more (chunks first), then strike them from
    the record's pending list. Returns (blobs deleted, bytes freed)."""
    count = size = 0
    quiet_since = utcnow() - policy.blob_quiet_period
    for sha in sorted(set(shas) - await referenced(shas)):
        # One by one: each blob is deleted only if it is still quiet at that moment.
        blob = await Blob.get_pymongo_collection().find_one_and_delete(
            {"_id": sha, "last_referenced_at": {"$lt": quiet_since}}, {"size": 1, "chunk_count": 1}
        )
        if blob is not None:
            if blob.get("chunk_count"):
                await BlobChunk.get_pymongo_collection().delete_many({"blob_id": sha})
            count += 1
            size += int(blob.get("size", 0))
    await PurgeRecord.get_pymongo_collection().update_one(
        {"_id": record.id}, {"$pullAll": {"pending_blobs": shas}}
    )
    return count, size


async def _finish_pending_blobs(policy: RetentionPolicy, report: SweepReport) -> None:
    """Blobs that an interrupted sweep deleted the messages of, but not yet checked."""
    async for record in PurgeRecord.find({"pending_blobs.0": {"$exists": True}}):
        count, size = await _collect_blobs(list(record.pending_blobs), record=record, policy=policy)
        report.blobs += count
        report.bytes += size


async def _drop_empty_conversations(
    scope: dict[str, Any], record: PurgeRecord, now: datetime
) -> int:
    dropped = 0
    async for conversation in Conversation.get_pymongo_collection().find(scope, {"_id": 1}):
        ident = conversation["_id"]
        if await Message.get_pymongo_collection().find_one({"conversation_id": ident}, {"_id": 1}):
            continue
        _, held = await held_scopes(account_ids=[], conversation_ids=[ident], now=now)
        if not held:
            result = await Conversation.get_pymongo_collection().delete_one({"_id": ident})
            dropped += result.deleted_count
    if dropped:
        await PurgeRecord.get_pymongo_collection().update_one(
            {"_id": record.id}, {"$inc": {"counts.conversations": dropped}}
        )
    return dropped


async def _forget_account(account_id: str, *, now: datetime) -> None:
    """All content is gone: its exports go too, and the account stays as a tombstone without
    its personal data."""
    await remove_exports({"account_id": account_id})
    await Account.get_pymongo_collection().update_one(
        {"_id": account_id},
        {"$set": {"purged_at": now, "emails": [], "name": None,
                  "status": AccountStatus.DELETED.value}},
    )  # fmt: skip


async def _open_record(
    rule: PurgeRule,
    due_at: datetime,
    *,
    policy: RetentionPolicy,
    account_id: str | None,
    now: datetime,
) -> PurgeRecord:
    """The purge's record: an unfinished one for the same purge is resumed, never doubled."""
    subject = subject_hmac(policy.secret_key, account_id) if account_id else None
    prefix = f"{rule.value}:{subject or 'any'}:{due_at.isoformat()}"
    unfinished = await PurgeRecord.find_one({"purge_key": {"$regex": f"^{re.escape(prefix)}:"},
                                             "done_at": None})  # fmt: skip
    if unfinished is not None:
        return unfinished
    earlier = await PurgeRecord.find({"purge_key": {"$regex": f"^{re.escape(prefix)}:"}}).count()
    record = PurgeRecord(
        subject_hmac=subject, subjects=[subject] if subject else [], rule=rule, due_at=due_at,
        started_at=now, purge_key=f"{prefix}:{earlier + 1}",
    )  # fmt: skip
    await record.insert()
    return record


async def _close_record(record: PurgeRecord, *, now: datetime, report: SweepReport) -> None:
    await PurgeRecord.get_pymongo_collection().update_one(
        {"_id": record.id}, {"$set": {"done_at": now}}
    )
    report.records.append(record.purge_key)


async def purge_records(*, secret_key: bytes, account_id: str) -> list[PurgeRecord]:
    """Whether and when the content of ``account_id`` was purged (by any rule)."""
    subject = subject_hmac(secret_key, account_id)
    return await PurgeRecord.find({"subjects": subject}).sort("-started_at").to_list()
