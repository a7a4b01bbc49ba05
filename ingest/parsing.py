"""Parsing mail in worker processes, beside the event loop that answers SMTP and HTTP.

Parsing is the filer's CPU-heavy step (MIME, headers, HTML to text, attachments). In serve's
own process it takes the core the SMTP sessions need; in a worker process it runs on the
second core. A worker that dies (killed, or out of memory on a hostile message) loses
nothing: the entries it was parsing are still in the spool, the pool is started again, and
the filer parses them again.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime
from typing import NamedTuple

from ingest.mime import SupportSide, parse_email
from store.documents import Envelope
from store.messages import NewEmail


class ParserLost(Exception):
    """A parsing process died; nothing it was parsing was filed (a spooled delivery is
    parsed again, a mailbox import is run again)."""


class ToParse(NamedTuple):
    """One delivery to parse: its bytes, when the archive received it, how it came."""

    raw: bytes
    received_at: datetime
    envelope: Envelope | None = None


class Parsers:
    """``parse_email`` in ``workers`` processes (0: in this process, for tools and tests)."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self.started = 0  # pools started: 1 after the first parse, one more per restart

    async def parse_many(
        self, items: Sequence[ToParse], *, support: SupportSide, source: str = "smtp"
    ) -> list[NewEmail]:
        """Each of ``items`` parsed (``parse_email`` never raises), in one call per worker: a
        batch goes to the parsing processes in slices, not message by message (a call per
        message cost the event loop more than the parse saved it). Raises ParserLost if a
        parsing process died meanwhile; the next call starts new ones."""
        if self.workers == 0:  # here, yielding between messages to the sessions being answered
            emails = []
            for item in items:
                emails += _parse_many([item], support, source)
                await asyncio.sleep(0)
            return emails
        if not items:
            return []
        pool = self._pool or self._start()
        loop = asyncio.get_running_loop()
        size = -(-len(items) // self.workers)
        slices = [items[i : i + size] for i in range(0, len(items), size)]
        try:
            parsed = await asyncio.gather(*(
                loop.run_in_executor(pool, _parse_many, part, support, source) for part in slices
            ))  # fmt: skip
        except BrokenProcessPool:
            self._lost(pool)
            raise ParserLost("a parsing process died") from None
        return [email for part in parsed for email in part]

    def _lost(self, pool: ProcessPoolExecutor) -> None:
        """Drop ``pool``, broken (the next parse starts another)."""
        if self._pool is pool:
            pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

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


def _parse_many(items: Sequence[ToParse], support: SupportSide, source: str) -> list[NewEmail]:
    return [
        parse_email(i.raw, support=support, received_at=i.received_at, envelope=i.envelope,
                    source=source)
        for i in items
    ]  # fmt: skip
