"""Purge records, the proof of deletion: each purge's record opened (or resumed) before it
deletes anything, looked up by account, and the residue scan on demand (``verify-purge``).

A record names its account only by an HMAC of the id (``retention.rules.subject_hmac``): it
answers whether and when an account was purged to whoever knows the id, and nothing more.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from beanie import PydanticObjectId

from retention.residue import Identifiers, Residue, scan
from retention.rules import RetentionPolicy, subject_hmac
from store.documents import Account, PurgeRecord, PurgeRule


async def open_records(
    purges: list[tuple[PurgeRule, datetime, str | None]],
    *,
    policy: RetentionPolicy,
    now: datetime,
) -> list[PurgeRecord]:
    """The records of these purges (rule, deadline, account), in their order: an unfinished
    one for the same purge is resumed, never doubled, and so is the last one if it deleted
    nothing (a held account's purge is tried at every sweep: before, each wrote a record
    repeating the same findings); the new ones are inserted together."""
    prefixes = []
    for rule, due_at, account_id in purges:
        subject = subject_hmac(policy.secret_key, account_id) if account_id else None
        prefixes.append((f"{rule.value}:{subject or 'any'}:{due_at.isoformat()}", subject))
    earlier: Counter[str] = Counter()
    unfinished: dict[str, PurgeRecord] = {}
    latest: dict[str, tuple[int, PurgeRecord]] = {}
    found_records = PurgeRecord.get_pymongo_collection().find(
        records_of_purges([prefix for prefix, _ in prefixes])
    )
    async for doc in found_records:
        found = PurgeRecord.model_validate(doc)
        prefix, number = found.purge_key.rsplit(":", 1)
        earlier[prefix] += 1
        if found.done_at is None:
            unfinished[prefix] = found
        if int(number) > latest.get(prefix, (0, found))[0]:
            latest[prefix] = (int(number), found)
    records, new, again = [], [], []
    for (rule, due_at, _), (prefix, subject) in zip(purges, prefixes, strict=True):
        record = unfinished.get(prefix)
        if record is None and prefix in latest and _deleted_nothing(latest[prefix][1]):
            # The same purge found nothing to delete last time either (what is left is held):
            # its record is taken up again, not one more written at every sweep.
            record = latest[prefix][1]
            again.append(record.id)
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
    if again:
        await PurgeRecord.get_pymongo_collection().update_many(
            {"_id": {"$in": again}}, {"$set": {"done_at": None}}
        )
        for record in records:
            if record.id in again:
                record.done_at = None
    return records


def _deleted_nothing(record: PurgeRecord) -> bool:
    """A closed record of a try that deleted nothing because a hold kept what was due (not a
    finished purge of an empty account: that certificate stands)."""
    counts = record.counts
    kept = (record.residue or {}).get("verdict") == "kept"
    return (kept and record.done_at is not None and not record.pending_blobs
            and not record.pending_conversations
            and counts.messages == counts.conversations == counts.blobs == 0)  # fmt: skip


def records_of_purges(prefixes: Sequence[str]) -> dict[str, Any]:
    """The query for the records of these purges: every ``purge_key`` that is a prefix, ":"
    and a number, one range of the unique index per prefix."""
    # Not anchored regular expressions: the driver sends Python's with the "u" flag, and with
    # any flag but "m" or "x" mongod reads the whole index instead of the prefix's range (a
    # group's lookup cost grew with every record ever written). ";" follows ":" in ASCII, so
    # the range holds exactly the keys that start with the prefix and ":".
    return {"$or": [{"purge_key": {"$gte": f"{prefix}:", "$lt": f"{prefix};"}}
                    for prefix in prefixes]}  # fmt: skip


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
    names given: a tombstone keeps none) remains anywhere the service keeps data, the blobs
    its purges left pending included (before, a scan that did not know them said "clean"
    while the next sweep still had the raw mail to delete)."""
    account = await Account.get(account_id)
    identifiers = Identifiers(account_id=account_id, emails={e.lower() for e in emails},
                              names=set(names))  # fmt: skip
    records = await purge_records(secret_key=policy.secret_key, account_id=account_id)
    for record in records:
        identifiers.blobs.update(record.pending_blobs)
        identifiers.conversation_ids.update(record.pending_conversations)
    if account is not None:
        identifiers.emails |= set(account.emails)
        identifiers.names |= {account.name} if account.name else set()
    # Mail that only shares an address and arrived after the purge is not the purged content.
    captured = account.purged_at if account is not None and account.purged_at else now
    # Every search index must have applied the last of its purges' deletions.
    ended = max((r.done_at for r in records if r.done_at is not None), default=None)
    return await scan(identifiers, now=now, quiet_period=policy.blob_quiet_period,
                      data_dir=policy.data_dir, captured_at=captured,
                      indexes_since=ended)  # fmt: skip
