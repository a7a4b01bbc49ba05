"""Deleting one batch of due messages, then what only they used: their blobs and the
conversations they leave empty, in an order that a crash or a hold placed meanwhile cannot break.

Each message is counted on its purge's record in the transaction that deletes it, and its blobs
and conversations are listed on the record before: a crash after the delete leaves them
pending, for the next sweep (``retention.sweep``) to finish.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from beanie import PydanticObjectId
from pymongo import UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession

from exports.builder import remove_exports
from retention.holds import held_scopes, unheld
from retention.rules import RetentionPolicy, subject_hmac
from store.blobs import referenced
from store.database import Database
from store.documents import (
    Account,
    AccountStatus,
    Blob,
    BlobChunk,
    Conversation,
    Message,
    PurgeRecord,
    utcnow,
)

Hook = Callable[[], Awaitable[None]]


@dataclass
class Purged:
    """What one batch's purge deleted: messages of each account, and the totals."""

    by_account: Counter[str | None]
    messages: int = 0
    blobs: int = 0
    bytes: int = 0
    conversations: int = 0


@dataclass(frozen=True)
class Doomed:
    """What the purge needs of a message it deletes (read without its content)."""

    id: PydanticObjectId
    account_id: str | None
    conversation_id: PydanticObjectId
    blobs: tuple[str, ...]
    collected_at: datetime | None = None


_DOOMED_FIELDS = {"account_id": 1, "conversation_id": 1, "raw.sha256": 1,
                  "attachments.sha256": 1, "collected_at": 1}  # fmt: skip


async def next_batch(query: dict[str, Any], size: int, *, oldest: bool = False) -> list[Doomed]:
    found = Message.get_pymongo_collection().find(query, _DOOMED_FIELDS).limit(size)
    if oldest:
        found = found.sort([("collected_at", 1), ("_id", 1)])
    return [_doomed(m) async for m in found]


def _doomed(message: dict[str, Any]) -> Doomed:
    blobs = [a["sha256"] for a in message.get("attachments") or []]
    if message.get("raw"):
        blobs.append(message["raw"]["sha256"])
    return Doomed(
        id=message["_id"],
        account_id=message.get("account_id"),
        conversation_id=message["conversation_id"],
        blobs=tuple(blobs),
        collected_at=message.get("collected_at"),
    )


async def purge_batch(
    database: Database,
    batch: list[Doomed],
    *,
    now: datetime,
    policy: RetentionPolicy,
    record_of: Callable[[Doomed], PurgeRecord],
    still_due: dict[str, Any],
    in_transaction: Hook,
    subjects: bool = False,
    deletions: bool = False,
) -> Purged:
    """Delete one batch of messages that are still due (``still_due``), that no hold covers
    and, for the deletion of accounts (``deletions``), whose account is still deleted (a
    restore since wins), all checked inside the delete's transaction; then their blobs, and
    their conversations are settled. Each message counts on its purge's record
    (``record_of``); ``subjects`` names each message's account on it (the maximum age's record
    covers many). ``in_transaction`` runs inside the transaction once it has read the holds."""
    records = {record_of(m).id: record_of(m) for m in batch}
    mine: dict[Any, list[Doomed]] = {}
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
                hmacs = [subject_hmac(policy.secret_key, a) for a in named]
                update["$addToSet"] = {"subjects": {"$each": hmacs}}
            updates.append(UpdateOne({"_id": record_id}, update))
        return updates

    async def delete(session: AsyncClientSession) -> list[dict[str, Any]]:
        # The holds are read first, which fixes the transaction's snapshot; then the guard
        # writes: a hold committed after that snapshot wrote the same guard, so this
        # transaction conflicts and is retried (and sees the hold); a hold placed later waits
        # for this one to commit.
        held_accounts, held_conversations = await held_scopes(
            account_ids=accounts, conversation_ids=conversations, now=now, session=session
        )
        still: dict[str, Any] | None = still_due
        if deletions:
            still = await _still_deleted(accounts, still_due, session)
        await in_transaction()
        if still is None:
            return []  # restored (or registered again) since: nothing of them goes
        if accounts:
            await Account.get_pymongo_collection().update_many(
                {"_id": {"$in": accounts}}, {"$inc": {"guard": 1}}, session=session
            )
        await Conversation.get_pymongo_collection().update_many(
            {"_id": {"$in": conversations}}, {"$inc": {"guard": 1}}, session=session
        )
        query = unheld({"_id": {"$in": ids}, **still}, sorted(held_accounts),
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

    async with database.client.start_session() as session:
        gone: list[dict[str, Any]] = await session.with_transaction(delete)
    purged = Purged(Counter(m.get("account_id") for m in gone), messages=len(gone))
    for key, messages in mine.items():
        shas = sorted({b for m in messages for b in m.blobs})
        if shas:
            count, size = await collect_blobs(shas, record=records[key], policy=policy)
            purged.blobs += count
            purged.bytes += size
    conversation_record = {m.conversation_id: record_of(m) for m in batch}
    purged.conversations += await settle_pending_conversations(conversation_record, now)
    return purged


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


async def settle_pending_conversations(
    conversations: dict[PydanticObjectId, PurgeRecord], now: datetime
) -> int:
    """Settle the conversations a batch touched (each listed on the record of the purge that
    touched it), then strike them from the records' pending lists (a crash in between leaves
    them for the next sweep)."""
    if not conversations:
        return 0
    dropped = await settle_conversations(
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


async def collect_blobs(
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


async def settle_conversations(
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
    # A disclosure of one of them goes with it (a hold released, its conversation purged).
    await remove_exports({"conversation_ids": {"$in": [c["_id"] for c in going]}})
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
