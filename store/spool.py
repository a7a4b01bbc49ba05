"""The spool: deliveries written durably first, filed behind the acknowledgement.

Acknowledging a delivery costs one durable write, shared by every delivery that arrived
meanwhile (group commit): while one ``insert_many`` is in flight the next deliveries gather,
and each caller resumes once the write that holds its entry has returned. Parsing, threading,
search terms and linking happen later, in the filer (``ingest.filer``), which deletes an entry
only after filing it; filing is idempotent, so a crash in between files it again as a no-op.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Collection, Sequence
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from beanie import PydanticObjectId
from pymongo.errors import BulkWriteError, DuplicateKeyError
from pymongo.read_concern import ReadConcern

from store.blobs import put_blob, read_blob
from store.documents import BLOB_INLINE_MAX, Envelope, Message, SpoolEntry, utcnow
from store.messages import DUPLICATE_KEY

log = logging.getLogger("archive.spool")

T = TypeVar("T")
R = TypeVar("R")

# An entry is filed within seconds by the instance that accepted it, which renews its leases
# while it runs; if the instance dies, another one (or its restart) takes the entry over once
# the lease has run out.
LEASE = timedelta(seconds=60)


class SpoolFull(Exception):
    """More deliveries wait to be filed than the spool may hold: the sender should retry."""


class GroupCommit(Generic[T, R]):
    """Items of concurrent callers written together, at most ``max_batch`` per write and at
    most ``max_in_flight`` writes at a time (a durable write mostly waits for the journal, so
    a few overlap well).

    ``write`` takes a list of items and returns one result per item, in order (an exception
    as the result of an item fails that item's caller alone). ``submit`` returns its item's
    result once the write holding it has returned, or raises what that write raised. A write
    that fails fails every item of its batch, never another batch.
    """

    def __init__(
        self,
        write: Callable[[list[T]], Awaitable[Sequence[R | Exception]]],
        *,
        max_batch: int = 500,
        max_in_flight: int = 1,
    ) -> None:
        self._write = write
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._writers: set[asyncio.Task[None]] = set()

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if len(self._writers) < self._max_in_flight:
            writer = asyncio.create_task(self._drain(), name="group-commit")
            self._writers.add(writer)
            writer.add_done_callback(self._writers.discard)
        return await asyncio.shield(future)

    async def _drain(self) -> None:
        while self._pending:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            try:
                results = await self._write([item for item, _ in batch])
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for (_, future), result in zip(batch, results, strict=True):
                    if future.done():
                        continue
                    if isinstance(result, Exception):  # this item alone failed
                        future.set_exception(result)
                    else:
                        future.set_result(result)


class Spool:
    """The spool of one serve instance: it writes entries it owns and hands them to its filer.

    ``max_backlog`` bounds the entries accepted and not filed yet; beyond it ``put_email``
    raises SpoolFull, and SMTP answers 451 so that the MTA keeps the mail and retries.
    """

    def __init__(self, *, max_backlog: int = 50_000, lease: timedelta = LEASE) -> None:
        self.owner = uuid.uuid4().hex[:12]
        self.lease = lease
        self.max_backlog = max_backlog
        self.arrived = asyncio.Event()
        self._backlog = 0
        self._empty = asyncio.Event()
        self._empty.set()
        self._commit: GroupCommit[SpoolEntry, None] = GroupCommit(self._insert, max_in_flight=4)
        self._commit_each: GroupCommit[SpoolEntry, None] = GroupCommit(
            self._insert_each, max_in_flight=4
        )
        # Lookups of concurrent deliveries are grouped as their writes are: one indexed find.
        self._stored: GroupCommit[str, PydanticObjectId | None] = GroupCommit(
            stored_ids, max_in_flight=4
        )

    @property
    def backlog(self) -> int:
        """Entries this instance accepted and has not filed yet."""
        return self._backlog

    async def put_email(
        self,
        raw: bytes,
        *,
        envelope: Envelope | None,
        received_at: datetime,
        dedup_key: str | None = None,
    ) -> PydanticObjectId:
        """Write one delivery durably; its id is the id its message will have. A
        retransmission of a stored message (its ``dedup_key`` is stored) is not written
        again: the stored message's id is returned. One still in the spool is written, and
        its id becomes an alias of the first copy's message when both are filed."""
        if dedup_key is not None:
            stored = await self._stored.submit(dedup_key)
            if stored is not None:
                return stored
        if self._backlog >= self.max_backlog:
            raise SpoolFull(f"{self._backlog} deliveries wait to be filed")
        inline = len(raw) <= BLOB_INLINE_MAX
        # A message too large for one document is written as a blob first (chunked); the
        # entry, written last, is what makes the delivery count.
        sha256 = None if inline else (await put_blob(raw)).sha256
        entry = SpoolEntry(
            id=PydanticObjectId(),
            raw=raw if inline else None,
            raw_sha256=sha256,
            size=len(raw),
            envelope=envelope,
            received_at=received_at,
            owner=self.owner,
            lease_until=utcnow() + self.lease,
        )
        # Counted before it is written: the filer may file it before this coroutine resumes.
        self._backlog += 1
        self._empty.clear()
        try:
            await self._commit.submit(entry)
        except BaseException:
            self._forget(1)
            raise
        self.arrived.set()
        assert entry.id is not None
        return entry.id

    async def put_entry(self, entry: SpoolEntry) -> None:
        """Write one prepared entry durably (group commit, as ``put_email``), owned by this
        instance. A duplicate key on a unique field of the spool fails this entry alone, with
        ``DuplicateKeyError``; the other entries of its write are written."""
        if self._backlog >= self.max_backlog:
            raise SpoolFull(f"{self._backlog} deliveries wait to be filed")
        entry.owner, entry.lease_until = self.owner, utcnow() + self.lease
        self._backlog += 1
        self._empty.clear()
        try:
            await self._commit_each.submit(entry)
        except BaseException:
            self._forget(1)
            raise
        self.arrived.set()

    async def _insert_each(self, entries: list[SpoolEntry]) -> list[Exception | None]:
        results: list[Exception | None] = [None] * len(entries)
        try:
            await SpoolEntry.get_pymongo_collection().insert_many(
                [e.model_dump(by_alias=True) for e in entries], ordered=False
            )
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != DUPLICATE_KEY for e in errors) or exc.details.get(
                "writeConcernErrors"
            ):
                raise
            for error in errors:
                results[error["index"]] = DuplicateKeyError(error.get("errmsg", ""), DUPLICATE_KEY)
        return results

    async def _insert(self, entries: list[SpoolEntry]) -> list[None]:
        await SpoolEntry.get_pymongo_collection().insert_many(
            [e.model_dump(by_alias=True) for e in entries], ordered=False
        )
        return [None] * len(entries)

    async def claim(
        self,
        limit: int,
        *,
        skip: Collection[PydanticObjectId] = (),
        max_bytes: int | None = None,
    ) -> list[SpoolEntry]:
        """The oldest entries this instance owns, at most ``limit``, except ``skip``; with
        ``max_bytes``, only as many of them as hold that many bytes together (always one)."""
        query: dict[str, Any] = {"owner": self.owner}
        if skip:
            query["_id"] = {"$nin": list(skip)}
        if max_bytes is None:
            return await SpoolEntry.find(query).sort("+_id").limit(limit).to_list()
        # The server cuts the batch: entries beyond the bytes are not sent only to be dropped.
        pipeline: list[dict[str, Any]] = [
            {"$match": query}, {"$sort": {"_id": 1}}, {"$limit": limit},
            {"$setWindowFields": {"sortBy": {"_id": 1}, "output": {
                "_rank": {"$documentNumber": {}},
                "_before": {"$sum": "$size", "window": {"documents": ["unbounded", -1]}},
            }}},
            {"$match": {"$or": [
                {"_rank": 1},  # the first entry, whatever its size
                {"$expr": {"$lte": [{"$add": ["$_before", "$size"]}, max_bytes]}},
            ]}},
            {"$unset": ["_rank", "_before"]},
        ]  # fmt: skip
        cursor = await SpoolEntry.get_pymongo_collection().aggregate(pipeline)
        return [SpoolEntry.model_validate(doc) async for doc in cursor]

    async def take_over(self, *, now: datetime | None = None) -> int:
        """Own the entries whose owner's lease ran out (an instance that died), and renew
        this instance's leases. Returns how many entries were taken over."""
        now = now or utcnow()
        collection = SpoolEntry.get_pymongo_collection()
        await collection.update_many(
            {"owner": self.owner}, {"$set": {"lease_until": now + self.lease}}
        )
        taken = await collection.update_many(
            {"lease_until": {"$lt": now}, "owner": {"$ne": self.owner}},
            {"$set": {"owner": self.owner, "lease_until": now + self.lease}},
        )
        if taken.modified_count:
            log.warning("took over %d spooled deliveries of a stopped instance",
                        taken.modified_count)  # fmt: skip
            self._backlog += taken.modified_count
            self._empty.clear()
            self.arrived.set()
        return taken.modified_count

    async def done(self, ids: Sequence[PydanticObjectId]) -> None:
        """Forget entries that are filed (durably: the filing wrote before this)."""
        if not ids:
            return
        result = await SpoolEntry.get_pymongo_collection().delete_many(
            {"_id": {"$in": list(ids)}, "owner": self.owner}
        )
        self._forget(result.deleted_count)

    def _forget(self, count: int) -> None:
        self._backlog = max(0, self._backlog - count)
        if self._backlog == 0:
            self._empty.set()

    async def failed(self, entry: SpoolEntry, error: str) -> None:
        """Note a filing error on an entry; it stays (nothing is dropped) and is retried."""
        await SpoolEntry.get_pymongo_collection().update_one(
            {"_id": entry.id}, {"$inc": {"attempts": 1}, "$set": {"last_error": error[:500]}}
        )

    async def empty(self, *, within: float) -> bool:
        """Wait until everything this instance accepted is filed (or ``within`` seconds)."""
        try:
            await asyncio.wait_for(self._empty.wait(), within)
            return True
        except TimeoutError:
            return False


async def stored_ids(dedup_keys: list[str]) -> list[PydanticObjectId | None]:
    """The id of the message stored under each dedup key, or None. Read at majority: a
    message only locally written could still be rolled back, and its id with it."""
    collection = Message.get_pymongo_collection().with_options(read_concern=ReadConcern("majority"))
    cursor = collection.find({"dedup_key": {"$in": sorted(set(dedup_keys))}}, {"dedup_key": 1})
    found = {d["dedup_key"]: PydanticObjectId(d["_id"]) async for d in cursor}
    return [found.get(k) for k in dedup_keys]


async def raw_of(entry: SpoolEntry) -> bytes:
    if entry.raw is not None:
        return entry.raw
    assert entry.raw_sha256 is not None
    return await read_blob(entry.raw_sha256)
