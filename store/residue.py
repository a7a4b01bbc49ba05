"""The residue scan: after a purge (or on demand), search every place the service keeps data,
in MongoDB and under ``ARCHIVE_DATA_DIR``, for what identified the purged content, and say
what remains and why. With the purge record's counts and times, this is the deletion
certificate.

Each probe is a query or a file walk the product itself can run at any time; what it finds is
either explained (held, shared with content that stays, a blob in its quiet period, a record
kept by design) or residue, which is a failure of the purge.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from beanie import PydanticObjectId
from bson import ObjectId

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
    SpoolEntry,
    iso,
)
from store.exports import unowned_export_files
from store.holds import held_scopes
from store.search_index import index_path, presence

# How long the residue scan waits for a search index that still finds purged messages.
INDEX_CATCH_UP_SECONDS = 10.0
# $in lists are sent in slices of this many ids (a 16 MB query limit is far above this).
SLICE = 10_000


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


@dataclass(frozen=True)
class Finding:
    place: str  # a collection, or a folder under ARCHIVE_DATA_DIR
    count: int
    why: str
    kind: Kind


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
    def clean(self) -> bool:
        return self.unexplained == 0

    @property
    def content_remains(self) -> bool:
        """Content (not only records kept by design) is still stored, held or pending."""
        return self.count(Kind.RESIDUE, Kind.HELD, Kind.PENDING) > 0

    def found(self, place: str, count: int, why: str, kind: Kind = Kind.RESIDUE) -> None:
        if count:
            self.findings.append(Finding(place, count, why, kind))

    def as_record(self) -> dict[str, Any]:
        """What the purge record stores: counts and reasons, no personal data."""
        return {
            "checked_at": self.checked_at,
            "clean": self.clean,
            "residue": self.unexplained,
            "findings": [
                {"place": f.place, "count": f.count, "why": f.why, "kind": f.kind.value}
                for f in self.findings
            ],
        }

    def lines(self) -> list[str]:
        """One line per finding, as ``verify-purge`` prints them."""
        return [f"{f.kind.value:<8} {f.place}: {f.count} {f.why}" for f in self.findings]


async def scan(
    identifiers: Identifiers,
    *,
    now: datetime,
    quiet_period: timedelta,
    data_dir: Path | None = None,
    captured_at: datetime | None = None,
) -> Residue:
    """Everything that remains of ``identifiers``, and why. Content created after
    ``captured_at`` (default: now) that only shares an address is not the purged content."""
    residue = Residue(checked_at=now)
    before = ObjectId.from_datetime(captured_at or now)
    await _messages(identifiers, residue, now=now, before=before)
    await _conversations(identifiers, residue, now=now, before=before)
    await _blobs(identifiers, residue, now=now, quiet_period=quiet_period)
    await _spool(identifiers, residue)
    await _exports(identifiers, residue)
    await _audit(identifiers, residue)
    await _account(identifiers, residue)
    if data_dir is not None:
        await _files(identifiers, residue, data_dir=data_dir)
        await _search_index(identifiers, residue, data_dir=data_dir)
    return residue


def _slices(values: Iterable[Any]) -> Iterator[list[Any]]:
    ordered = sorted(values)
    for start in range(0, len(ordered), SLICE):
        yield ordered[start : start + SLICE]


async def _held(
    messages: list[dict[str, Any]], *, now: datetime
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``messages`` split into (held, not held) by the holds active at ``now``."""
    accounts, conversations = await held_scopes(
        account_ids=sorted({m["account_id"] for m in messages if m.get("account_id")}),
        conversation_ids=sorted({m["conversation_id"] for m in messages}),
        now=now,
    )

    def is_held(m: dict[str, Any]) -> bool:
        return m.get("account_id") in accounts or m["conversation_id"] in conversations

    return [m for m in messages if is_held(m)], [m for m in messages if not is_held(m)]


_IDS = {"account_id": 1, "conversation_id": 1}


async def _messages(
    identifiers: Identifiers, residue: Residue, *, now: datetime, before: ObjectId
) -> None:
    collection = Message.get_pymongo_collection()
    left: dict[Any, dict[str, Any]] = {}
    for ids in _slices(identifiers.message_ids):
        async for m in collection.find({"_id": {"$in": ids}}, _IDS):
            left[m["_id"]] = m
    if identifiers.account_id:
        due = {"account_id": identifiers.account_id, "purge_due_at": {"$lte": now}}
        async for m in collection.find(due, _IDS):
            left[m["_id"]] = m
    if identifiers.emails:
        # Unlinked mail the customer wrote before the purge (what arrives later from the same
        # address is a new contact, not the purged content).
        emails = sorted(identifiers.emails)  # participants is indexed; the author is among them
        naming = {"account_id": None, "participants": {"$in": emails},
                  "author.email": {"$in": emails}, "_id": {"$lt": before}}  # fmt: skip
        async for m in collection.find(naming, _IDS):
            left[m["_id"]] = m
    held, loose = await _held(list(left.values()), now=now)
    residue.found("messages", len(held), "kept by an active hold", Kind.HELD)
    residue.found("messages", len(loose), "past their deadline and not held")


async def _conversations(
    identifiers: Identifiers, residue: Residue, *, now: datetime, before: ObjectId
) -> None:
    collection = Conversation.get_pymongo_collection()
    found: dict[Any, dict[str, Any]] = {}
    for ids in _slices(identifiers.conversation_ids):
        async for c in collection.find({"_id": {"$in": ids}}, {"account_id": 1}):
            found[c["_id"]] = c
    if identifiers.emails:
        emails = sorted(identifiers.emails)
        naming = {"customer_emails": {"$in": emails}, "_id": {"$lt": before}}
        async for c in collection.find(naming, {"account_id": 1}):
            found[c["_id"]] = c
    kinds = [await _why_kept(c, identifiers, now=now) for c in found.values()]
    residue.found("conversations", kinds.count(Kind.HELD), "held", Kind.HELD)
    residue.found("conversations", kinds.count(Kind.SHARED), "still hold messages that stay "
                  "(another account's, or of a new life of the account)", Kind.SHARED)  # fmt: skip
    residue.found("conversations", kinds.count(Kind.RESIDUE), "left with nothing that keeps them")


async def _why_kept(
    conversation: dict[str, Any], identifiers: Identifiers, *, now: datetime
) -> Kind:
    """A conversation may stay if a hold covers it, or if a message that stays is in it (and,
    when it names the account's addresses, names them too)."""
    ident = conversation["_id"]
    accounts = [conversation["account_id"]] if conversation.get("account_id") else []
    held_accounts, held_conversations = await held_scopes(
        account_ids=accounts, conversation_ids=[ident], now=now
    )
    if held_accounts or held_conversations:
        return Kind.HELD
    staying: dict[str, Any] = {"conversation_id": ident}
    if identifiers.account_id:
        staying["$nor"] = [{"account_id": identifiers.account_id, "purge_due_at": {"$lte": now}}]
    if identifiers.emails:
        staying["$or"] = [{"participants": {"$in": sorted(identifiers.emails)}},
                          {"author.email": {"$in": sorted(identifiers.emails)}}]  # fmt: skip
    stays = await Message.get_pymongo_collection().find_one(staying, {"_id": 1}) is not None
    return Kind.SHARED if stays else Kind.RESIDUE


async def _blobs(
    identifiers: Identifiers, residue: Residue, *, now: datetime, quiet_period: timedelta
) -> None:
    shared = quiet = loose = chunks = 0
    quiet_since = now - quiet_period
    for shas in _slices(identifiers.blobs):
        still = await referenced(shas)
        async for blob in Blob.get_pymongo_collection().find(
            {"_id": {"$in": shas}}, {"last_referenced_at": 1}
        ):
            if blob["_id"] in still:
                shared += 1
            elif blob["last_referenced_at"] >= quiet_since:
                quiet += 1
            else:
                loose += 1
        present = set(await Blob.get_pymongo_collection().distinct("_id", {"_id": {"$in": shas}}))
        orphans = {"blob_id": {"$in": sorted(set(shas) - present)}}
        chunks += await BlobChunk.get_pymongo_collection().count_documents(orphans)
    residue.found("blobs", shared, "the same bytes belong to content that stays", Kind.SHARED)
    residue.found("blobs", quiet, "referenced within the quiet period; the next sweep removes "
                  "them", Kind.PENDING)  # fmt: skip
    residue.found("blobs", loose, "no longer referenced and not removed")
    residue.found("blob_chunks", chunks, "chunks of blobs that are gone")


async def _spool(identifiers: Identifiers, residue: Residue) -> None:
    if not identifiers.emails and not identifiers.account_id:
        return
    needles = _needles(identifiers)
    waiting = 0
    async for entry in SpoolEntry.get_pymongo_collection().find({}, {"raw": 1, "envelope": 1}):
        envelope = entry.get("envelope") or {}
        addresses = {envelope.get("mail_from") or "", *(envelope.get("rcpt_tos") or [])}
        if identifiers.emails & {a.lower() for a in addresses} or (
            entry.get("raw") and needles.search(bytes(entry["raw"]))
        ):
            waiting += 1
    residue.found("spool", waiting, "deliveries naming the account wait to be filed (filed, "
                  "they fall under its deadline)")  # fmt: skip


async def _exports(identifiers: Identifiers, residue: Residue) -> None:
    if identifiers.account_id is None:
        return
    records = await Export.find({"account_id": identifiers.account_id}).count()
    residue.found("exports", records, "export records of the account")


async def _audit(identifiers: Identifiers, residue: Residue) -> None:
    if identifiers.account_id is None and not identifiers.emails:
        return
    subject = Subject(account_id=identifiers.account_id or "", emails=identifiers.emails,
                      name=" ".join(sorted(identifiers.names)) or None)  # fmt: skip
    naming = 0
    events = AuditEvent.get_pymongo_collection().find(naming_query(subject), {"query": 1})
    async for event in events:
        if any(subject.named_in(str(v)) for v in free_text(event.get("query") or {}).values()):
            naming += 1
    residue.found("audit_events", naming, "free text (search terms, filters) naming the account")
    if identifiers.account_id:
        by_id = await AuditEvent.find({"target.account_id": identifiers.account_id}).count()
        residue.found("audit_events", by_id, "name the account by its id only (who read or "
                      "changed what, kept for the audit period)", Kind.KEPT)  # fmt: skip


async def _account(identifiers: Identifiers, residue: Residue) -> None:
    if identifiers.account_id is None:
        return
    account = await Account.get(identifiers.account_id)
    if account is None:
        return
    if account.status is AccountStatus.DELETED and account.purged_at is not None:
        personal = bool(account.emails or account.name)
        residue.found("accounts", int(personal), "the purged account still has emails or a name")
        residue.found("accounts", int(not personal), "tombstone: the id, dates and status, so "
                      "that what links to the id later is purged too", Kind.KEPT)  # fmt: skip
    holds = await Hold.find({"account_id": identifiers.account_id}).count()
    residue.found("holds", holds, "hold records (who, when, why) are kept as the legal trail",
                  Kind.KEPT)  # fmt: skip


def _needles(identifiers: Identifiers) -> re.Pattern[bytes]:
    words = [re.escape(w.encode()) for w in identifiers.words()]
    return re.compile(b"|".join(words) or b"(?!)", re.IGNORECASE)


async def _files(identifiers: Identifiers, residue: Residue, *, data_dir: Path) -> None:
    """Files the service writes under ARCHIVE_DATA_DIR: export files no live record owns (any
    account's: their records went, so they should have too), and every other file searched
    for the account's id, addresses and names."""
    exports = data_dir / "exports"
    if exports.is_dir():
        unowned = await unowned_export_files(directory=exports)
        residue.found("exports folder", len(unowned), "export files no record owns")
    needles = _needles(identifiers)
    hits = sum(1 for path in _service_files(data_dir) if _mentions(path, needles))
    residue.found("data folder", hits, "files naming the account")
    addresses = _addresses(identifiers)
    logged = sum(1 for path in _mongod_logs(data_dir) if _mentions(path, addresses))
    residue.found("mongod log", logged, "MongoDB's own log files name the account's addresses "
                  "or names (an operation logged with its values)")  # fmt: skip


def _mentions(path: Path, needles: re.Pattern[bytes], chunk: int = 1 << 20) -> bool:
    """Whether the file contains a needle, read a chunk at a time (a journal may be large)."""
    overlap = b""
    with path.open("rb") as source:
        while block := source.read(chunk):
            if needles.search(overlap + block):
                return True
            overlap = block[-512:]
    return False


def _addresses(identifiers: Identifiers) -> re.Pattern[bytes]:
    """The addresses and names, as whole words: in mongod's log, which names databases,
    collections and indexes (``channel``), and ids are what logs may carry."""
    words = [re.escape(w.encode()) for w in sorted(identifiers.emails | identifiers.names) if w]
    return re.compile(rb"\b(?:" + b"|".join(words) + rb")\b" if words else b"(?!)", re.IGNORECASE)


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


async def _search_index(identifiers: Identifiers, residue: Residue, *, data_dir: Path) -> None:
    """The search index under ``data_dir``, read from its files: no purged message may be
    found, and one deleted but still in the files is pending until housekeeping compacts them.
    The serve that follows the index may be a moment behind the purge (another process ran
    it): it is given a few seconds to catch up before what it still finds counts."""
    database = Message.get_pymongo_collection().database.name
    path = index_path(data_dir, database)
    ids = sorted(str(i) for i in identifiers.message_ids)
    deadline = time.monotonic() + INDEX_CATCH_UP_SECONDS
    found = await asyncio.to_thread(presence, path, ids)
    while found.searchable and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        found = await asyncio.to_thread(presence, path, ids)
    residue.found("search index", found.searchable,
                  "purged messages still found by search (an index no running serve follows "
                  "catches up when its serve starts)")  # fmt: skip
    residue.found("search index files", found.deleted,
                  "purged messages deleted from search, in files compacted at the next "
                  "housekeeping", Kind.PENDING)  # fmt: skip


def describe(residue: Residue) -> str:
    """One line: the verdict of the scan."""
    if not residue.clean:
        state = f"{residue.unexplained} items remain that should not"
    elif residue.content_remains:
        state = "clean; content remains that a hold or the blob quiet period explains"
    else:
        state = "clean: nothing of it remains"
    return f"residue scan at {iso(residue.checked_at)}: {state}"
