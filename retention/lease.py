"""A lease in MongoDB: of several processes, one holds a named lease until it expires."""

from __future__ import annotations

from datetime import datetime, timedelta

from pymongo.errors import DuplicateKeyError

from store.documents import Lease


async def acquire(*, name: str, holder: str, now: datetime, ttl: timedelta) -> bool:
    """Take or renew ``name`` for ``holder`` until ``now + ttl``; False if another holds it.

    One atomic upsert: matched when free, expired or already ours; when another process holds
    it, the upsert collides with its ``_id`` and the lease is not ours.
    """
    try:
        await Lease.get_pymongo_collection().update_one(
            {"_id": name, "$or": [{"holder": holder}, {"expires_at": {"$lte": now}}]},
            {"$set": {"holder": holder, "expires_at": now + ttl},
             "$setOnInsert": {"acquired_at": now}},
            upsert=True,
        )  # fmt: skip
    except DuplicateKeyError:
        return False
    return True


async def release(*, name: str, holder: str) -> None:
    await Lease.get_pymongo_collection().delete_one({"_id": name, "holder": holder})
