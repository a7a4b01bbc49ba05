"""Content-addressed blob storage: the same bytes are stored once, small inline, large chunked."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from pymongo import UpdateOne

from store.documents import (
    BLOB_CHUNK_SIZE,
    BLOB_INLINE_MAX,
    AttachmentRef,
    Blob,
    BlobChunk,
    BlobRef,
    Message,
    SpoolEntry,
    utcnow,
)
from store.errors import NotFound


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def put_blob(data: bytes) -> BlobRef:
    """Store ``data`` unless it is already there, and mark it referenced now.

    Chunks are written before the blob document, so a blob document always has its chunks; a
    crash in between leaves only chunks without a blob, which housekeeping removes.
    """
    digest = sha256_hex(data)
    now = utcnow()
    inline = len(data) <= BLOB_INLINE_MAX
    blobs = Blob.get_pymongo_collection()
    if not inline:
        # Already stored (its blob document is written after its chunks): do not send the
        # chunks again, as the filer would for a large message the spool already holds.
        touched = await blobs.update_one({"_id": digest}, {"$set": {"last_referenced_at": now}})
        if touched.matched_count:
            return BlobRef(sha256=digest, size=len(data))
        for n, start in enumerate(range(0, len(data), BLOB_CHUNK_SIZE)):
            await BlobChunk.get_pymongo_collection().update_one(
                {"blob_id": digest, "n": n},
                {"$setOnInsert": {"data": data[start : start + BLOB_CHUNK_SIZE]}},
                upsert=True,
            )
    chunk_count = 0 if inline else -(-len(data) // BLOB_CHUNK_SIZE)
    await blobs.update_one(
        {"_id": digest},
        {
            "$setOnInsert": {
                "size": len(data),
                "data": data if inline else None,
                "chunk_count": chunk_count,
                "created_at": now,
            },
            "$set": {"last_referenced_at": now},
        },
        upsert=True,
    )
    return BlobRef(sha256=digest, size=len(data))


async def put_blobs(datas: Sequence[bytes]) -> list[BlobRef]:
    """``put_blob`` for many at once: the small ones in one unordered bulk upsert."""
    now = utcnow()
    refs: list[BlobRef] = []
    small: dict[str, bytes] = {}
    for data in datas:
        if len(data) <= BLOB_INLINE_MAX:
            digest = sha256_hex(data)
            small.setdefault(digest, data)
            refs.append(BlobRef(sha256=digest, size=len(data)))
        else:
            refs.append(await put_blob(data))
    if small:
        await Blob.get_pymongo_collection().bulk_write(
            [
                UpdateOne(
                    {"_id": digest},
                    {
                        "$setOnInsert": {
                            "size": len(data),
                            "data": data,
                            "chunk_count": 0,
                            "created_at": now,
                        },
                        "$set": {"last_referenced_at": now},
                    },
                    upsert=True,
                )
                for digest, data in small.items()
            ],
            ordered=False,
        )
    return refs


@dataclass(frozen=True)
class NewAttachment:
    """An attachment as ingest found it: its bytes and what the sender said of them."""

    data: bytes
    filename: str | None
    content_type: str
    inline: bool = False
    content_id: str | None = None


async def put_attachment(attachment: NewAttachment) -> AttachmentRef:
    return attachment_ref(attachment, await put_blob(attachment.data))


def attachment_ref(attachment: NewAttachment, ref: BlobRef) -> AttachmentRef:
    return AttachmentRef(
        sha256=ref.sha256,
        size=ref.size,
        filename=attachment.filename,
        content_type=attachment.content_type,
        inline=attachment.inline,
        content_id=attachment.content_id,
    )


async def is_referenced(sha256: str) -> bool:
    """Whether any message still refers to the blob (as its raw copy or an attachment), or a
    large delivery waiting in the spool to be filed."""
    return bool(await referenced([sha256]))


async def referenced(shas: Sequence[str]) -> set[str]:
    """Which of ``shas`` a message or a spooled delivery still refers to (three queries for
    all of them, rather than two per blob)."""
    if not shas:
        return set()
    wanted = sorted(set(shas))
    found: set[str] = set()
    messages = Message.get_pymongo_collection()
    async for m in messages.find({"raw.sha256": {"$in": wanted}}, {"raw.sha256": 1}):
        found.add(m["raw"]["sha256"])
    query = {"attachments.sha256": {"$in": wanted}}
    async for m in messages.find(query, {"attachments.sha256": 1}):
        found |= {a["sha256"] for a in m["attachments"]}
    spooled = {"raw_sha256": {"$in": wanted}}
    async for entry in SpoolEntry.get_pymongo_collection().find(spooled, {"raw_sha256": 1}):
        found.add(entry["raw_sha256"])
    return found & set(wanted)


async def iter_blob(sha256: str) -> AsyncIterator[bytes]:
    """The bytes of a blob a chunk at a time, so that large blobs never sit whole in memory."""
    blob = await Blob.get_pymongo_collection().find_one({"_id": sha256}, {"data": 1, "size": 1})
    if blob is None:
        raise NotFound(f"blob {sha256} does not exist")
    if blob.get("data") is not None:
        yield bytes(blob["data"])
        return
    chunks = BlobChunk.get_pymongo_collection().find({"blob_id": sha256}).sort("n", 1)
    async for chunk in chunks:
        yield bytes(chunk["data"])


async def read_blob(sha256: str) -> bytes:
    blob = await Blob.get(sha256)
    if blob is None:
        raise NotFound(f"blob {sha256} does not exist")
    if blob.data is not None:
        return blob.data
    chunks = BlobChunk.find(BlobChunk.blob_id == sha256).sort("+n")
    return b"".join([chunk.data async for chunk in chunks])
