"""The residue scan: after a purge (or on demand), search every place the service keeps data,
in MongoDB and under ``ARCHIVE_DATA_DIR``, for what identified the purged content, and say
what remains and why. With the purge record's counts and times, this is the deletion
certificate.

Each probe is a query or a file walk the product itself can run at any time; what it finds is
either explained (held, shared with content that stays, a blob in its quiet period, a record
kept by design) or residue, which is a failure of the purge.

A purge closes hundreds of accounts together: ``scan_many`` runs each probe once for all of
them and gives each exactly what a scan of it alone finds.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from beanie import PydanticObjectId
from bson import ObjectId
from pymongo.asynchronous.collection import AsyncCollection

from exports.builder import unowned_export_files
from retention.holds import held_scopes, trail_naming, trail_records
from search.index import STALE_AFTER, index_path, presence_of_each
from store.audit import Subject, free_text, naming_query
from store.blobs import referenced
from store.documents import (
    Account,
    AccountStatus,
    AuditEvent,
    Blob,
    BlobChunk,
    Conversation,
    Export,
    Hold,
    Message,
    SearchIndexEntry,
    SpoolEntry,
    iso,
)

# How long the residue scan waits for a search index that still finds purged messages.
INDEX_CATCH_UP_SECONDS = 10.0
# $in lists are sent in slices of this many ids (a 16 MB query limit is far above this).
SLICE = 10_000
# Queries sent together as the ``$unionWith`` branches of one aggregation (mongod refuses a
# pipeline of more than 1000 stages).
UNIONS = 500


@dataclass
class Identifiers:
    """What identified the purged content, captured before (and while) it was deleted."""

    account_id: str | None = None
    emails: set[str] = field(default_factory=set)
    names: set[str] = field(default_factory=set)
    message_ids: set[PydanticObjectId] = field(default_factory=set)
    conversation_ids: set[PydanticObjectId] = field(default_factory=set)
    blobs: set[str] = field(default_factory=set)

    @classmethod
    def of_account(cls, account: Account) -> Identifiers:
        return cls(
            account_id=account.id,
            emails=set(account.emails),
            names={account.name} if account.name else set(),
        )

    def add(self, batch: Iterable[Any]) -> None:
        """Remember a purge batch (anything with ``id``, ``conversation_id`` and ``blobs``)."""
        for message in batch:
            self.message_ids.add(message.id)
            self.conversation_ids.add(message.conversation_id)
            self.blobs.update(message.blobs)

    def words(self) -> list[str]:
        """The free-text forms: the account id, its addresses and names."""
        found = {self.account_id} if self.account_id else set()
        return sorted(w for w in found | self.emails | self.names if w)


class Kind(StrEnum):
    """Why something remains: only ``residue`` is a failure of the purge."""

    RESIDUE = "residue"
    HELD = "held"  # an active hold keeps it
    PENDING = "pending"  # a blob in its quiet period: the next sweep removes it
    SHARED = "shared"  # the same bytes belong to content that stays
    KEPT = "kept"  # a record kept by design (tombstone, hold record, audit by id)


class Verdict(StrEnum):
    """What a scan says of its subject, in one word, the same in the CLI (its exit status),
    the API and the web page."""

    CLEAN = "clean"  # nothing of the subject anywhere, and nothing pending
    PENDING = "pending"  # content on its way out: the next sweep or housekeeping removes it
    KEPT = "kept"  # content an active hold keeps
    REMAINS = "remains"  # something that should be gone is not: a failure of the purge

    @property
    def exit_status(self) -> int:
        return {Verdict.CLEAN: 0, Verdict.REMAINS: 1}.get(self, 3)


def verdict_of(kinds: Iterable[Kind]) -> Verdict:
    """The verdict of findings of these kinds (records kept by design change nothing)."""
    found = set(kinds)
    if Kind.RESIDUE in found:
        return Verdict.REMAINS
    if Kind.HELD in found:
        return Verdict.KEPT
    if Kind.PENDING in found:
        return Verdict.PENDING
    return Verdict.CLEAN


@dataclass(frozen=True)
class Finding:
    place: str  # a collection, or a folder under ARCHIVE_DATA_DIR
    count: int
    why: str
    kind: Kind
    until: datetime | None = None  # pending: when it goes at the latest


@dataclass
class Residue:
    checked_at: datetime
    findings: list[Finding] = field(default_factory=list)

    def count(self, *kinds: Kind) -> int:
        return sum(f.count for f in self.findings if f.kind in kinds)

    @property
    def unexplained(self) -> int:
        return self.count(Kind.RESIDUE)

    @property
    def verdict(self) -> Verdict:
        return verdict_of(f.kind for f in self.findings)

    def found(
        self, place: str, count: int, why: str, kind: Kind = Kind.RESIDUE,
        until: datetime | None = None,
    ) -> None:  # fmt: skip
        if count:
            self.findings.append(Finding(place, count, why, kind, until))

    def as_record(self) -> dict[str, Any]:
        """What the purge record stores: counts and reasons, no personal data."""
        return {
            "checked_at": self.checked_at,
            "verdict": self.verdict.value,
            "clean": self.verdict is Verdict.CLEAN,
            "residue": self.unexplained,
            "findings": [
                {
                    "place": f.place,
                    "count": f.count,
                    "why": f.why,
                    "kind": f.kind.value,
                    **({"until": f.until} if f.until else {}),
                }
                for f in self.findings
            ],
        }

    def lines(self) -> list[str]:
        """One line per finding, as ``verify-purge`` prints them."""
        return [f"{f.kind.value:<8} {f.place}: {f.count} {f.why}"
                + (f" (quiet until {iso(f.until)})" if f.until else "")
                for f in self.findings]  # fmt: skip


async def scan(
    identifiers: Identifiers,
    *,
    now: datetime,
    quiet_period: timedelta,
    data_dir: Path | None = None,
    captured_at: datetime | None = None,
    indexes_since: datetime | None = None,
) -> Residue:
    """Everything that remains of ``identifiers``, and why. Content created after
    ``captured_at`` (default: now) that only shares an address is not the purged content.
    With ``indexes_since`` (when the purge's deletions ended), every process's search index
    must have applied MongoDB's changes up to then with none left in its files."""
    [residue] = await scan_many([identifiers], now=now, quiet_period=quiet_period,
                                data_dir=data_dir, captured_at=captured_at,
                                indexes_since=indexes_since)  # fmt: skip
    return residue


async def scan_many(
    identifiers: Sequence[Identifiers],
    *,
    now: datetime,
    quiet_period: timedelta,
    data_dir: Path | None = None,
    captured_at: datetime | None = None,
    indexes_since: datetime | None = None,
) -> list[Residue]:
    """``scan`` of each of ``identifiers``, in their order, each exactly as if scanned alone
    (they may share an address), for the cost of one: a purge closes hundreds of accounts
    together, so each probe asks MongoDB once for all of them, the spool is walked once, each
    file is read once and the search index is waited for once."""
    scans = [(each, Residue(checked_at=now)) for each in identifiers]
    before = ObjectId.from_datetime(captured_at or now)
    await _messages(scans, now=now, before=before)
    await _conversations(scans, now=now, before=before)
    await _blobs(scans, now=now, quiet_period=quiet_period)
    await _spool(scans)
    await _exports(scans, now=now)
    await _audit(scans, now=now, captured_at=captured_at or now)
    await _trail(scans, now=now)
    await _accounts(scans)
    if data_dir is not None:
        await _files(scans, data_dir=data_dir)
        await _search_index(scans, data_dir=data_dir)
    if indexes_since is not None:
        await _search_indexes(scans, now=now, since=indexes_since)
    return [residue for _, residue in scans]


# Each probe takes every scan of the batch: what it asked for, and the residue it adds to.
_Scans = Sequence[tuple[Identifiers, Residue]]
_Doc = dict[str, Any]
_Collection = AsyncCollection[Any]
_T = TypeVar("_T")


def _slices(values: Iterable[Any]) -> Iterator[list[Any]]:
    ordered = sorted(values)
    for start in range(0, len(ordered), SLICE):
        yield ordered[start : start + SLICE]


def _owners(groups: Iterable[Iterable[_T]]) -> dict[_T, set[int]]:
    """Each value of ``groups``, and the places (in the batch) of the groups that hold it: what
    a batched query finds by a value goes to every scan that asked for it."""
    owners: dict[_T, set[int]] = defaultdict(set)
    for place, group in enumerate(groups):
        for value in group:
            owners[value].add(place)
    return dict(owners)


async def _by_id(collection: _Collection, ids: Iterable[Any], projection: _Doc) -> dict[Any, _Doc]:
    """The documents of ``ids`` that still exist."""
    found: dict[Any, _Doc] = {}
    for part in _slices(set(ids)):
        async for doc in collection.find({"_id": {"$in": part}}, projection):
            found[doc["_id"]] = doc
    return found


async def _counts(collection: _Collection, name: str, values: Iterable[Any]) -> Counter[Any]:
    """How many documents have each of ``values`` in the field ``name``: one aggregation for
    all of them, rather than a count each."""
    counts: Counter[Any] = Counter()
    for part in _slices(set(values)):
        pipeline: list[_Doc] = [{"$match": {name: {"$in": part}}},
                                {"$group": {"_id": f"${name}", "n": {"$sum": 1}}}]  # fmt: skip
        async for group in await collection.aggregate(pipeline):
            counts[group["_id"]] += group["n"]
    return counts


_WHICH = "_residue_filter"


async def _found_each(
    collection: _Collection,
    filters: Sequence[_Doc],
    *,
    projection: _Doc,
    limit: int | None = None,
) -> list[list[_Doc]]:
    """What each of ``filters`` finds, exactly as a find of it alone would (a document two of
    them find is found by both), in one aggregation: each filter is a pipeline of its own,
    which uses its indexes, and ``$unionWith`` joins them. For queries that are not ours to
    merge (the audit trail's), or that each stop at their first match."""
    found: list[list[_Doc]] = [[] for _ in filters]
    for start in range(0, len(filters), UNIONS):
        part = filters[start : start + UNIONS]
        first, *others = [_branch(f, start + n, projection, limit) for n, f in enumerate(part)]
        unions = [{"$unionWith": {"coll": collection.name, "pipeline": p}} for p in others]
        pipeline: list[_Doc] = [*first, *unions]
        async for doc in await collection.aggregate(pipeline):
            found[doc.pop(_WHICH)].append(doc)
    return found


def _branch(query: _Doc, which: int, projection: _Doc, limit: int | None) -> list[_Doc]:
    """One filter's pipeline: its documents, marked with its place among the filters."""
    stages: list[_Doc] = [{"$match": query}]
    if limit is not None:
        stages.append({"$limit": limit})
    return [*stages, {"$project": projection}, {"$set": {_WHICH: which}}]


async def _held(docs: Iterable[_Doc], *, conversation: str, now: datetime) -> set[Any]:
    """The ids of ``docs`` an active hold covers, by their account or by their conversation
    (the field ``conversation`` names): one query for all of them. Asking about more accounts
    and conversations than one scan's changes nothing for its own."""
    docs = list(docs)
    accounts, conversations = await held_scopes(
        account_ids=sorted({d["account_id"] for d in docs if d.get("account_id")}),
        conversation_ids=sorted({d[conversation] for d in docs}),
        now=now,
    )
    return {d["_id"] for d in docs
            if d.get("account_id") in accounts or d[conversation] in conversations}  # fmt: skip


# --- messages and conversations -------------------------------------------------------------

_IDS = {"account_id": 1, "conversation_id": 1}
_NAMING = {**_IDS, "participants": 1, "author.email": 1}


async def _messages(scans: _Scans, *, now: datetime, before: ObjectId) -> None:
    collection = Message.get_pymongo_collection()
    by_id = await _by_id(collection, {m for i, _ in scans for m in i.message_ids}, _IDS)
    due = await _due(scans, now=now)
    unlinked = await _unlinked({e for i, _ in scans for e in i.emails}, before=before)
    found = _messages_found(scans, by_id, due, unlinked)
    held = await _held([m for each in found for m in each.values()],
                       conversation="conversation_id", now=now)  # fmt: skip
    for (_, residue), each in zip(scans, found, strict=True):
        kept = sum(1 for ident in each if ident in held)
        residue.found("messages", kept, "kept by an active hold", Kind.HELD)
        residue.found("messages", len(each) - kept, "past their deadline and not held")


async def _due(scans: _Scans, *, now: datetime) -> dict[str, dict[Any, _Doc]]:
    """The messages of the scans' accounts whose deadline has passed, by account."""
    due: dict[str, dict[Any, _Doc]] = defaultdict(dict)
    for part in _slices({i.account_id for i, _ in scans if i.account_id}):
        query = {"account_id": {"$in": part}, "purge_due_at": {"$lte": now}}
        async for m in Message.get_pymongo_collection().find(query, _IDS):
            due[m["account_id"]][m["_id"]] = m
    return due


async def _unlinked(emails: set[str], *, before: ObjectId) -> list[_Doc]:
    """Unlinked mail the customers wrote before the purge (what arrives later from the same
    address is a new contact, not the purged content), whoever of them wrote it: a slice of
    the addresses at a time on ``participants``, which is indexed (the author is among them)."""
    authors = sorted(emails)
    found: dict[Any, _Doc] = {}
    for part in _slices(emails):
        naming = {"account_id": None, "participants": {"$in": part},
                  "author.email": {"$in": authors}, "_id": {"$lt": before}}  # fmt: skip
        async for m in Message.get_pymongo_collection().find(naming, _NAMING):
            found[m["_id"]] = m
    return list(found.values())


def _messages_found(
    scans: _Scans,
    by_id: dict[Any, _Doc],
    due: dict[str, dict[Any, _Doc]],
    unlinked: list[_Doc],
) -> list[dict[Any, _Doc]]:
    """What each scan finds of the messages: those of its ids, those due of its account, and
    the unlinked mail of which one of its addresses is the author and one a participant."""
    found = [{m: by_id[m] for m in i.message_ids if m in by_id} for i, _ in scans]
    for (i, _), each in zip(scans, found, strict=True):
        if i.account_id:
            each.update(due.get(i.account_id, {}))
    owners = _owners(i.emails for i, _ in scans)
    for m in unlinked:
        author = (m.get("author") or {}).get("email")
        if not isinstance(author, str):
            continue
        for place in owners.get(author, ()):
            if scans[place][0].emails.intersection(m.get("participants") or ()):
                found[place][m["_id"]] = m
    return found


async def _conversations(scans: _Scans, *, now: datetime, before: ObjectId) -> None:
    found = await _conversations_found(scans, before=before)
    for (_, residue), kinds in zip(scans, await _why_kept(scans, found, now=now), strict=True):
        residue.found("conversations", kinds.count(Kind.HELD), "held", Kind.HELD)
        residue.found("conversations", kinds.count(Kind.SHARED), "still hold messages that "
                      "stay (another account's, or of a new life of the account)",
                      Kind.SHARED)  # fmt: skip
        residue.found("conversations", kinds.count(Kind.RESIDUE),
                      "left with nothing that keeps them")  # fmt: skip


async def _conversations_found(scans: _Scans, *, before: ObjectId) -> list[dict[Any, _Doc]]:
    """What each scan finds of the conversations: those of its ids, and those created before
    the purge whose customers include one of its addresses."""
    collection = Conversation.get_pymongo_collection()
    ids = {c for i, _ in scans for c in i.conversation_ids}
    by_id = await _by_id(collection, ids, {"account_id": 1})
    found = [{c: by_id[c] for c in i.conversation_ids if c in by_id} for i, _ in scans]
    owners = _owners(i.emails for i, _ in scans)
    for part in _slices(owners):
        # By address alone, so that the customer_emails index is the plan: with "_id" in the
        # filter too the planner may read every conversation by _id instead.
        naming = {"customer_emails": {"$in": part}}
        async for c in collection.find(naming, {"account_id": 1, "customer_emails": 1}):
            if c["_id"] >= before:
                continue  # created after the purge began
            for place in {p for e in c.get("customer_emails") or () for p in owners.get(e, ())}:
                found[place][c["_id"]] = c
    return found


async def _why_kept(
    scans: _Scans, found: list[dict[Any, _Doc]], *, now: datetime
) -> list[list[Kind]]:
    """Why each conversation each scan found may stay: a hold covers it, or a message that
    stays is in it (and, when the scan has the account's addresses, names them), or nothing
    does (residue). The holds of all are one query, the messages that stay one aggregation."""
    held = await _held([c for each in found for c in each.values()], conversation="_id", now=now)
    kinds: list[list[Kind]] = [[Kind.HELD for c in each if c in held] for each in found]
    loose = [(place, c) for place, each in enumerate(found) for c in each if c not in held]
    staying = [_staying(c, scans[place][0], now=now) for place, c in loose]
    stays = await _found_each(Message.get_pymongo_collection(), staying,
                              projection={"_id": 1}, limit=1)  # fmt: skip
    for (place, _), first in zip(loose, stays, strict=True):
        kinds[place].append(Kind.SHARED if first else Kind.RESIDUE)
    return kinds


def _staying(conversation: Any, identifiers: Identifiers, *, now: datetime) -> _Doc:
    """The messages of ``conversation`` that stay after this purge."""
    staying: _Doc = {"conversation_id": conversation}
    if identifiers.account_id:
        staying["$nor"] = [{"account_id": identifiers.account_id, "purge_due_at": {"$lte": now}}]
    if identifiers.emails:
        staying["$or"] = [{"participants": {"$in": sorted(identifiers.emails)}},
                          {"author.email": {"$in": sorted(identifiers.emails)}}]  # fmt: skip
    return staying


# --- blobs, spool, exports, audit trail, accounts -------------------------------------------


@dataclass(frozen=True)
class _Stored:
    """What is stored of the blobs of the batch: which are still referenced, when each that is
    there was last referenced, and how many chunks each that is gone left behind."""

    referenced: set[str]
    last_referenced: dict[str, datetime]
    chunks: Counter[str]


async def _blobs(scans: _Scans, *, now: datetime, quiet_period: timedelta) -> None:
    stored = await _stored_blobs({b for i, _ in scans for b in i.blobs})
    quiet_since = now - quiet_period
    for i, residue in scans:
        there = [b for b in i.blobs if b in stored.last_referenced]
        shared = sum(1 for b in there if b in stored.referenced)
        quiet_ones = [stored.last_referenced[b] for b in there if b not in stored.referenced
                      and stored.last_referenced[b] >= quiet_since]  # fmt: skip
        quiet = len(quiet_ones)
        until = max(quiet_ones) + quiet_period if quiet_ones else None
        chunks = sum(stored.chunks[b] for b in i.blobs if b not in stored.last_referenced)
        residue.found("blobs", shared, "the same bytes belong to content that stays", Kind.SHARED)
        residue.found("blobs", quiet, "referenced within the quiet period; the first sweep "
                      "after it removes them", Kind.PENDING, until)  # fmt: skip
        residue.found("blobs", len(there) - shared - quiet, "no longer referenced and not removed")
        residue.found("blob_chunks", chunks, "chunks of blobs that are gone")


async def _stored_blobs(shas: set[str]) -> _Stored:
    still: set[str] = set()
    there: dict[str, datetime] = {}
    for part in _slices(shas):
        still |= await referenced(part)
        async for blob in Blob.get_pymongo_collection().find(
            {"_id": {"$in": part}}, {"last_referenced_at": 1}
        ):
            there[blob["_id"]] = blob["last_referenced_at"]
    gone = shas - there.keys()
    return _Stored(still, there, await _counts(BlobChunk.get_pymongo_collection(), "blob_id", gone))


async def _spool(scans: _Scans) -> None:
    """The spool, walked once: an entry counts for every scan whose addresses its envelope
    names, or whose words its bytes hold. A scan without an account id or addresses has
    nothing to look for here (its names alone would name other people too)."""
    asked = [bool(i.emails or i.account_id) for i, _ in scans]
    if not any(asked):
        return
    needles = _Needles([i.words() if a else () for (i, _), a in zip(scans, asked, strict=True)])
    addressed = _owners(i.emails if a else () for (i, _), a in zip(scans, asked, strict=True))
    waiting: Counter[int] = Counter()
    async for entry in SpoolEntry.get_pymongo_collection().find({}, {"raw": 1, "envelope": 1}):
        waiting.update(_naming_scans(entry, needles, addressed))
    for place, (_, residue) in enumerate(scans):
        residue.found("spool", waiting[place], "deliveries naming the account wait to be filed "
                      "(filed, they fall under its deadline)")  # fmt: skip


def _naming_scans(entry: _Doc, needles: _Needles, addressed: dict[str, set[int]]) -> set[int]:
    """The places of the scans a spooled delivery names."""
    envelope = entry.get("envelope") or {}
    addresses = {envelope.get("mail_from") or "", *(envelope.get("rcpt_tos") or [])}
    named = {place for a in addresses for place in addressed.get(a.lower(), ())}
    if entry.get("raw"):
        named |= needles.owners(needles.found_in(bytes(entry["raw"])))
    return named


async def _exports(scans: _Scans, *, now: datetime) -> None:
    """Export records that hold a subject: a subject-access export of the account, or a
    disclosure that contains the account or one of its conversations (before, a disclosure of
    a released hold's conversation outlived the purge, its zip still downloadable). Those of
    an account not purged yet go at its purge."""
    ids = sorted({i.account_id for i, _ in scans if i.account_id is not None})
    conversations = sorted({c for i, _ in scans for c in i.conversation_ids})
    found: list[_Doc] = []
    for part in _slices(ids):
        query: _Doc = {"$or": [{"account_id": {"$in": part}}, {"account_ids": {"$in": part}}]}
        found += await Export.get_pymongo_collection().find(query, _EXPORT_SUBJECTS).to_list()
    for part in _slices(conversations):
        query = {"conversation_ids": {"$in": part}}
        found += await Export.get_pymongo_collection().find(query, _EXPORT_SUBJECTS).to_list()
    exports = {e["_id"]: e for e in found}.values()
    standing = await _standing(ids, now=now)
    for i, residue in scans:
        holding = sum(1 for e in exports if _holds(e, i))
        alive = _alive(i, residue, standing)
        if alive is not None:
            residue.found("exports", holding, "export records (and their files) holding the "
                          "account, which is not purged: they go at its purge", alive)  # fmt: skip
        else:
            residue.found("exports", holding, "export records (and their files) holding the "
                          "account")  # fmt: skip


def _alive(identifiers: Identifiers, residue: Residue, standing: _Standing) -> Kind | None:
    """How what an account not purged still has counts: held, kept (it lives: a new life),
    or pending its purge; None for a purged account, or a scan without one (what remains is
    residue)."""
    account = identifiers.account_id
    if account is None or account in standing.purged:
        return None
    if account in standing.held or residue.count(Kind.HELD):
        return Kind.HELD
    return Kind.KEPT if account in standing.active else Kind.PENDING


_EXPORT_SUBJECTS = {"account_id": 1, "account_ids": 1, "conversation_ids": 1}


def _holds(export: _Doc, identifiers: Identifiers) -> bool:
    account = identifiers.account_id
    return bool(
        (account is not None and (export.get("account_id") == account
                                  or account in (export.get("account_ids") or ())))
        or identifiers.conversation_ids.intersection(export.get("conversation_ids") or ())
    )  # fmt: skip


async def _audit(scans: _Scans, *, now: datetime, captured_at: datetime) -> None:
    """Audit events whose free text names a subject. Of a purged account, those from before
    its purge are residue (the purge redacts them); those since are the searches that
    verified the erasure, kept ``ARCHIVE_AUDIT_TEXT_MAX_AGE`` like any free text. Of an
    account not purged (held, or not due yet) they are its live trail, redacted at its purge:
    before, compliance's own search of a held account was "residue". Runs after the probes
    of messages and conversations: what they found held keeps the account's trail too."""
    asked = [(i, r) for i, r in scans if i.account_id is not None or i.emails]
    subjects = [Subject(account_id=i.account_id or "", emails=i.emails,
                        name=" ".join(sorted(i.names)) or None) for i, _ in asked]  # fmt: skip
    collection = AuditEvent.get_pymongo_collection()
    found = await _found_each(collection, [naming_query(s) for s in subjects],
                              projection={"query": 1, "at": 1})  # fmt: skip
    ids = sorted({i.account_id for i, _ in asked if i.account_id})
    by_id = await _counts(collection, "target.account_id", ids)
    standing = await _standing(ids, now=now)
    for (i, residue), subject, events in zip(asked, subjects, found, strict=True):
        naming = [e for e in events if _names(subject, e)]
        if (alive := _alive(i, residue, standing)) is not None:
            residue.found("audit_events", len(naming), "free text naming the account, which is "
                          "not purged: redacted at its purge", alive)  # fmt: skip
        else:
            since = standing.purged.get(i.account_id or "", captured_at)
            after = sum(1 for e in naming if _aware(e["at"]) > since)
            residue.found("audit_events", len(naming) - after, "free text (search terms, "
                          "filters) naming the account")  # fmt: skip
            residue.found("audit_events", after, "searches naming the account since its purge "
                          "(the trail of the erasure), their free text redacted after "
                          "ARCHIVE_AUDIT_TEXT_MAX_AGE", Kind.KEPT)  # fmt: skip
        if i.account_id:
            residue.found("audit_events", by_id[i.account_id], "name the account by its id only "
                          "(who read or changed what, kept for the audit period)",
                          Kind.KEPT)  # fmt: skip


@dataclass(frozen=True)
class _Standing:
    """Of some accounts: when each purged one was purged, which an active hold covers, and
    which live (active: a purge of an earlier life is all that was purged of them)."""

    purged: dict[str, datetime]
    held: set[str]
    active: set[str]


async def _standing(ids: Sequence[str], *, now: datetime) -> _Standing:
    purged: dict[str, datetime] = {}
    active: set[str] = set()
    for part in _slices(ids):
        found = Account.get_pymongo_collection().find({"_id": {"$in": part}},
                                                      {"purged_at": 1, "status": 1})  # fmt: skip
        async for a in found:
            if a.get("purged_at") is not None:
                purged[a["_id"]] = _aware(a["purged_at"])
            elif a.get("status") == AccountStatus.ACTIVE.value:
                active.add(a["_id"])
    accounts, _ = await held_scopes(account_ids=list(ids), conversation_ids=[], now=now)
    return _Standing(purged, set(accounts), active)


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


async def _trail(scans: _Scans, *, now: datetime) -> None:
    """Hold and disclosure records (kept as the legal trail) whose reason, case reference,
    authority or legal basis still name a subject: redacted at its purge (before, a reason
    kept the customer's name and address forever after release and purge)."""
    asked = [(i, r) for i, r in scans if i.account_id is not None or i.emails or i.names]
    if not asked:
        return
    records = await trail_records()
    standing = await _standing(sorted({i.account_id for i, _ in asked if i.account_id}), now=now)
    for i, residue in asked:
        subject = Subject(account_id=i.account_id or "", emails=i.emails,
                          name=" ".join(sorted(i.names)) or None)  # fmt: skip
        naming = sum(1 for fields, doc, account in records
                     if trail_naming(doc, fields, subject, about=account == i.account_id
                                     and account is not None))  # fmt: skip
        if (alive := _alive(i, residue, standing)) is not None:
            residue.found("holds and disclosures", naming, "reasons or references naming the "
                          "account, which is not purged: redacted at its purge", alive)  # fmt: skip
        else:
            residue.found("holds and disclosures", naming, "reasons or references naming the "
                          "account")  # fmt: skip


def _names(subject: Subject, event: _Doc) -> bool:
    return any(subject.named_in(str(v)) for v in free_text(event.get("query") or {}).values())


async def _accounts(scans: _Scans) -> None:
    accounts: dict[str, Account] = {}
    for part in _slices({i.account_id for i, _ in scans if i.account_id is not None}):
        async for account in Account.find({"_id": {"$in": part}}):
            accounts[account.id] = account
    holds = await _counts(Hold.get_pymongo_collection(), "account_id", accounts)
    for i, residue in scans:
        account = accounts.get(i.account_id) if i.account_id is not None else None
        if account is not None:
            _account_found(account, residue)
            residue.found("holds", holds[account.id], "hold records (who, when, why) are kept "
                          "as the legal trail", Kind.KEPT)  # fmt: skip


def _account_found(account: Account, residue: Residue) -> None:
    if account.status is AccountStatus.DELETED and account.purged_at is not None:
        personal = bool(account.emails or account.name)
        residue.found("accounts", int(personal), "the purged account still has emails or a name")
        residue.found("accounts", int(not personal), "tombstone: the id, dates and status, so "
                      "that what links to the id later is purged too", Kind.KEPT)  # fmt: skip


# --- files under ARCHIVE_DATA_DIR -----------------------------------------------------------


async def _files(scans: _Scans, *, data_dir: Path) -> None:
    """Files the service writes under ARCHIVE_DATA_DIR: export files no live record owns (any
    account's: their records went, so they should have too), and every other file searched
    for the account's id, addresses and names. In mongod's log, which names databases,
    collections and indexes (``channel``), and ids are what logs may carry, only the addresses
    and names count, as whole words. Each file is read once for the whole batch."""
    exports = data_dir / "exports"
    unowned = await unowned_export_files(directory=exports) if exports.is_dir() else []
    named = _files_naming(_service_files(data_dir), _Needles([i.words() for i, _ in scans]))
    logged = _files_naming(_mongod_logs(data_dir), _Needles(
        [sorted(i.emails | i.names) for i, _ in scans], whole_words=True))  # fmt: skip
    for place, (_, residue) in enumerate(scans):
        residue.found("exports folder", len(unowned), "export files no record owns")
        residue.found("data folder", named[place], "files naming the account")
        residue.found("mongod log", logged[place], "MongoDB's own log files name the account's "
                      "addresses or names (an operation logged with its values)")  # fmt: skip


def _files_naming(paths: Iterable[Path], needles: _Needles) -> Counter[int]:
    """How many of ``paths`` name each scan (by its place)."""
    named: Counter[int] = Counter()
    if needles:  # otherwise nobody is looked for: nothing to read
        for path in paths:
            named.update(needles.owners(_mentions(path, needles)))
    return named


def _mentions(path: Path, needles: _Needles, chunk: int = 1 << 20) -> set[bytes]:
    """The needles the file contains, read a chunk at a time (a journal may be large)."""
    found: set[bytes] = set()
    overlap = b""
    with path.open("rb") as source:
        while block := source.read(chunk):
            found |= needles.found_in(overlap + block)
            overlap = block[-512:]
    return found


_BOUNDARY = re.compile(rb"\b")
_END = -1  # in a node of the trie of the needles: a needle ends here


class _Needles:
    """The words of all the scans of a batch as one pattern, so that a text is read once for
    all of them, and each scan still learns exactly which of its own words the text holds: at
    each place the pattern finds, every word that starts there counts (one may begin another,
    ``ann`` and ``ann@example.com``), and the search goes on from the next byte (one may lie
    inside another). Case-insensitive as a bytes pattern is (ASCII letters): the text is
    lowercased once and searched for the lowercased words."""

    def __init__(self, words: Iterable[Iterable[str]], *, whole_words: bool = False) -> None:
        self.whole_words = whole_words
        self.scans = _owners([w.encode().lower() for w in each if w] for each in words)
        self.starting: dict[int, list[bytes]] = defaultdict(list)
        for word in self.scans:
            self.starting[word[0]].append(word)
        either = _trie(self.scans) if self.scans else b"(?!)"
        self.pattern = re.compile(rb"\b(?:" + either + rb")\b" if whole_words else either)

    def __bool__(self) -> bool:
        return bool(self.scans)

    def found_in(self, text: bytes) -> set[bytes]:
        """The words ``text`` contains."""
        lowered = text.lower()
        found: set[bytes] = set()
        hit = self.pattern.search(lowered)
        while hit is not None and len(found) < len(self.scans):
            at = hit.start()
            found.update(w for w in self.starting.get(lowered[at], ()) if self._at(lowered, w, at))
            hit = self.pattern.search(lowered, at + 1)
        return found

    def _at(self, lowered: bytes, word: bytes, at: int) -> bool:
        if not lowered.startswith(word, at):
            return False
        ends = at + len(word)
        return not self.whole_words or bool(_BOUNDARY.match(lowered, at)
                                             and _BOUNDARY.match(lowered, ends))  # fmt: skip

    def owners(self, words: Iterable[bytes]) -> set[int]:
        """The places of the scans that look for any of ``words``."""
        return {place for word in words for place in self.scans[word]}


def _trie(words: Iterable[bytes]) -> bytes:
    """``words`` as one alternation shaped as their trie (``ann|anna|bob`` as
    ``(?:ann(?:a)?|bob)``): the engine tries every alternative at every byte, so that a flat
    alternation of the words of a few hundred accounts is some twenty times slower."""
    root: dict[int, Any] = {}
    for word in words:
        node = root
        for byte in word:
            node = node.setdefault(byte, {})
        node[_END] = {}
    return _alternation(root)


def _alternation(node: dict[int, Any]) -> bytes:
    """What may follow ``node``; a run of single bytes needs no group (and no recursion)."""
    run = b""
    while len(node) == 1 and _END not in node:
        [(byte, node)] = node.items()
        run += re.escape(bytes([byte]))
    branches = [re.escape(bytes([byte])) + _alternation(child)
                for byte, child in sorted(node.items()) if byte != _END]  # fmt: skip
    if not branches:
        return run
    either = branches[0] if len(branches) == 1 else b"(?:" + b"|".join(branches) + b")"
    return run + (b"(?:" + either + b")?" if _END in node else either)


def _mongod_logs(data_dir: Path) -> list[Path]:
    """The embedded mongod's log, and any file it was rotated to (``mongod.log.<date>``)."""
    return sorted(p for p in (data_dir / "mongo").glob("mongod.log*") if p.is_file())


def _service_files(data_dir: Path) -> Iterator[Path]:
    """Files the service writes, except MongoDB's own (searched through its collections), the
    export zips (compressed: owned by their records) and the search index (its words are
    encoded: searched through the engine)."""
    for path in sorted(data_dir.rglob("*")):
        parts = path.relative_to(data_dir).parts
        if path.is_file() and parts[0] not in {"mongo", "exports", "search"}:
            yield path


# --- the search index -----------------------------------------------------------------------


async def _search_index(scans: _Scans, *, data_dir: Path) -> None:
    """The search index under ``data_dir``, read from its files: no purged message may be
    found, and one deleted but still in the files is pending until housekeeping compacts them.
    The serve that follows the index may be a moment behind the purge (another process ran
    it): it is given a few seconds to catch up before what it still finds counts, once for
    the whole batch."""
    database = Message.get_pymongo_collection().database.name
    path = index_path(data_dir, database)
    # A message still stored (held, or not due) is the messages probe's to judge: search
    # finding it is no purge's residue.
    stored = await _by_id(Message.get_pymongo_collection(),
                          {m for i, _ in scans for m in i.message_ids}, {"_id": 1})  # fmt: skip
    ids = sorted({str(m) for i, _ in scans for m in i.message_ids if m not in stored})
    deadline = time.monotonic() + INDEX_CATCH_UP_SECONDS
    found = await asyncio.to_thread(presence_of_each, path, ids)
    while any(p.searchable for p in found.values()) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        found = await asyncio.to_thread(presence_of_each, path, ids)
    for i, residue in scans:
        each = [found[str(m)] for m in i.message_ids if str(m) in found]
        residue.found("search index", sum(p.searchable for p in each),
                      "purged messages still found by search (an index no running serve "
                      "follows catches up when its serve starts)")  # fmt: skip
        residue.found("search index files", sum(p.deleted for p in each),
                      "purged messages deleted from search, in files compacted at the next "
                      "housekeeping", Kind.PENDING)  # fmt: skip


async def _search_indexes(scans: _Scans, *, now: datetime, since: datetime) -> None:
    """Every process's search index (``search_indexes``), wherever it runs: one whose files
    held deleted documents at its last word since the purge may still hold the purged ones
    (pending: it compacts within one purge interval); one not heard of for longer than
    ``STALE_AFTER`` is listed as gone (it is rebuilt before it serves again). Before, a purge
    record accounted for the index of the process that ran it only."""
    entries = await SearchIndexEntry.get_pymongo_collection().find({}).to_list()
    live = [e for e in entries if now - _aware(e["heartbeat_at"]) <= STALE_AFTER]
    gone = [e for e in entries if e not in live]
    behind = [e for e in live if e.get("compacted_at") is None
              or _aware(e["compacted_at"]) < since]  # fmt: skip
    for _, residue in scans:
        for e in behind:
            residue.found(f"search index of {e['host']}:{e['path']}", 1, "not compacted since "
                          "the purge (each process compacts its own within one purge "
                          "interval)", Kind.PENDING)  # fmt: skip
        for e in gone:
            residue.found(f"search index of {e['host']}:{e['path']}", 1, "not heard of since "
                          f"{iso(_aware(e['heartbeat_at']))}: rebuilt from MongoDB before it "
                          "serves again; delete its folder if that serve is gone for good",
                          Kind.PENDING)  # fmt: skip


def describe(residue: Residue) -> str:
    """One line: the verdict of the scan, in its word (``Verdict``) and what it means."""
    verdict = residue.verdict
    state = {
        Verdict.REMAINS: f"{residue.unexplained} items remain that should be gone",
        Verdict.KEPT: f"{residue.count(Kind.HELD)} items an active hold keeps",
        Verdict.PENDING: f"{residue.count(Kind.PENDING)} items on their way out"
                         + (f"; the last goes at the first sweep after {iso(until)}"
                            if (until := _latest(residue)) else ""),
        Verdict.CLEAN: "nothing of it remains and nothing is pending",
    }[verdict]  # fmt: skip
    return f"residue scan at {iso(residue.checked_at)}: {verdict.value}: {state}"


def _latest(residue: Residue) -> datetime | None:
    return max((f.until for f in residue.findings if f.until), default=None)
