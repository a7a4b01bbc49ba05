"""Retention: what is due when (pure rules), what blocks it, the forecast, and the purge sweep.

The sweep is safe to kill at any point and to run from several processes (one at a time, by
a lease held by the caller): every step is idempotent or resumed from its purge record.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from beanie import PydanticObjectId
from pymongo import UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession

from exports.builder import remove_exports
from retention.holds import held_scopes
from retention.residue import Identifiers, Kind, Residue, scan, scan_many
from retention.rules import max_age_cutoff as max_age_cutoff
from retention.rules import subject_hmac as subject_hmac
from store.accounts import earliest_deadlines, stamp_deleted_contents
from store.audit import Subject, redact_accounts
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
    SpoolEntry,
    active_holds_query,
    utcnow,
)

log = logging.getLogger("archive.purge")


@dataclass(frozen=True)
class RetentionPolicy:
    grace: timedelta
    max_age: timedelta
    secret_key: bytes
    # Messages deleted per transaction: MongoDB's cost per deleted message (its eleven index
    # entries and the oplog) dominates beyond this; 500 swept 2,008 msg/s, 2,000 swept 2,468.
    batch_size: int = 2000
    # How many due accounts the sweep purges together: their holds, records, conclusions and
    # residue scans cost round trips per group, not per account (each keeps its own record).
    account_group: int = 200
    # A blob referenced this recently may be about to gain a message (ingest writes the blob,
    # then the message): it is left for a later sweep rather than deleted under that message.
    blob_quiet_period: timedelta = timedelta(minutes=5)
    # Where the service writes files (exports, journal): the residue scan searches them too.
    data_dir: Path | None = None
    # While deliveries wait to be filed, the sweep rests this long per second it worked:
    # 1.0 gives ingest half of the database between two batches, 0.5 a third.
    rest_per_work: float = 1.0


# --- rules (the pure ones are in store/rules.py) ---------------------------------------


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
    """What will be purged when, and what holds block: accounts with content under a deletion
    deadline (deleted ones, and what linked to a purged one since), then the content past (or
    next to pass) the maximum age."""
    items = []
    accounts = Account.find({"next_purge_at": {"$type": "date"}}).sort("+next_purge_at")
    async for account in accounts.limit(limit):
        items.append(await _account_item(account, now=now))
    items += await _max_age_items(now=now, policy=policy)
    return sorted(items, key=lambda item: item.due_at)


async def _account_item(account: Account, *, now: datetime) -> ForecastItem:
    assert account.next_purge_at is not None
    due = {"account_id": account.id, "purge_due_at": {"$type": "date"}}
    held_accounts, held_conversations = await held_scopes(
        account_ids=[account.id], conversation_ids=await _conversation_ids([account.id]), now=now
    )
    blocked = await _blocking_hold_ids(account.id, held_conversations, now=now)
    total = await Message.find(due).count()
    if held_accounts:
        held = total
    elif held_conversations:
        held = await Message.find(
            {**due, "conversation_id": {"$in": sorted(held_conversations)}}
        ).count()
    else:
        held = 0
    return ForecastItem(rule_for(account), account.next_purge_at, account.id, total, held, blocked)


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
    # How long past the moment it became purgeable (its deadline, or the end of the hold that
    # kept it) the most overdue purgeable item was when the sweep began.
    lateness_seconds: float = 0.0
    seconds: float = 0.0
    records: list[str] = field(default_factory=list)
    # Residue found after each purge of this sweep that is not explained by a hold.
    residue: int = 0


Hook = Callable[[], Awaitable[None]]
# The longest the sweep rests between two batches while ingest has work waiting.
MAX_REST_SECONDS = 1.0
# A long sweep says how far it is this often (counts only).
PROGRESS_SECONDS = 10.0
BeforeBatch = Hook


async def _nothing() -> None:
    return None


@dataclass
class _Run:
    """One sweep's context: its clock, policy, report and the test hooks."""

    database: Database
    now: datetime
    policy: RetentionPolicy
    report: SweepReport
    # Called before each batch (the scheduler renews its lease there) and inside each batch's
    # transaction once it has read the holds (tests pause there to race a hold against it).
    before_batch: Hook
    in_transaction: Hook
    # Waits until this process's search index no longer holds what was deleted (the purge is
    # not complete before: the residue scan then checks the index files).
    index_synced: Hook = _nothing
    started: float = field(default_factory=time.perf_counter)
    worked_since: float = field(default_factory=time.perf_counter)

    async def pace(self) -> None:
        """Ingest keeps its share: while deliveries wait to be filed (in any process's spool),
        the sweep rests ``rest_per_work`` of the time it has just worked, so that filing gets
        the database between two of its batches. An idle archive is swept at full speed, and
        a delivery that failed and waits for its retry does not slow the sweep down."""
        worked = time.perf_counter() - self.worked_since
        waiting = SpoolEntry.get_pymongo_collection().find_one({"attempts": 0}, {"_id": 1})
        if await waiting is not None:
            await _rest(min(worked * self.policy.rest_per_work, MAX_REST_SECONDS))
        self.worked_since = time.perf_counter()

    def clock(self) -> datetime:
        """The sweep's ``now`` advanced by the time it has run (records say when they ended)."""
        return self.now + timedelta(seconds=time.perf_counter() - self.started)


async def _rest(seconds: float) -> None:
    """The sweep standing aside for ingest (a function of its own, so that tests see it)."""
    await asyncio.sleep(seconds)


async def sweep(
    database: Database,
    *,
    now: datetime,
    policy: RetentionPolicy,
    before_batch: Hook = _nothing,
    in_transaction: Hook = _nothing,
    index_synced: Hook = _nothing,
) -> SweepReport:
    """One purge sweep: finish what an interrupted sweep left, purge the content of every
    account past its deadline, then everything past the maximum age. Held content is never
    deleted, and each purge's record carries the residue scan run right after it."""
    report = SweepReport(lateness_seconds=await lateness(now=now, policy=policy))
    run = _Run(database, now, policy, report, before_batch, in_transaction, index_synced)
    await _finish_pending(policy, report, now)
    due = await _due_accounts(now)
    logged = time.perf_counter()
    for start in range(0, len(due), policy.account_group):
        await run.pace()
        await _purge_accounts(run, due[start : start + policy.account_group])
        if time.perf_counter() - logged > PROGRESS_SECONDS:
            done = min(len(due), start + policy.account_group)
            log.info("sweep: %d of %d due accounts looked at, %d messages purged so far",
                     done, len(due), report.messages)  # fmt: skip
            logged = time.perf_counter()
    await _purge_max_age(run)
    report.seconds = time.perf_counter() - run.started
    if report.messages or report.accounts_blocked or report.residue:
        log.info(
            "sweep: %d messages, %d conversations, %d blobs purged; %d accounts purged, "
            "%d blocked by holds; %d residue; %.2fs",
            report.messages, report.conversations, report.blobs, report.accounts_purged,
            report.accounts_blocked, report.residue, report.seconds,
        )  # fmt: skip
    return report


def _due_now(now: datetime) -> dict[str, Any]:
    """The query for the accounts with something due by ``now``."""
    # $type lets the planner use the partial next_purge_at index: a bare $lte does not imply
    # its filter, and every sweep read and sorted every account of the archive.
    return {"next_purge_at": {"$lte": now, "$type": "date"}}


async def _due_accounts(now: datetime) -> list[str]:
    # Read first: the purge moves next_purge_at, and a cursor over that index would meet an
    # account again.
    due = Account.get_pymongo_collection().find(
        _due_now(now), {"_id": 1}, sort=[("next_purge_at", 1)]
    )
    return [a["_id"] async for a in due]


# How many of the earliest due accounts with purgeable content the lateness metric looks at.
LATENESS_ACCOUNTS = 20


async def lateness(*, now: datetime, policy: RetentionPolicy) -> float:
    """Seconds the most overdue purgeable item is past the moment it became purgeable (its
    deadline, or the end of a hold that kept it past it); 0 when nothing is overdue. Held
    content is not overdue."""
    worst = 0.0
    # Held accounts keep their passed deadline: they are left out (however many, they would
    # hide a late one), and an account whose due content is all in held conversations does
    # not count towards the earliest few looked at.
    held_accounts, _ = await _held_now(now)
    due = Account.find(_due_now(now) | {"_id": {"$nin": held_accounts}})
    looked_at = 0
    async for account in due.sort("+next_purge_at"):
        since = await _account_purgeable_since(account.id, now=now)
        if since is not None:
            worst = max(worst, (now - since).total_seconds())
            looked_at += 1
            if looked_at == LATENESS_ACCOUNTS:
                break
    since = await _max_age_purgeable_since(now=now, policy=policy)
    if since is not None:
        worst = max(worst, (now - since).total_seconds())
    return worst


async def _account_purgeable_since(account_id: str, *, now: datetime) -> datetime | None:
    conversations = await _conversation_ids([account_id])
    held_accounts, held_conversations = await held_scopes(
        account_ids=[account_id], conversation_ids=conversations, now=now
    )
    if held_accounts:
        return None
    oldest = await Message.get_pymongo_collection().find_one(
        {"account_id": account_id, "purge_due_at": {"$lte": now},
         "conversation_id": {"$nin": sorted(held_conversations)}},
        {"purge_due_at": 1, "conversation_id": 1}, sort=[("purge_due_at", 1)],
    )  # fmt: skip
    if oldest is None:
        return None
    ended = await _last_hold_end(account_id, oldest["conversation_id"], now=now)
    due: datetime = oldest["purge_due_at"]
    return max(due, ended) if ended else due


async def _max_age_purgeable_since(*, now: datetime, policy: RetentionPolicy) -> datetime | None:
    cutoff = max_age_cutoff(now=now, max_age=policy.max_age)
    held_accounts, held_conversations = await _held_now(now)
    oldest = await Message.get_pymongo_collection().find_one(
        _unheld({"collected_at": {"$lt": cutoff}}, held_accounts, held_conversations),
        {"collected_at": 1, "account_id": 1, "conversation_id": 1},
        sort=[("collected_at", 1), ("_id", 1)],
    )
    if oldest is None:
        return None
    due: datetime = oldest["collected_at"] + policy.max_age
    ended = await _last_hold_end(oldest.get("account_id"), oldest["conversation_id"], now=now)
    return max(due, ended) if ended else due


async def _last_hold_end(
    account_id: str | None, conversation_id: PydanticObjectId, *, now: datetime
) -> datetime | None:
    """When the last hold over this content ended (released or expired), if one did."""
    scope: list[dict[str, Any]] = [{"conversation_id": conversation_id}]
    if account_id:
        scope.append({"account_id": account_id})
    ended = {"$or": [{"released_at": {"$lte": now}}, {"expires_at": {"$lte": now}}]}
    ends = [
        min(t for t in (h.released_at, h.expires_at) if t is not None)
        async for h in Hold.find({"$and": [{"$or": scope}, ended]})
    ]
    return max(ends, default=None)


async def _held_now(now: datetime) -> tuple[list[str], list[PydanticObjectId]]:
    """The scopes of every active hold: a list as long as the holds, whatever they cover."""
    accounts: set[str] = set()
    conversations: set[PydanticObjectId] = set()
    async for hold in Hold.find(active_holds_query(now)):
        if hold.account_id:
            accounts.add(hold.account_id)
        if hold.conversation_id:
            conversations.add(hold.conversation_id)
    return sorted(accounts), sorted(conversations)


def _unheld(
    query: dict[str, Any], accounts: list[str], conversations: list[PydanticObjectId]
) -> dict[str, Any]:
    query = dict(query)
    if accounts:
        query["account_id"] = {"$nin": accounts}
    if conversations:
        query["conversation_id"] = {"$nin": conversations}
    return query


@dataclass
class _Purge:
    """One account's purge within a group: the account as the sweep read it, its record, and
    what identified its content (for the residue scan)."""

    account: Account
    record: PurgeRecord
    identifiers: Identifiers


def _is_due(account: Account, now: datetime) -> bool:
    return account.next_purge_at is not None and account.next_purge_at <= now


async def _purge_accounts(run: _Run, ids: list[str]) -> None:
    """Purge a group of due accounts together, each under its own record: the group's holds,
    records, message batches, conclusions and residue scans are read and written together,
    so that ten thousand small accounts cost round trips per group, not per account."""
    read = {a.id: a async for a in Account.find({"_id": {"$in": ids}})}
    accounts = [read[i] for i in ids if i in read and _is_due(read[i], run.now)]
    if not accounts:
        return
    await stamp_deleted_contents(accounts)
    held, _ = await held_scopes(account_ids=[a.id for a in accounts], conversation_ids=[],
                                now=run.now)  # fmt: skip
    run.report.accounts_blocked += sum(a.id in held for a in accounts)
    accounts = [a for a in accounts if a.id not in held]
    if not accounts:
        return
    records = await _open_records(
        [(rule_for(a), _deadline(a), a.id) for a in accounts], policy=run.policy, now=run.now
    )
    purges = {
        a.id: _Purge(a, r, Identifiers.of_account(a))
        for a, r in zip(accounts, records, strict=True)
    }
    await _delete_due_content(run, purges)
    deleted = sorted(i for i, p in purges.items() if p.account.status is AccountStatus.DELETED)
    if deleted:  # and conversations left empty by a crash
        run.report.conversations += await _settle_conversations(
            {"account_id": {"$in": deleted}}, lambda c: purges[c["account_id"]].record, run.now
        )
    await _conclude(run, list(purges.values()))
    await _close_records(run, [(p.record, p.identifiers) for p in purges.values()])


def _deadline(account: Account) -> datetime:
    assert account.next_purge_at is not None
    return account.next_purge_at


async def _delete_due_content(run: _Run, purges: dict[str, _Purge]) -> None:
    """The group's due messages, in batches across its accounts, leaving out held
    conversations. An account of which a batch deleted nothing is left alone from then on:
    what remains of it is held (a hold arrived) or no longer due (it was restored)."""
    due = {"purge_due_at": {"$lte": run.now}}
    going = set(purges)
    while going:
        scope = sorted(going)
        _, held_conversations = await held_scopes(
            account_ids=[], conversation_ids=await _conversation_ids(scope), now=run.now
        )
        query = {"account_id": {"$in": scope}, **due,
                 "conversation_id": {"$nin": sorted(held_conversations)}}  # fmt: skip
        batch = await _next_batch(query, run.policy.batch_size)
        if not batch:
            break
        await run.pace()
        await run.before_batch()
        for message in batch:
            purges[str(message.account_id)].identifiers.add([message])
        went = await _purge_batch(run, batch, record_of=lambda m: purges[str(m.account_id)].record,
                                  still_due=due, deletions=True)  # fmt: skip
        going -= {str(m.account_id) for m in batch if not went[m.account_id]}


async def _conclude(run: _Run, purges: list[_Purge]) -> None:
    """Write what the purge concluded about each account, unless something linked content to
    it, deleted, erased or restored it meanwhile (then the next sweep looks again): its next
    deadline, and, once a deleted account has no content left, its tombstone."""
    ids = [p.account.id for p in purges]
    remaining = await earliest_deadlines(ids)
    holding = await _accounts_with_content(ids)
    forgotten = await _forget_accounts(
        run.database,
        [p.account for p in purges
         if p.account.status is AccountStatus.DELETED and p.account.id not in holding],
        now=run.now,
    )  # fmt: skip
    await Account.get_pymongo_collection().bulk_write([
        UpdateOne({"_id": p.account.id, "links": p.account.links},
                  {"$set": {"next_purge_at": remaining.get(p.account.id)}})
        for p in purges
    ], ordered=False)  # fmt: skip
    for p in purges:
        due = remaining.get(p.account.id)
        if p.account.id in forgotten:
            run.report.accounts_purged += 1
        elif due is not None and due <= run.now:
            run.report.accounts_blocked += 1


async def _accounts_with_content(account_ids: list[str]) -> set[str]:
    found = await Message.get_pymongo_collection().aggregate([
        {"$match": {"account_id": {"$in": account_ids}}},
        {"$group": {"_id": "$account_id"}},
    ])  # fmt: skip
    return {g["_id"] async for g in found}


async def _purge_max_age(run: _Run) -> None:
    cutoff = max_age_cutoff(now=run.now, max_age=run.policy.max_age)
    due = {"collected_at": {"$lt": cutoff}}
    if await Message.find(due).first_or_none() is None:
        return
    [record] = await _open_records([(PurgeRule.MAX_AGE, cutoff, None)], policy=run.policy,
                                   now=run.now)  # fmt: skip
    identifiers = Identifiers()
    # Held content is left out by the scopes of the holds (a list as long as the holds, not as
    # the content they keep), and passed over once by walking in (collected_at, _id) order.
    scope = _unheld(due, *await _held_now(run.now))
    after: _Doomed | None = None
    while batch := await _next_batch(_after(scope, after), run.policy.batch_size, oldest=True):
        await run.pace()
        await run.before_batch()
        identifiers.add(batch)
        await _purge_batch(run, batch, record_of=lambda _: record, still_due=due, subjects=True)
        after = batch[-1]
    await _close_records(run, [(record, identifiers)])


def _after(query: dict[str, Any], last: _Doomed | None) -> dict[str, Any]:
    if last is None:
        return query
    later = {"$or": [{"collected_at": {"$gt": last.collected_at}},
                     {"collected_at": last.collected_at, "_id": {"$gt": last.id}}]}  # fmt: skip
    return {"$and": [query, later]}


async def _conversation_ids(account_ids: list[str]) -> list[PydanticObjectId]:
    found = Conversation.get_pymongo_collection().find(
        {"account_id": {"$in": account_ids}}, {"_id": 1}
    )
    return [c["_id"] async for c in found]


@dataclass(frozen=True)
class _Doomed:
    """What the purge needs of a message it deletes (read without its content)."""

    id: PydanticObjectId
    account_id: str | None
    conversation_id: PydanticObjectId
    blobs: tuple[str, ...]
    collected_at: datetime | None = None


_DOOMED_FIELDS = {"account_id": 1, "conversation_id": 1, "raw.sha256": 1,
                  "attachments.sha256": 1, "collected_at": 1}  # fmt: skip


async def _next_batch(query: dict[str, Any], size: int, *, oldest: bool = False) -> list[_Doomed]:
    found = Message.get_pymongo_collection().find(query, _DOOMED_FIELDS).limit(size)
    if oldest:
        found = found.sort([("collected_at", 1), ("_id", 1)])
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
        collected_at=message.get("collected_at"),
    )


async def _purge_batch(
    run: _Run,
    batch: list[_Doomed],
    *,
    record_of: Callable[[_Doomed], PurgeRecord],
    still_due: dict[str, Any],
    subjects: bool = False,
    deletions: bool = False,
) -> Counter[str | None]:
    """Delete one batch of messages that are still due (``still_due``), that no hold covers
    and, for the deletion of accounts (``deletions``), whose account is still deleted (a
    restore since wins), all checked inside the delete's transaction; then their blobs, and
    their conversations are settled. Each message counts on its purge's record
    (``record_of``). Returns how many messages of each account were deleted."""
    records = {record_of(m).id: record_of(m) for m in batch}
    mine: dict[Any, list[_Doomed]] = {}
    for m in batch:
        mine.setdefault(record_of(m).id, []).append(m)
    accounts = sorted({m.account_id for m in batch if m.account_id})
    conversations = sorted({m.conversation_id for m in batch})
    # Listed before the delete: a crash after it leaves them for the next sweep.
    await PurgeRecord.get_pymongo_collection().bulk_write([
        UpdateOne({"_id": key}, {"$addToSet": {
            "pending_blobs": {"$each": sorted({b for m in messages for b in m.blobs})},
            "pending_conversations": {"$each": sorted({m.conversation_id for m in messages})},
        }})
        for key, messages in mine.items()
    ], ordered=False)  # fmt: skip
    ids = [m.id for m in batch]
    record_of_message = {m.id: record_of(m).id for m in batch}

    def counted(gone: list[dict[str, Any]]) -> list[UpdateOne]:
        per_record: dict[Any, list[dict[str, Any]]] = {}
        for m in gone:
            per_record.setdefault(record_of_message[m["_id"]], []).append(m)
        updates = []
        for record_id, messages in per_record.items():
            update: dict[str, Any] = {"$inc": {"counts.messages": len(messages)}}
            named = sorted({m["account_id"] for m in messages if m.get("account_id")})
            if subjects and named:
                hmacs = [subject_hmac(run.policy.secret_key, a) for a in named]
                update["$addToSet"] = {"subjects": {"$each": hmacs}}
            updates.append(UpdateOne({"_id": record_id}, update))
        return updates

    async def delete(session: AsyncClientSession) -> list[dict[str, Any]]:
        # The holds are read first, which fixes the transaction's snapshot; then the guard
        # writes: a hold committed after that snapshot wrote the same guard, so this
        # transaction conflicts and is retried (and sees the hold); a hold placed later waits
        # for this one to commit.
        held_accounts, held_conversations = await held_scopes(
            account_ids=accounts, conversation_ids=conversations, now=run.now, session=session
        )
        still: dict[str, Any] | None = still_due
        if deletions:
            still = await _still_deleted(accounts, still_due, session)
        await run.in_transaction()
        if still is None:
            return []  # restored (or registered again) since: nothing of them goes
        if accounts:
            await Account.get_pymongo_collection().update_many(
                {"_id": {"$in": accounts}}, {"$inc": {"guard": 1}}, session=session
            )
        await Conversation.get_pymongo_collection().update_many(
            {"_id": {"$in": conversations}}, {"$inc": {"guard": 1}}, session=session
        )
        query = _unheld({"_id": {"$in": ids}, **still}, sorted(held_accounts),
                        sorted(held_conversations))  # fmt: skip
        messages = Message.get_pymongo_collection()
        # Read, then deleted by id, in one snapshot: what the records count is what went.
        gone = await messages.find(query, {"account_id": 1}, session=session).to_list()
        if not gone:
            return []
        await messages.delete_many({"_id": {"$in": [m["_id"] for m in gone]}}, session=session)
        # Counted in the same transaction: the records and the deletion cannot disagree.
        await PurgeRecord.get_pymongo_collection().bulk_write(counted(gone), session=session)
        return gone

    async with run.database.client.start_session() as session:
        gone: list[dict[str, Any]] = await session.with_transaction(delete)
    run.report.messages += len(gone)
    for key, messages in mine.items():
        shas = sorted({b for m in messages for b in m.blobs})
        if shas:
            count, size = await _collect_blobs(shas, record=records[key], policy=run.policy)
            run.report.blobs += count
            run.report.bytes += size
    conversation_record = {m.conversation_id: record_of(m) for m in batch}
    run.report.conversations += await _settle_pending_conversations(conversation_record, run.now)
    return Counter(m.get("account_id") for m in gone)


async def _still_deleted(
    account_ids: list[str], still_due: dict[str, Any], session: AsyncClientSession
) -> dict[str, Any] | None:
    """``still_due`` narrowed to what the accounts' deletions may take now, as the accounts
    are in this transaction: all of an account's while it is deleted; once restored (or
    registered again), only what linked to a previous life (due before this life began);
    else nothing of it. None: nothing of any of them."""
    deleted: list[str] = []
    earlier_lives: list[dict[str, Any]] = []
    found = Account.get_pymongo_collection().find(
        {"_id": {"$in": account_ids}}, {"status": 1, "life_started_at": 1}, session=session
    )
    async for account in found:
        if account["status"] == AccountStatus.DELETED.value:
            deleted.append(account["_id"])
        elif account.get("life_started_at") is not None:
            earlier_lives.append({"account_id": account["_id"],
                                  "purge_due_at": {"$lt": account["life_started_at"]}})  # fmt: skip
    takes = ([{"account_id": {"$in": deleted}}] if deleted else []) + earlier_lives
    if not takes:
        return None
    return {"$and": [still_due, {"$or": takes}]}


async def _settle_pending_conversations(
    conversations: dict[PydanticObjectId, PurgeRecord], now: datetime
) -> int:
    """Settle the conversations a batch touched (each listed on the record of the purge that
    touched it), then strike them from the records' pending lists (a crash in between leaves
    them for the next sweep)."""
    if not conversations:
        return 0
    dropped = await _settle_conversations(
        {"_id": {"$in": sorted(conversations)}}, lambda c: conversations[c["_id"]], now
    )
    listed: dict[Any, list[PydanticObjectId]] = {}
    for ident, record in conversations.items():
        listed.setdefault(record.id, []).append(ident)
    await PurgeRecord.get_pymongo_collection().bulk_write([
        UpdateOne({"_id": record_id}, {"$pullAll": {"pending_conversations": sorted(ids)}})
        for record_id, ids in listed.items()
    ], ordered=False)  # fmt: skip
    return dropped


async def _collect_blobs(
    shas: list[str], *, record: PurgeRecord, policy: RetentionPolicy
) -> tuple[int, int]:
    """Delete the blobs no message references any more (chunks first), count them on the
    record, and strike from its pending list those that are settled: deleted, gone, or still
    referenced. A blob referenced too recently stays pending for a later sweep (never
    forgotten). Returns (blobs deleted, bytes freed)."""
    count = size = 0
    quiet_since = utcnow() - policy.blob_quiet_period
    settled = await referenced(shas)
    for sha in sorted(set(shas) - settled):
        # One by one: each blob is deleted only if it is still quiet at that moment.
        blob = await Blob.get_pymongo_collection().find_one_and_delete(
            {"_id": sha, "last_referenced_at": {"$lt": quiet_since}}, {"size": 1, "chunk_count": 1}
        )
        if blob is not None:
            if blob.get("chunk_count"):
                await BlobChunk.get_pymongo_collection().delete_many({"blob_id": sha})
            count += 1
            size += int(blob.get("size", 0))
            settled.add(sha)
        elif await Blob.get_pymongo_collection().find_one({"_id": sha}, {"_id": 1}) is None:
            settled.add(sha)  # removed by another sweep or by housekeeping
    await PurgeRecord.get_pymongo_collection().update_one(
        {"_id": record.id},
        {"$pullAll": {"pending_blobs": sorted(settled)},
         "$inc": {"counts.blobs": count, "counts.bytes": size}},
    )  # fmt: skip
    return count, size


async def _finish_pending(policy: RetentionPolicy, report: SweepReport, now: datetime) -> None:
    """What an earlier sweep left: blobs whose messages it deleted but that it could not
    remove yet (it was interrupted, or they were referenced within the quiet period), and
    conversations it was interrupted before settling; counted on their record."""
    # $type: what the partial indexes of pending records hold (a record with at least one)
    async for record in PurgeRecord.find({"pending_blobs": {"$type": "string"}}):
        pending = list(record.pending_blobs)
        count, size = await _collect_blobs(pending, record=record, policy=policy)
        report.blobs += count
        report.bytes += size
        await _recheck_blobs(record, pending, policy=policy, now=now)
    async for record in PurgeRecord.find({"pending_conversations": {"$type": "objectId"}}):
        report.conversations += await _settle_pending_conversations(
            dict.fromkeys(record.pending_conversations, record), now
        )


_BLOB_PLACES = {"blobs", "blob_chunks"}


async def _recheck_blobs(
    record: PurgeRecord, blobs: list[str], *, policy: RetentionPolicy, now: datetime
) -> None:
    """Once the blobs a closed record left pending are settled, its certificate's blob lines
    are those of a scan of them now (the rest of its scan stands: they were all that was still
    to go), so that it no longer says "pending" of what is gone."""
    settled: dict[str, Any] = {"_id": record.id, "pending_blobs": [],
                               "residue": {"$type": "object"}}  # fmt: skip
    if record.residue is None or not await PurgeRecord.find(settled).count():
        return
    fresh = await scan(Identifiers(blobs=set(blobs)), now=now,
                       quiet_period=policy.blob_quiet_period)  # fmt: skip
    findings = [f for f in record.residue["findings"] if f["place"] not in _BLOB_PLACES]
    findings += fresh.as_record()["findings"]
    unexplained = sum(f["count"] for f in findings if f["kind"] == Kind.RESIDUE.value)
    await PurgeRecord.get_pymongo_collection().update_one(settled, {"$set": {
        "residue.findings": findings, "residue.residue": unexplained,
        "residue.clean": unexplained == 0, "residue.rechecked_at": now,
    }})  # fmt: skip


async def _settle_conversations(
    scope: dict[str, Any], record_of: Callable[[dict[str, Any]], PurgeRecord], now: datetime
) -> int:
    """After a purge: drop the conversations left empty (unless held), and give the others the
    metadata of the messages they still hold (the purged ones' addresses, counts and times go
    with them); each dropped one counts on its purge's record (``record_of`` the
    conversation). Returns how many were dropped."""
    conversations = await Conversation.get_pymongo_collection().find(scope).to_list()
    if not conversations:
        return 0
    ids = [c["_id"] for c in conversations]
    remaining: dict[Any, list[dict[str, Any]]] = {ident: [] for ident in ids}
    found = Message.get_pymongo_collection().find(
        {"conversation_id": {"$in": ids}},
        {"conversation_id": 1, "participants": 1, "author.email": 1, "sent_at": 1, "subject": 1},
    ).sort([("conversation_id", 1), ("sent_at", 1)])  # fmt: skip
    async for message in found:
        remaining[message["conversation_id"]].append(message)
    recounts = [_recount(c, remaining[c["_id"]]) for c in conversations if remaining[c["_id"]]]
    if recounts:
        await Conversation.get_pymongo_collection().bulk_write(recounts, ordered=False)
    empty = [c for c in conversations if not remaining[c["_id"]]]
    _, held = await held_scopes(account_ids=[], conversation_ids=[c["_id"] for c in empty],
                                now=now)  # fmt: skip
    going = [c for c in empty if c["_id"] not in held]
    if not going:
        return 0
    result = await Conversation.get_pymongo_collection().delete_many(
        {"_id": {"$in": [c["_id"] for c in going]}}
    )
    dropped: Counter[Any] = Counter(record_of(c).id for c in going)
    await PurgeRecord.get_pymongo_collection().bulk_write([
        UpdateOne({"_id": record_id}, {"$inc": {"counts.conversations": count}})
        for record_id, count in dropped.items()
    ], ordered=False)  # fmt: skip
    return int(result.deleted_count)


def _recount(conversation: dict[str, Any], remaining: list[dict[str, Any]]) -> UpdateOne:
    present = {p for m in remaining for p in m.get("participants") or []}
    present |= {m["author"]["email"] for m in remaining if (m.get("author") or {}).get("email")}
    return UpdateOne(
        {"_id": conversation["_id"]},
        {"$set": {
            "message_count": len(remaining),
            "first_message_at": remaining[0]["sent_at"],
            "last_message_at": remaining[-1]["sent_at"],
            "participants": sorted(set(conversation.get("participants") or []) & present),
            "customer_emails": sorted(set(conversation.get("customer_emails") or []) & present),
            "subject": remaining[0].get("subject"),
        }},
    )  # fmt: skip


async def _forget_accounts(
    database: Database, accounts: list[Account], *, now: datetime
) -> set[str]:
    """All content of these deleted accounts is gone: each stays as a tombstone without its
    personal data (its id stays a retention subject), its exports go, and the audit trail's
    free text that named it (by id, address or name, as captured before the tombstone) is
    redacted. Only an account still as the sweep read it and still deleted (a restore during
    the sweep wins). Returns the ids of those forgotten now."""
    if not accounts:
        return set()
    unchanged = [{"_id": a.id, "links": a.links, "status": AccountStatus.DELETED.value}
                 for a in accounts]  # fmt: skip
    not_yet = {"$or": [{"purged_at": {"$ne": now}}, {"emails": {"$ne": []}},
                       {"name": {"$ne": None}}]}  # fmt: skip
    collection = Account.get_pymongo_collection()

    async def tombstone(session: AsyncClientSession) -> list[str]:
        # Read and written in one snapshot: exactly those read are the ones changed now.
        found = collection.find({"$and": [{"$or": unchanged}, not_yet]}, {"_id": 1},
                                session=session)  # fmt: skip
        ids = [a["_id"] async for a in found]
        if ids:
            await collection.update_many(
                {"_id": {"$in": ids}}, {"$set": {"purged_at": now, "emails": [], "name": None}},
                session=session,
            )  # fmt: skip
        return ids

    async with database.client.start_session() as session:
        forgotten = set(await session.with_transaction(tombstone))
    if forgotten:
        await remove_exports({"account_id": {"$in": sorted(forgotten)}})
        await redact_accounts([Subject(account_id=a.id, emails=a.emails, name=a.name)
                               for a in accounts if a.id in forgotten])  # fmt: skip
    return forgotten


async def _open_records(
    purges: list[tuple[PurgeRule, datetime, str | None]],
    *,
    policy: RetentionPolicy,
    now: datetime,
) -> list[PurgeRecord]:
    """The records of these purges (rule, deadline, account), in their order: an unfinished
    one for the same purge is resumed, never doubled; the new ones are inserted together."""
    prefixes = []
    for rule, due_at, account_id in purges:
        subject = subject_hmac(policy.secret_key, account_id) if account_id else None
        prefixes.append((f"{rule.value}:{subject or 'any'}:{due_at.isoformat()}", subject))
    earlier: Counter[str] = Counter()
    unfinished: dict[str, PurgeRecord] = {}
    found_records = PurgeRecord.get_pymongo_collection().find(
        records_of_purges([prefix for prefix, _ in prefixes])
    )
    async for doc in found_records:
        found = PurgeRecord.model_validate(doc)
        prefix = found.purge_key.rsplit(":", 1)[0]
        earlier[prefix] += 1
        if found.done_at is None:
            unfinished[prefix] = found
    records, new = [], []
    for (rule, due_at, _), (prefix, subject) in zip(purges, prefixes, strict=True):
        record = unfinished.get(prefix)
        if record is None:
            record = PurgeRecord(
                id=PydanticObjectId(), subject_hmac=subject,
                subjects=[subject] if subject else [], rule=rule, due_at=due_at,
                started_at=now, purge_key=f"{prefix}:{earlier[prefix] + 1}",
            )  # fmt: skip
            new.append(record)
        records.append(record)
    if new:
        await PurgeRecord.insert_many(new)
    return records


def records_of_purges(prefixes: Sequence[str]) -> dict[str, Any]:
    """The query for the records of these purges: every ``purge_key`` that is a prefix, ":"
    and a number, one range of the unique index per prefix."""
    # Not anchored regular expressions: the driver sends Python's with the "u" flag, and with
    # any flag but "m" or "x" mongod reads the whole index instead of the prefix's range (a
    # group's lookup cost grew with every record ever written). ";" follows ":" in ASCII, so
    # the range holds exactly the keys that start with the prefix and ":".
    return {"$or": [{"purge_key": {"$gte": f"{prefix}:", "$lt": f"{prefix};"}}
                    for prefix in prefixes]}  # fmt: skip


async def _close_records(run: _Run, closing: list[tuple[PurgeRecord, Identifiers]]) -> None:
    """Each record ends with when it ended and what the residue scan found right after (one
    scan of the group's places for all of them)."""
    await run.index_synced()
    residues = await scan_many([identifiers for _, identifiers in closing], now=run.now,
                               quiet_period=run.policy.blob_quiet_period,
                               data_dir=run.policy.data_dir)  # fmt: skip
    done_at = run.clock()
    await PurgeRecord.get_pymongo_collection().bulk_write([
        UpdateOne({"_id": record.id},
                  {"$set": {"done_at": done_at, "residue": residue.as_record()}})
        for (record, _), residue in zip(closing, residues, strict=True)
    ], ordered=False)  # fmt: skip
    for (record, _), residue in zip(closing, residues, strict=True):
        run.report.residue += residue.unexplained
        run.report.records.append(record.purge_key)


async def purge_records(*, secret_key: bytes, account_id: str) -> list[PurgeRecord]:
    """Whether and when the content of ``account_id`` was purged (by any rule)."""
    subject = subject_hmac(secret_key, account_id)
    return await PurgeRecord.find({"subjects": subject}).sort("-started_at").to_list()


async def verify_purge(
    *,
    account_id: str,
    emails: list[str],
    names: list[str],
    now: datetime,
    policy: RetentionPolicy,
) -> Residue:
    """The residue scan on demand: what of this account (by its id, and by the addresses and
    names given: a tombstone keeps none) remains anywhere the service keeps data."""
    account = await Account.get(account_id)
    identifiers = Identifiers(account_id=account_id, emails={e.lower() for e in emails},
                              names=set(names))  # fmt: skip
    if account is not None:
        identifiers.emails |= set(account.emails)
        identifiers.names |= {account.name} if account.name else set()
    # Mail that only shares an address and arrived after the purge is not the purged content.
    captured = account.purged_at if account is not None and account.purged_at else now
    return await scan(identifiers, now=now, quiet_period=policy.blob_quiet_period,
                      data_dir=policy.data_dir, captured_at=captured)  # fmt: skip
