"""Parsing mail in worker processes, beside the event loop that answers SMTP and HTTP.

Parsing is the filer's CPU-heavy step (MIME, headers, HTML to text, attachments). In serve's
own process it takes the core the SMTP sessions need; in a worker process it runs on the
second core. A worker that dies (killed, or out of memory on a hostile message) loses
nothing: the entries it was parsing are still in the spool, the pool is started again, and
the filer parses them again.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime

from ingest.mime import SupportSide, parse_email
from store.documents import Envelope
from store.messages import NewEmail

log = logging.getLogger("archive.filer")


class ParserLost(Exception):
    """A parsing process died; what it was parsing is still in the spool."""


class Parsers:
    """``parse_email`` in ``workers`` processes (0: in this process, for tools and tests)."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self.started = 0  # pools started: 1 after the first parse, one more per restart

    async def parse(
        self,
        raw: bytes,
        *,
        support: SupportSide,
        received_at: datetime,
        envelope: Envelope | None,
    ) -> NewEmail:
        if self.workers == 0:
            return parse_email(raw, support=support, received_at=received_at, envelope=envelope)
        pool = self._pool or self._start()
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(pool, _parse, raw, support, received_at, envelope)
        except BrokenProcessPool:
            if self._lost(pool):
                log.warning("a parsing process died; starting new ones (what it was parsing "
                            "stays in the spool and is parsed again)")  # fmt: skip
            raise ParserLost from None

    async def parse_many(
        self, raws: Sequence[bytes], *, support: SupportSide, received_at: datetime, source: str
    ) -> list[NewEmail]:
        """Each of ``raws`` parsed (``parse_email`` never raises), in one call per worker: a
        mailbox import sends its batch in slices rather than message by message."""
        if self.workers == 0 or not raws:
            return _parse_many(raws, support, received_at, source)
        pool = self._pool or self._start()
        loop = asyncio.get_running_loop()
        size = -(-len(raws) // self.workers)
        slices = [raws[i : i + size] for i in range(0, len(raws), size)]
        try:
            parsed = await asyncio.gather(*(
                loop.run_in_executor(pool, _parse_many, part, support, received_at, source)
                for part in slices
            ))  # fmt: skip
        except BrokenProcessPool:
            self._lost(pool)
            raise ParserLost(
                "a parsing process died: run the import again (what is stored is skipped)"
            ) from None
        return [email for part in parsed for email in part]

    def _lost(self, pool: ProcessPoolExecutor) -> bool:
        """Drop ``pool``, broken (the next parse starts another); False if it was dropped
        already (another parse saw it break first)."""
        if self._pool is not pool:
            return False
        pool.shutdown(wait=False, cancel_futures=True)
        self._pool = None
        return True

    def _start(self) -> ProcessPoolExecutor:
        # Spawned, not forked: a fork of a process running threads (the MongoDB driver's)
        # can inherit a lock held by a thread that does not exist in the child.
        context = multiprocessing.get_context("spawn")
        self._pool = ProcessPoolExecutor(self.workers, mp_context=context)
        self.started += 1
        return self._pool

    def pids(self) -> list[int]:
        """The worker processes' ids (none before the first parse)."""
        processes = getattr(self._pool, "_processes", None) or {}
        return sorted(processes)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def _parse(
    raw: bytes, support: SupportSide, received_at: datetime, envelope: Envelope | None
) -> NewEmail:
    return parse_email(raw, support=support, received_at=received_at, envelope=envelope)


def _parse_many(
    raws: Sequence[bytes], support: SupportSide, received_at: datetime, source: str
) -> list[NewEmail]:
    return [parse_email(r, support=support, received_at=received_at, source=source) for r in raws]
