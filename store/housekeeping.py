"""Housekeeping: remove what a crash can leave behind (blobs or chunks nothing refers to)."""

from __future__ import annotations

from datetime import timedelta

from store.blobs import is_referenced
from store.documents import Blob, BlobChunk, utcnow


async def remove_orphans(*, quiet_period: timedelta, limit: int = 10_000) -> int:
    """Blobs no message references, and chunks without a blob, untouched for ``quiet_period``
    (younger ones may belong to a message being stored right now)."""
    quiet_since = utcnow() - quiet_period
    removed = 0
    old_blobs = (
        Blob.get_pymongo_collection()
        .find({"last_referenced_at": {"$lt": quiet_since}}, {"_id": 1})
        .limit(limit)
    )
    async for blob in old_blobs:
        sha = blob["_id"]
        if await is_referenced(sha):
            continue
        result = await Blob.get_pymongo_collection().delete_one(
            {"_id": sha, "last_referenced_at": {"$lt": quiet_since}}
        )
        if result.deleted_count:
            await BlobChunk.get_pymongo_collection().delete_many({"blob_id": sha})
            removed += 1
    chunk_owners = await BlobChunk.get_pymongo_collection().distinct("blob_id")
    for sha in chunk_owners:
        if await Blob.get_pymongo_collection().find_one({"_id": sha}, {"_id": 1}) is None:
            first = await BlobChunk.get_pymongo_collection().find_one({"blob_id": sha, "n": 0})
            if first is None or first["_id"].generation_time < quiet_since:
                removed += (
                    await BlobChunk.get_pymongo_collection().delete_many({"blob_id": sha})
                ).deleted_count
    return removed
