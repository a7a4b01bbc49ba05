"""Parsing mail in worker processes, beside the event loop that answers SMTP and HTTP.

Parsing is the filer's CPU-heavy step (MIME, headers, HTML to text, attachments). In serve's
own process it takes the core the SMTP sessions need; in a worker process it runs on the
second core. A worker that dies (killed, or out of memory on a hostile message) loses
nothing: the entries it was parsing are still in the spool, the pool is started again, and
the filer parses them again.

Every message is hostile until parsed: each step of its parse (MIME and HTML, then the text of
its attachments) has a CPU budget (``ARCHIVE_PARSE_BUDGET``). Past it, the message is filed
raw-only, or without its attachments' text, with the reason noted. A parsing process that
does not answer in time (stuck where no timer reaches) is killed and replaced, as a dead one.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from datetime import datetime
from functools import partial
from typing import NamedTuple, TypeVar

from ingest.attachment_text import searchable_text
from ingest.budget import OverBudget, cpu_budget
from ingest.mime import SupportSide, parse_email, raw_only_email
from store.blobs import NewAttachment
from store.documents import Envelope
from store.messages import NewEmail

_T = TypeVar("_T")

DEFAULT_BUDGET_SECONDS = 10.0
# A parsing process gets this many times its messages' CPU budgets in wall-clock time (it
# shares the cores with serve and mongod), plus a margin, before it is taken for stuck.
_WALL_FACTOR = 3
_WALL_MARGIN_SECONDS = 5.0


@contextlib.contextmanager
def _spawned_children_ignore_interrupts() -> Iterator[None]:
    """Processes started in here ignore SIGINT from their first instruction (an ignored signal
    stays ignored across exec): a terminal's Ctrl-C signals the whole process group, and serve
    stops its parsing processes itself, without a KeyboardInterrupt traceback from each."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)


class ParserLost(Exception):
    """A parsing process died; nothing it was parsing was filed (a spooled delivery is
    parsed again, a mailbox import is run again)."""


class ToParse(NamedTuple):
    """One delivery to parse: its bytes, when the archive received it, how it came."""

    raw: bytes
    received_at: datetime
    envelope: Envelope | None = None


class Parsers:
    """``parse_email`` in ``workers`` processes, each step within ``budget`` seconds of CPU
    (0 workers: in this process, without a budget, for tools and tests)."""

    def __init__(self, workers: int, *, budget: float = DEFAULT_BUDGET_SECONDS) -> None:
        self.workers = workers
        self.budget = budget
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
                emails += _parse_many([item], support, source, None)
                await asyncio.sleep(0)
            return emails
        if not items:
            return []
        size = -(-len(items) // self.workers)
        slices = [items[i : i + size] for i in range(0, len(items), size)]
        parsed = await self._in_pool(
            [partial(_parse_many, part, support, source, self.budget) for part in slices],
            steps=2 * size,
        )
        return [email for part in parsed for email in part]

    async def attachment_texts(self, attachments: Sequence[Sequence[NewAttachment]]) -> list[str]:
        """The searchable text of each message's attachments (a chat's, fetched or sent), in
        the parsing processes; "" for a message whose extraction ran past the budget."""
        if self.workers == 0 or not attachments:
            return _texts_of(list(attachments), None)
        [texts] = await self._in_pool(
            [partial(_texts_of, list(attachments), self.budget)], steps=len(attachments)
        )
        return texts

    async def _in_pool(self, calls: Sequence[Callable[[], _T]], *, steps: int) -> list[_T]:
        """Run ``calls`` in the pool, each given ``steps`` budgets of wall-clock time; raises
        ParserLost if a process died or overran (then it is killed, and the pool replaced)."""
        pool = self._pool or self._start()
        loop = asyncio.get_running_loop()
        deadline = steps * self.budget * _WALL_FACTOR + _WALL_MARGIN_SECONDS
        try:
            with _spawned_children_ignore_interrupts():  # submitting may start a process
                futures = [loop.run_in_executor(pool, call) for call in calls]
            running = asyncio.gather(*futures)
            return await asyncio.wait_for(running, deadline)
        except BrokenProcessPool:
            self._lost(pool)
            raise ParserLost("a parsing process died") from None
        except TimeoutError:
            self._kill(pool)
            raise ParserLost(f"a parsing process did not answer within {deadline:.0f}s") from None

    def _kill(self, pool: ProcessPoolExecutor) -> None:
        for process in list(getattr(pool, "_processes", {}).values()):
            process.kill()
        self._lost(pool)

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


def _parse_many(
    items: Sequence[ToParse], support: SupportSide, source: str, budget: float | None
) -> list[NewEmail]:
    return [_parse_one(item, support, source, budget) for item in items]


def _parse_one(item: ToParse, support: SupportSide, source: str, budget: float | None) -> NewEmail:
    """``item`` parsed, then its attachments' text, each step within ``budget``."""
    try:
        with cpu_budget(budget):
            email = parse_email(
                item.raw, support=support, received_at=item.received_at,
                envelope=item.envelope, source=source, attachment_text=False,
            )  # fmt: skip
    except OverBudget:
        return raw_only_email(item.raw, error=f"not parsed: more than {budget:g}s of CPU",
                              received_at=item.received_at, envelope=item.envelope,
                              support=support, source=source)  # fmt: skip
    if not email.attachments:
        return email
    try:
        with cpu_budget(budget):
            return replace(email, attachment_text=searchable_text(email.attachments))
    except OverBudget:
        problem = f"attachment text not extracted: more than {budget:g}s of CPU"
        return replace(email, parse_error="; ".join(filter(None, [email.parse_error, problem])))


def _texts_of(attachments: list[Sequence[NewAttachment]], budget: float | None) -> list[str]:
    texts = []
    for each in attachments:
        try:
            with cpu_budget(budget):
                texts.append(searchable_text(each))
        except OverBudget:
            texts.append("")
    return texts
