"""The purge sweep, step by step. ``sweep`` runs, in this order:

1. ``_finish_pending``: what an interrupted sweep left (blobs and conversations its records
   list as pending) is finished, and those records' certificates brought up to date;
2. ``_purge_accounts``, for each group of due accounts (``forecast.due_now``): content that
   linked late gets its deadline, held accounts are left, each purge's record is opened
   (``records.open_records``), the due messages go batch by batch (``_delete_due_content``,
   each batch through ``deletion.purge_batch``), emptied conversations are settled, and
   ``_conclude`` writes each account's next deadline or, once nothing of it is left, its
   tombstone (``_forget_accounts``: exports removed, audit free text redacted);
3. ``_purge_max_age``: everything collected longer ago than the maximum age, held content
   left out;

and each purge's record is closed with the residue scan run right after it (``_close_records``).

The sweep is safe to kill at any point and to run from several processes (one at a time, by
a lease held by the caller): every step is idempotent or resumed from its purge record. While
deliveries wait to be filed, it rests between batches so that ingest keeps its share.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pymongo import UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession

from exports.builder import remove_exports
from retention import deletion
from retention.deletion import Doomed, Hook, Purged
from retention.forecast import conversation_ids, due_now, lateness
from retention.holds import held_now, held_scopes, redact_trail, unheld
from retention.records import open_records
from retention.residue import Identifiers, Kind, Verdict, scan, scan_many, verdict_of
from retention.rules import RetentionPolicy, max_age_cutoff, rule_for
from store.accounts import earliest_deadlines, stamp_deleted_contents
from store.audit import Subject, redact_accounts
from store.database import Database
from store.documents import (
    Account,
    AccountStatus,
    Message,
    PurgeRecord,
    PurgeRule,
    SpoolEntry,
    utcnow,
)
from store.subjects import address_hashes

log = logging.getLogger("archive.purge")


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


# The longest the sweep rests between two batches while ingest has work waiting.
MAX_REST_SECONDS = 1.0
# A long sweep says how far it is this often (counts only).
PROGRESS_SECONDS = 10.0


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

    async def purge(
        self,
        batch: list[Doomed],
        *,
        record_of: Callable[[Doomed], PurgeRecord],
        still_due: dict[str, Any],
        subjects: bool = False,
        deletions: bool = False,
    ) -> Purged:
        """One batch through ``deletion.purge_batch``, counted on the report."""
        purged = await deletion.purge_batch(
            self.database, batch, now=self.now, policy=self.policy, record_of=record_of,
            still_due=still_due, in_transaction=self.in_transaction, subjects=subjects,
            deletions=deletions,
        )  # fmt: skip
        self.report.messages += purged.messages
        self.report.blobs += purged.blobs
        self.report.bytes += purged.bytes
        self.report.conversations += purged.conversations
        return purged

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


async def _due_accounts(now: datetime) -> list[str]:
    # Read first: the purge moves next_purge_at, and a cursor over that index would meet an
    # account again.
    due = Account.get_pymongo_collection().find(
        due_now(now), {"_id": 1}, sort=[("next_purge_at", 1)]
    )
    return [a["_id"] async for a in due]


# --- 1. what an interrupted sweep left ------------------------------------------------------------


async def _finish_pending(policy: RetentionPolicy, report: SweepReport, now: datetime) -> None:
    """What an earlier sweep left: blobs whose messages it deleted but that it could not
    remove yet (it was interrupted, or they were referenced within the quiet period), and
    conversations it was interrupted before settling; counted on their record."""
    # $type: what the partial indexes of pending records hold (a record with at least one)
    async for record in PurgeRecord.find({"pending_blobs": {"$type": "string"}}):
        pending = list(record.pending_blobs)
        count, size = await deletion.collect_blobs(pending, record=record, policy=policy)
        report.blobs += count
        report.bytes += size
        await _recheck_blobs(record, pending, policy=policy, now=now)
    async for record in PurgeRecord.find({"pending_conversations": {"$type": "objectId"}}):
        report.conversations += await deletion.settle_pending_conversations(
            dict.fromkeys(record.pending_conversations, record), now
        )
    await _recheck_indexes(policy=policy, now=now)


_BLOB_PLACES = {"blobs", "blob_chunks"}
_INDEX_PLACE = "search index"
# Closed certificates still pending on a search index, rechecked per sweep.
RECHECKED_PER_SWEEP = 1000


async def _recheck_indexes(*, policy: RetentionPolicy, now: datetime) -> None:
    """A closed certificate that was pending on search indexes (this process's files, or
    another process's index not compacted yet) gets those lines from the registry as it is
    now: every index reports whether its files hold deleted documents, so once each has
    compacted since the purge, the certificate no longer says "pending" of them."""
    query = {"residue.verdict": Verdict.PENDING.value, "pending_blobs": [],
             "done_at": {"$type": "date"}}  # fmt: skip
    # The least recently checked first: those that stay pending never hold the others back.
    found = PurgeRecord.find(query).sort("+residue.rechecked_at").limit(RECHECKED_PER_SWEEP)
    async for record in found:
        assert record.residue is not None and record.done_at is not None
        kept = [f for f in record.residue["findings"] if not f["place"].startswith(_INDEX_PLACE)]
        if len(kept) == len(record.residue["findings"]):
            continue  # pending on something else
        fresh = await scan(Identifiers(), now=now, quiet_period=policy.blob_quiet_period,
                           indexes_since=record.done_at)  # fmt: skip
        findings = kept + [f for f in fresh.as_record()["findings"]
                           if f["place"].startswith(_INDEX_PLACE)]  # fmt: skip
        verdict = verdict_of(Kind(f["kind"]) for f in findings)
        await PurgeRecord.get_pymongo_collection().update_one({"_id": record.id}, {"$set": {
            "residue.findings": findings, "residue.verdict": verdict.value,
            "residue.clean": verdict is Verdict.CLEAN, "residue.rechecked_at": now,
        }})  # fmt: skip


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
    findings += [f for f in fresh.as_record()["findings"] if f["place"] in _BLOB_PLACES]
    unexplained = sum(f["count"] for f in findings if f["kind"] == Kind.RESIDUE.value)
    verdict = verdict_of(Kind(f["kind"]) for f in findings)
    await PurgeRecord.get_pymongo_collection().update_one(settled, {"$set": {
        "residue.findings": findings, "residue.residue": unexplained,
        "residue.verdict": verdict.value, "residue.clean": verdict is Verdict.CLEAN,
        "residue.rechecked_at": now,
    }})  # fmt: skip


# --- 2. the due accounts, a group at a time -------------------------------------------------------


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
    records = await open_records(
        [(rule_for(a), _deadline(a), a.id) for a in accounts], policy=run.policy, now=run.now
    )
    purges = {
        a.id: _Purge(a, r, Identifiers.of_account(a))
        for a, r in zip(accounts, records, strict=True)
    }
    await _delete_due_content(run, purges)
    deleted = sorted(i for i, p in purges.items() if p.account.status is AccountStatus.DELETED)
    if deleted:  # and conversations left empty by a crash
        run.report.conversations += await deletion.settle_conversations(
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
            account_ids=[], conversation_ids=await conversation_ids(scope), now=run.now
        )
        query = {"account_id": {"$in": scope}, **due,
                 "conversation_id": {"$nin": sorted(held_conversations)}}  # fmt: skip
        batch = await deletion.next_batch(query, run.policy.batch_size)
        if not batch:
            break
        await run.pace()
        await run.before_batch()
        for message in batch:
            purges[str(message.account_id)].identifiers.add([message])
        went = await run.purge(batch, record_of=lambda m: purges[str(m.account_id)].record,
                                  still_due=due, deletions=True)  # fmt: skip
        going -= {str(m.account_id) for m in batch if not went.by_account[m.account_id]}


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


async def _forget_accounts(
    database: Database, accounts: list[Account], *, now: datetime
) -> set[str]:
    """All content of these deleted accounts is gone: each stays as a tombstone without its
    personal data (its id stays a retention subject), its exports go, and the audit trail's
    free text that named it (by id, address or name, as captured before the tombstone) is
    redacted, as are its addresses, id and name words in hold reasons, case references and
    disclosures. Only an account still as the sweep read it and still deleted (a restore during
    the sweep wins). Returns the ids of those forgotten now."""
    if not accounts:
        return set()
    unchanged = [{"_id": a.id, "links": a.links, "status": AccountStatus.DELETED.value}
                 for a in accounts]  # fmt: skip
    not_yet = {"$or": [{"purged_at": {"$ne": now}}, {"emails": {"$ne": []}},
                       {"name": {"$ne": None}}]}  # fmt: skip
    collection = Account.get_pymongo_collection()
    hashes = {a.id: address_hashes(a.emails) for a in accounts}

    async def tombstone(session: AsyncClientSession) -> list[str]:
        # Read and written in one snapshot: exactly those read are the ones changed now.
        found = collection.find({"$and": [{"$or": unchanged}, not_yet]}, {"_id": 1},
                                session=session)  # fmt: skip
        ids = [a["_id"] async for a in found]
        if ids:
            # Its addresses stay only as keyed hashes: late mail from them links here.
            await collection.bulk_write([
                UpdateOne({"_id": i}, {"$set": {"purged_at": now, "emails": [], "name": None},
                                       "$addToSet": {"purged_addresses": {"$each": hashes[i]}}})
                for i in ids
            ], session=session)  # fmt: skip
        return ids

    async with database.client.start_session() as session:
        forgotten = set(await session.with_transaction(tombstone))
    if forgotten:
        # Subject-access exports, and disclosures that hold any of them.
        forgotten_ids = sorted(forgotten)
        await remove_exports({"$or": [{"account_id": {"$in": forgotten_ids}},
                                      {"account_ids": {"$in": forgotten_ids}}]})  # fmt: skip
        subjects = [Subject(account_id=a.id, emails=a.emails, name=a.name)
                    for a in accounts if a.id in forgotten]  # fmt: skip
        await redact_accounts(subjects)
        await redact_trail(subjects)
    return forgotten


# --- 3. the maximum age ---------------------------------------------------------------------------


async def _purge_max_age(run: _Run) -> None:
    cutoff = max_age_cutoff(now=run.now, max_age=run.policy.max_age)
    due = {"collected_at": {"$lt": cutoff}}
    if await Message.find(due).first_or_none() is None:
        return
    [record] = await open_records([(PurgeRule.MAX_AGE, cutoff, None)], policy=run.policy,
                                   now=run.now)  # fmt: skip
    identifiers = Identifiers()
    # Held content is left out by the scopes of the holds (a list as long as the holds, not as
    # the content they keep), and passed over once by walking in (collected_at, _id) order.
    scope = unheld(due, *await held_now(run.now))
    after: Doomed | None = None
    size = run.policy.batch_size
    while batch := await deletion.next_batch(_after(scope, after), size, oldest=True):
        await run.pace()
        await run.before_batch()
        identifiers.add(batch)
        await run.purge(batch, record_of=lambda _: record, still_due=due, subjects=True)
        after = batch[-1]
    await _close_records(run, [(record, identifiers)])


def _after(query: dict[str, Any], last: Doomed | None) -> dict[str, Any]:
    if last is None:
        return query
    later = {"$or": [{"collected_at": {"$gt": last.collected_at}},
                     {"collected_at": last.collected_at, "_id": {"$gt": last.id}}]}  # fmt: skip
    return {"$and": [query, later]}


# --- every purge: its record closed with the residue scan -----------------------------------------


async def _close_records(run: _Run, closing: list[tuple[PurgeRecord, Identifiers]]) -> None:
    """Each record ends with when it ended and what the residue scan found right after (one
    scan of the group's places for all of them)."""
    await run.index_synced()
    # Every process's index must have applied the deletions, which ended before this.
    residues = await scan_many([identifiers for _, identifiers in closing], now=run.now,
                               quiet_period=run.policy.blob_quiet_period,
                               data_dir=run.policy.data_dir,
                               indexes_since=utcnow())  # fmt: skip
    done_at = run.clock()
    await PurgeRecord.get_pymongo_collection().bulk_write([
        UpdateOne({"_id": record.id},
                  {"$set": {"done_at": done_at, "residue": residue.as_record()}})
        for (record, _), residue in zip(closing, residues, strict=True)
    ], ordered=False)  # fmt: skip
    for (record, _), residue in zip(closing, residues, strict=True):
        run.report.residue += residue.unexplained
        run.report.records.append(record.purge_key)
