"""Content-addressed blobs: stored once, read back exactly, large ones in chunks."""

from __future__ import annotations

import os

from store.blobs import put_blob, read_blob, sha256_hex
from store.database import Database
from store.documents import BLOB_CHUNK_SIZE, BLOB_INLINE_MAX, Blob, BlobChunk


async def test_small_content_is_stored_inline_once(database: Database) -> None:
    first = await put_blob(b"hello")
    second = await put_blob(b"hello")
    assert first == second
    assert first.sha256 == sha256_hex(b"hello")
    assert await Blob.count() == 1
    assert await BlobChunk.count() == 0
    assert await read_blob(first.sha256) == b"hello"


async def test_content_larger_than_a_document_allows_is_chunked(database: Database) -> None:
    data = os.urandom(BLOB_INLINE_MAX + 2 * BLOB_CHUNK_SIZE + 123)
    ref = await put_blob(data)
    assert ref.size == len(data)
    assert await BlobChunk.count() == 4
    assert await read_blob(ref.sha256) == data


async def test_storing_again_marks_the_blob_referenced_now(database: Database) -> None:
    ref = await put_blob(b"shared")
    before = await Blob.get(ref.sha256)
    await put_blob(b"shared")
    after = await Blob.get(ref.sha256)
    assert before is not None and after is not None
    assert after.last_referenced_at >= before.last_referenced_at
    assert after.created_at == before.created_at
