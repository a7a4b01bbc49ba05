"""The filer: parses what the spool holds and files it, behind the SMTP acknowledgement.

It takes the oldest entries its instance owns, a batch at a time, parses each (yielding to
the event loop between messages, so that sessions being answered are not kept waiting), files
the batch with ``file_emails`` and only then deletes the entries. If the database is away it
waits and tries again; an entry that cannot be filed for another reason stays in the spool,
is logged and retried later with backoff, and never blocks the others. After ``max_attempts``
it is filed raw-only (its bytes, its envelope, the error in ``parse_error``), so that every
acknowledged message is filed: no entry lives past its attempts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from beanie import PydanticObjectId
from prometheus_client import Counter, Gauge, Histogram

from ingest.chat.filing import ChatFiling
from ingest.mime import SupportSide, raw_only_email
from ingest.parsing import ParserLost, Parsers, ToParse
from store.chat import file_unreadable_call
from store.documents import SpoolEntry, SpoolKind, utcnow
from store.errors import NotFound, is_transient
from store.messages import Filed, NewEmail, file_emails
from store.spool import Spool, raw_of

log = logging.getLogger("archive.filer")

FILED = Counter("archive_filed_messages_total", "Spooled deliveries filed, by outcome",
                ["outcome"])  # fmt: skip
FILE_SECONDS = Histogram("archive_filer_batch_seconds", "Time to parse and file one batch")
LAG_SECONDS = Histogram(
    "archive_filer_lag_seconds", "Time from acknowledgement to filed",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)  # fmt: skip
BACKLOG = Gauge("archive_spool_backlog", "Deliveries accepted and not filed yet")
RAW_ONLY = Counter(
    "archive_filed_raw_only_total",
    "Deliveries filed raw-only (bytes and envelope, the error noted) after their attempts failed",
)
# A batch holds at most this many bytes of mail (and at least one delivery): its bytes are
# held several times over while it is filed (the spool documents, the copies to the parsing
# process and back, the parsed messages), and 200 large messages made serve's peak memory.
BATCH_BYTES = 4 * 1024 * 1024
# Filing a delivery is tried this many times (with backoff from RETRY_BASE) before it is
# filed raw-only.
MAX_ATTEMPTS = 5
RETRY_BASE = timedelta(seconds=60)


class Filer:
    def __init__(
        self,
        spool: Spool,
        *,
        support: SupportSide,
        batch: int = 200,
        take_over_every: timedelta = timedelta(seconds=20),
        max_attempts: int = MAX_ATTEMPTS,
        retry_base: timedelta = RETRY_BASE,
        chat: ChatFiling | None = None,
        parsers: Parsers | None = None,
    ) -> None:
        self._spool = spool
        self._parsers = parsers or Parsers(0)
        self._chat = chat
        self._support = support
        self._batch = batch
        self._max_attempts = max_attempts
        self._retry_base = retry_base.total_seconds()
        self._take_over_every = take_over_every.total_seconds()
        # Entries that failed for a reason other than the database, and when to retry them.
        self._retry_at: dict[PydanticObjectId, float] = {}
        # After a parsing process died, the next batch is parsed one delivery per call, so
        # that a delivery which kills it every time fails alone (and counts its attempts).
        self._one_by_one = False
        self._stopping = False

    def stop(self) -> None:
        """Ask ``run`` to return after the batch in hand."""
        self._stopping = True
        self._spool.arrived.set()

    async def run(self) -> None:
        """File until ``stop`` (or cancellation)."""
        try:
            await self._run()
        finally:
            self._parsers.close()

    async def _run(self) -> None:
        backoff = 0.5
        next_take_over = 0.0
        while not self._stopping:
            try:
                if time.monotonic() >= next_take_over:
                    await self._spool.take_over()
                    next_take_over = time.monotonic() + self._take_over_every
                self._spool.arrived.clear()  # before claiming: a put from now on wakes us
                filed = await self.file_once()
                backoff = 0.5
            except Exception as exc:
                if self._stopping:
                    return
                # Never give up: what waits in the spool is durable, and filing resumes when
                # the database (or whatever failed) is back.
                if is_transient(exc):
                    log.warning("database unavailable, filing again in %.1fs: %s", backoff, exc)
                elif isinstance(exc, ParserLost):
                    log.warning("a parsing process died; starting new ones (what it was parsing "
                                "stays in the spool and is parsed again)")  # fmt: skip
                else:
                    log.exception("filing failed, trying again in %.1fs", backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            if not filed:
                BACKLOG.set(self._spool.backlog)
                wait = min(self._take_over_every, self._next_retry())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._spool.arrived.wait(), wait)

    def _next_retry(self) -> float:
        if not self._retry_at:
            return self._take_over_every
        return max(0.05, min(self._retry_at.values()) - time.monotonic())

    async def file_once(self) -> int:
        """File one batch; how many entries it held (0: nothing to do right now)."""
        now = time.monotonic()
        waiting = [i for i, at in self._retry_at.items() if at > now]
        claimed = await self._spool.claim(self._batch, skip=waiting, max_bytes=BATCH_BYTES)
        if not claimed:
            return 0
        chats = [e for e in claimed if e.kind is SpoolKind.CHAT]
        if chats:
            await self._file_chats(chats)
            claimed = [e for e in claimed if e.kind is not SpoolKind.CHAT]
            if not claimed:
                return len(chats)
        started = time.perf_counter()
        entries, emails = [], []
        for entry, parsed in zip(claimed, await self._parse_all(claimed), strict=True):
            if isinstance(parsed, NewEmail):
                entries.append(entry)
                emails.append(parsed)
            else:
                await self._failed(entry, parsed)
        if not entries:
            return len(claimed)
        try:
            filed = await file_emails(emails)
        except Exception as exc:
            if is_transient(exc):
                raise
            # Something in the batch cannot be filed: file one by one to find it.
            for entry, email in zip(entries, emails, strict=True):
                await self._file_alone(entry, email)
            return len(claimed)
        await self._done(entries, emails, filed)
        FILE_SECONDS.observe(time.perf_counter() - started)
        return len(claimed)

    async def _file_alone(self, entry: SpoolEntry, email: NewEmail) -> None:
        try:
            [filed] = await file_emails([email])
        except Exception as exc:
            if is_transient(exc):
                raise
            await self._failed(entry, exc)
            return
        await self._done([entry], [email], [filed])

    async def _parse_all(self, claimed: list[SpoolEntry]) -> list[NewEmail | Exception]:
        """Each entry parsed, or why not (the blob of a large message is gone, or its parse
        killed the parsing process): the batch at once, in the parsing processes."""
        raws: list[bytes | Exception] = []
        for entry in claimed:
            try:
                raws.append(await raw_of(entry))
            except NotFound as exc:
                raws.append(exc)
        items = [
            ToParse(raw, entry.received_at, entry.envelope)
            for entry, raw in zip(claimed, raws, strict=True)
            if isinstance(raw, bytes)
        ]
        parsed = iter(await self._parse_items(items))
        results: list[NewEmail | Exception] = []
        for entry, raw in zip(claimed, raws, strict=True):
            found = raw if isinstance(raw, Exception) else next(parsed)
            results.append(_with_id(found, entry) if isinstance(found, NewEmail) else found)
        return results

    async def _parse_items(self, items: list[ToParse]) -> list[NewEmail | Exception]:
        if not self._one_by_one:
            try:
                return list(await self._parsers.parse_many(items, support=self._support))
            except ParserLost:
                self._one_by_one = True
                raise  # the batch is parsed again, one delivery at a time
        results: list[NewEmail | Exception] = []
        for item in items:
            try:
                results += await self._parsers.parse_many([item], support=self._support)
            except ParserLost as exc:
                results.append(exc)
        self._one_by_one = False
        return results

    async def _done(
        self, entries: list[SpoolEntry], emails: list[NewEmail], filed: list[Filed]
    ) -> None:
        await self._spool.done([e.id for e in entries if e.id is not None])
        now = utcnow()
        for entry, email, result in zip(entries, emails, filed, strict=True):
            self._retry_at.pop(entry.id, None)  # type: ignore[arg-type]
            outcome = "duplicate" if result.duplicate else "stored"
            FILED.labels(outcome).inc()
            LAG_SECONDS.observe(max(0.0, (now - entry.received_at).total_seconds()))
            log.info(
                "%s %s from %s (%d bytes)",
                outcome,
                result.message_id,
                entry.envelope.client_address if entry.envelope else "?",
                entry.size,
                extra={"message_id": str(result.message_id), "dedup_key": email.dedup_key},
            )
        BACKLOG.set(self._spool.backlog)

    async def _file_chats(self, entries: list[SpoolEntry]) -> None:
        """File the chat webhook calls of a batch (``ingest.chat.filing``)."""
        if self._chat is None:
            for entry in entries:
                await self._failed(entry, LookupError("this instance files no chat calls"))
            return
        result = await self._chat.file(entries)
        await self._spool.done([e.id for e, _ in result.filed if e.id is not None])
        now = utcnow()
        for entry, filed in result.filed:
            self._retry_at.pop(entry.id, None)  # type: ignore[arg-type]
            FILED.labels("chat").inc()
            LAG_SECONDS.observe(max(0.0, (now - entry.received_at).total_seconds()))
            log.info("chat call %s filed: conversation %s, %d message(s)", entry.id,
                     filed.conversation_id if filed else "-",
                     len(filed.messages) if filed else 0)  # fmt: skip
        for entry in result.waiting:  # its message is spooled by another instance: soon
            assert entry.id is not None
            self._retry_at[entry.id] = time.monotonic() + 1.0
        for entry, exc in result.failed:
            await self._failed(entry, exc)
        BACKLOG.set(self._spool.backlog)

    async def _failed(self, entry: SpoolEntry, exc: Exception) -> None:
        assert entry.id is not None
        FILED.labels("failed").inc()
        error = f"{type(exc).__name__}: {exc}"
        last = entry.attempts + 1 >= self._max_attempts
        if last and entry.kind is SpoolKind.CHAT and await self._file_unreadable_call(entry, error):
            return
        if last and entry.kind is not SpoolKind.CHAT and await self._file_raw_only(entry, error):
            return
        # The error's text may quote the message (a server's validation details): the log
        # names its kind and code only; the spool entry keeps the text.
        log.error("could not file spooled delivery %s (attempt %d, %s %s); it stays in the "
                  "spool", entry.id, entry.attempts + 1, type(exc).__name__,
                  getattr(exc, "code", ""))  # fmt: skip
        delay = min(self._retry_base * 2 ** min(entry.attempts, 6), 3600.0)
        self._retry_at[entry.id] = time.monotonic() + delay
        await self._spool.failed(entry, error)

    async def _file_unreadable_call(self, entry: SpoolEntry, error: str) -> bool:
        """A chat call that cannot be filed after its attempts: the ids its answer named are
        filed as messages noting the error, with the call's body (store.chat)."""
        assert entry.id is not None and entry.raw is not None
        note = f"filed unread after {entry.attempts + 1} attempts: {error}"[:500]
        try:
            filed = await file_unreadable_call(
                source=entry.chat_source or "?", raw=entry.raw, received_at=entry.received_at,
                claims=entry.chat_claims or [], note=note,
            )  # fmt: skip
        except Exception as exc:
            if is_transient(exc):
                raise
            log.error("could not file chat call %s unread either (%s)", entry.id,
                      type(exc).__name__)  # fmt: skip
            return False
        RAW_ONLY.inc()
        log.warning("filed chat call %s unread after %d attempts: %d message(s)", entry.id,
                    entry.attempts + 1, filed)  # fmt: skip
        await self._spool.done([entry.id])
        return True

    async def _file_raw_only(self, entry: SpoolEntry, error: str) -> bool:
        """File ``entry`` as its bytes and envelope only, the error noted; False if even that
        failed (it then stays in the spool and is tried again)."""
        assert entry.id is not None
        note = f"filed raw-only after {entry.attempts + 1} attempts: {error}"[:500]
        try:
            raw: bytes | None = await raw_of(entry)
        except NotFound:  # its large copy is gone: file what is known, so that its id answers
            raw, note = None, f"the original bytes were lost before filing; {note}"[:500]
        email = raw_only_email(
            raw, error=note, received_at=entry.received_at, envelope=entry.envelope,
            support=self._support, dedup=None if raw is not None else f"email-lost:{entry.id}",
        ).with_id(entry.id)  # fmt: skip
        try:
            [filed] = await file_emails([email])
        except Exception as exc:
            if is_transient(exc):
                raise
            log.error("could not file spooled delivery %s raw-only either (%s)", entry.id,
                      type(exc).__name__)  # fmt: skip
            return False
        RAW_ONLY.inc()
        log.warning("filed spooled delivery %s raw-only after %d attempts", entry.id,
                    entry.attempts + 1)  # fmt: skip
        await self._done([entry], [email], [filed])
        return True


def _with_id(email: NewEmail, entry: SpoolEntry) -> NewEmail:
    """The stored message takes the spool entry's id: the one the SMTP reply named."""
    return email.with_id(entry.id) if entry.id is not None else email


@asynccontextmanager
async def filing(filer: Filer, spool: Spool, *, shutdown_grace: float) -> AsyncIterator[None]:
    """Run the filer in the background; on exit, let it file what was accepted (within
    ``shutdown_grace`` seconds: what is left stays in the spool for the next start)."""
    task = asyncio.create_task(filer.run(), name="filer")
    try:
        yield
    finally:
        if not task.done() and not await spool.empty(within=shutdown_grace):
            log.warning("%d accepted deliveries not filed yet; they stay in the spool and are "
                        "filed at the next start", spool.backlog)  # fmt: skip
        filer.stop()
        # A cancellation that lands inside a driver call may surface as a connection error,
        # which the loop would retry: stopping is asked politely first, then enforced.
        await asyncio.wait([task], timeout=5)
        task.cancel()
        await asyncio.wait([task])  # unlike awaiting it, never swallows our own cancellation
        if not task.cancelled() and task.exception() is not None:
            log.error("the filer had stopped", exc_info=task.exception())
