"""Housekeeping: remove what a crash or a deferred purge can leave behind (blobs or chunks
nothing refers to), walking every blob with a cursor so that no orphan is ever out of reach."""

from __future__ import annotations

from datetime import timedelta

from store.blobs import referenced
from store.documents import Blob, BlobChunk, Message, utcnow


async def remove_orphans(*, quiet_period: timedelta, batch_size: int = 1000) -> int:
    """Blobs no message references, and chunks without a blob, untouched for ``quiet_period``
    (younger ones may belong to a message being stored right now). Returns how many went."""
    return await _orphan_blobs(quiet_period, batch_size) + await _orphan_chunks(quiet_period)


async def _orphan_blobs(quiet_period: timedelta, batch_size: int) -> int:
    quiet_since = utcnow() - quiet_period
    blobs = Blob.get_pymongo_collection()
    removed = 0
    after: str | None = None
    while True:
        # Walked by _id (a cursor of our own, not the oldest N): referenced blobs, however
        # many, never hide an orphan behind them.
        page = {"_id": {"$gt": after}} if after is not None else {}
        found = blobs.find({**page, "last_referenced_at": {"$lt": quiet_since}}, {"_id": 1})
        shas = [b["_id"] async for b in found.sort("_id", 1).limit(batch_size)]
        if not shas:
            return removed
        after = shas[-1]
        for sha in sorted(set(shas) - await referenced(shas)):
            gone = await blobs.delete_one({"_id": sha, "last_referenced_at": {"$lt": quiet_since}})
            if gone.deleted_count:
                await BlobChunk.get_pymongo_collection().delete_many({"blob_id": sha})
                removed += 1


async def _orphan_chunks(quiet_period: timedelta) -> int:
    quiet_since = utcnow() - quiet_period
    chunks = BlobChunk.get_pymongo_collection()
    removed = 0
    for sha in await chunks.distinct("blob_id"):
        if await Blob.get_pymongo_collection().find_one({"_id": sha}, {"_id": 1}) is None:
            first = await chunks.find_one({"blob_id": sha, "n": 0})
            if first is None or first["_id"].generation_time < quiet_since:
                removed += (await chunks.delete_many({"blob_id": sha})).deleted_count
    return removed


async def retire_search_terms(*, batch_size: int = 1000, limit: int = 100_000) -> int:
    """Remove the ``search_terms`` field that archives of before the search engine kept in
    every message (search runs on its own index now), a bounded batch per run."""
    messages = Message.get_pymongo_collection()
    removed = 0
    while removed < limit:
        found = messages.find({"search_terms": {"$exists": True}}, {"_id": 1}).limit(batch_size)
        ids = [m["_id"] async for m in found]
        if not ids:
            break
        result = await messages.update_many({"_id": {"$in": ids}}, {"$unset": {"search_terms": ""}})
        removed += result.modified_count
    return removed
