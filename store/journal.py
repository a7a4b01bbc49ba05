"""The webhook journal: calls acknowledged while MongoDB could not take them, kept on local disk
until they are replayed into the spool.

Webhook senders such as Chatwoot never retry, so a call that the spool cannot take in time is
appended here, fsync'd, and then acknowledged. The journal is a directory of append-only
segment files (``<data dir>/journal/*.journal``, owner-only permissions: it holds personal
data). Each record is ``magic | payload length | CRC-32 of payload | payload``; the payload is
the call's source and receipt time (JSON) and its raw body. A crash in the middle of an append
leaves a torn last record, which the checksum exposes: it is skipped (it was never
acknowledged) and the records before it are kept.

Replaying puts each record into the spool, in order, and deletes a segment only once every
record in it is durably there; a replay cut short is done again, which is harmless because
putting a call into the spool is idempotent. The process that writes a segment holds an
exclusive ``flock`` on it, so that another serve process sharing the data directory replays
only the segments of writers that are gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import struct
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from prometheus_client import Counter, Gauge

from store.spool import GroupCommit

log = logging.getLogger("archive.journal")

MAGIC = b"SAJ1"
_HEADER = struct.Struct(">4sII")  # magic, payload length, CRC-32 of the payload
_META = struct.Struct(">H")  # length of the JSON metadata that starts a payload
SUFFIX = ".journal"
# Segments are closed at this size, so that a replay cut short redoes little.
SEGMENT_BYTES = 16 * 1024 * 1024

PENDING_BYTES = Gauge("archive_journal_pending_bytes", "Bytes of webhook calls journaled and "
                      "not replayed into the spool yet")  # fmt: skip
PENDING_RECORDS = Gauge("archive_journal_pending_records", "Webhook calls journaled and not "
                        "replayed into the spool yet")  # fmt: skip
JOURNALED = Counter("archive_journal_appended_total", "Webhook calls journaled (the database "
                    "could not take them in time)")  # fmt: skip
REPLAYED = Counter("archive_journal_replayed_total", "Journaled webhook calls replayed into the "
                   "spool")  # fmt: skip


class JournalFull(Exception):
    """The journal holds ``ARCHIVE_JOURNAL_MAX_BYTES`` already: the sender must retry later."""


@dataclass(frozen=True)
class JournalRecord:
    source: str
    received_at: datetime
    raw: bytes

    def encode(self) -> bytes:
        meta = json.dumps({"source": self.source, "received_at": self.received_at.isoformat()})
        payload = _META.pack(len(meta)) + meta.encode() + self.raw
        return _HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload

    @classmethod
    def decode(cls, payload: bytes) -> JournalRecord:
        (size,) = _META.unpack_from(payload)
        meta = json.loads(payload[_META.size : _META.size + size])
        received_at = datetime.fromisoformat(meta["received_at"])
        return cls(meta["source"], received_at, payload[_META.size + size :])


def journal_dir(data_dir: Path) -> Path:
    return data_dir / "journal"


def journal_files(data_dir: Path) -> list[Path]:
    """Every journal segment under ``data_dir`` (for the residue scan), oldest first."""
    directory = journal_dir(data_dir)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.name.endswith(SUFFIX))


def iter_journal_records(data_dir: Path) -> Iterator[bytes]:
    """The raw body of every readable record under ``data_dir`` (for the residue scan)."""
    for path in journal_files(data_dir):
        with contextlib.suppress(FileNotFoundError):  # replayed meanwhile
            yield from (record.raw for record in read_segment(path.read_bytes())[0])


def read_segment(data: bytes) -> tuple[list[JournalRecord], int]:
    """The records of a segment's bytes, and how many torn or corrupt ones were skipped.

    After a bad record, reading resumes at the next magic: a torn append followed by good
    ones (a write that failed half-way, then the next calls) loses only the torn one.
    """
    records: list[JournalRecord] = []
    skipped, offset = 0, 0
    while offset < len(data):
        record, end = _record_at(data, offset)
        if record is None:
            skipped += 1
            offset = data.find(MAGIC, offset + 1)
            if offset < 0:
                break
            continue
        records.append(record)
        offset = end
    return records, skipped


def _record_at(data: bytes, offset: int) -> tuple[JournalRecord | None, int]:
    if len(data) - offset < _HEADER.size:
        return None, offset
    magic, length, crc = _HEADER.unpack_from(data, offset)
    start = offset + _HEADER.size
    payload = data[start : start + length]
    if magic != MAGIC or len(payload) != length or zlib.crc32(payload) != crc:
        return None, offset
    try:
        return JournalRecord.decode(payload), start + length
    except (ValueError, KeyError, TypeError, struct.error):
        return None, offset


@dataclass
class _Segment:
    bytes: int
    records: int


class Journal:
    """The journal of one serve instance, in ``<data_dir>/journal``; at most ``max_bytes``.

    ``append`` groups concurrent calls into one write and one fsync. ``pending`` is true while
    records wait to be replayed: the webhook then journals new calls too, so that they are
    replayed in the order they came (an edit after the message it edits).
    """

    def __init__(
        self, data_dir: Path, *, max_bytes: int, segment_bytes: int = SEGMENT_BYTES
    ) -> None:
        self.directory = journal_dir(data_dir)
        self.max_bytes = max_bytes
        self._segment_bytes = segment_bytes
        self._segments: dict[Path, _Segment] = {}  # to replay, the current one included
        self._current: tuple[Path, int] | None = None  # the segment being appended to, its fd
        self._reserved = 0
        self._lock = asyncio.Lock()
        self._commit: GroupCommit[bytes, None] = GroupCommit(self._write, max_batch=1000)
        self.appended = asyncio.Event()
        for path in journal_files(self.directory.parent):
            records, _ = read_segment(path.read_bytes())
            self._segments[path] = _Segment(path.stat().st_size, len(records))
        self._publish()

    @property
    def pending(self) -> bool:
        return bool(self._segments)

    @property
    def pending_bytes(self) -> int:
        return sum(s.bytes for s in self._segments.values())

    @property
    def pending_records(self) -> int:
        return sum(s.records for s in self._segments.values())

    async def append(self, record: JournalRecord) -> None:
        """Append ``record`` durably (written and fsync'd); ``JournalFull`` past the bound."""
        encoded = record.encode()
        if self.pending_bytes + self._reserved + len(encoded) > self.max_bytes:
            raise JournalFull(f"{self.pending_bytes} bytes wait to be replayed")
        self._reserved += len(encoded)
        try:
            await self._commit.submit(encoded)
        finally:
            self._reserved -= len(encoded)
        JOURNALED.inc()
        self.appended.set()

    async def _write(self, encoded: list[bytes]) -> list[None]:
        async with self._lock:
            path = await asyncio.to_thread(self._write_sync, b"".join(encoded))
            segment = self._segments.setdefault(path, _Segment(0, 0))
            segment.bytes += sum(map(len, encoded))
            segment.records += len(encoded)
            if segment.bytes >= self._segment_bytes:
                self._close_current()
            self._publish()
        return [None] * len(encoded)

    def _write_sync(self, data: bytes) -> Path:
        if self._current is None:
            self._current = self._create_segment()
        path, fd = self._current
        start = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except OSError:
            # Nothing of this write was acknowledged: take it back, so that the segment does
            # not end in a torn record that later appends would follow.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
            raise
        return path

    def _create_segment(self) -> tuple[Path, int]:
        created = not self.directory.exists()
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.directory.chmod(0o700)  # whatever the umask
        if created:
            _fsync_dir(self.directory.parent)
        name = f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}{SUFFIX}"
        path = self.directory / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        os.fchmod(fd, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)  # ours while we write it: no one else replays it
        _fsync_dir(self.directory)
        return path, fd

    def _close_current(self) -> None:
        if self._current is not None:
            os.close(self._current[1])  # releases the flock
            self._current = None

    def close(self) -> None:
        self._close_current()

    async def replay(self, put: Callable[[JournalRecord], Awaitable[None]]) -> int:
        """Put every record into the spool, in order, deleting each segment once all of it
        is in. Stops at the first failure of ``put`` (raised): the rest stays for later.
        Returns how many records were replayed."""
        replayed = 0
        while True:
            progressed = False
            for path in journal_files(self.directory.parent):
                if path != self._current_path:
                    count = await self._replay_segment(path, put)
                    progressed |= count is not None
                    replayed += count or 0
            async with self._lock:
                if self._current_has_records():
                    self._close_current()  # new calls go to a new segment; replay this one
                    continue
            if not progressed:
                return replayed

    @property
    def _current_path(self) -> Path | None:
        return self._current[0] if self._current is not None else None

    def _current_has_records(self) -> bool:
        path = self._current_path
        return path is not None and path in self._segments and self._segments[path].records > 0

    async def _replay_segment(
        self, path: Path, put: Callable[[JournalRecord], Awaitable[None]]
    ) -> int | None:
        fd = await asyncio.to_thread(_lock_segment, path)
        if fd is None:  # another live process writes it, or it is gone: not ours to replay
            self._segments.pop(path, None)
            self._publish()
            return None
        try:
            data = await asyncio.to_thread(_read_fd, fd)
            records, skipped = read_segment(data)
            if skipped:
                log.warning("journal segment %s: %d torn or corrupt record(s) skipped",
                            path.name, skipped)  # fmt: skip
            for record in records:
                await put(record)
                REPLAYED.inc()
            await asyncio.to_thread(_delete, path)
        finally:
            os.close(fd)
        self._segments.pop(path, None)
        self._publish()
        log.info("journal segment %s replayed: %d record(s)", path.name, len(records))
        return len(records)

    def _publish(self) -> None:
        PENDING_BYTES.set(self.pending_bytes)
        PENDING_RECORDS.set(self.pending_records)


def _lock_segment(path: Path) -> int | None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # Replayed and deleted by another process between our open and our lock?
        if os.fstat(fd).st_ino != os.stat(path).st_ino:
            raise FileNotFoundError(path)
    except (BlockingIOError, FileNotFoundError):
        os.close(fd)
        return None
    return fd


def _read_fd(fd: int) -> bytes:
    with os.fdopen(os.dup(fd), "rb") as file:
        return file.read()


def _delete(path: Path) -> None:
    path.unlink()
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
