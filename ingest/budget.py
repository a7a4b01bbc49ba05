"""CPU budgets for work on hostile input: a parse or a text extraction that runs past its
budget is stopped where it is, by a profiling timer of the process it runs in.

Only for a parsing process's main thread (a signal handler runs there): serve's own loop never
parses (``ingest.parsing``). The timer counts the process's CPU, so a parsing process that
waits for its next message spends nothing of the budget.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class OverBudget(BaseException):
    """The work ran past its CPU budget. A BaseException: the parsers and pypdf catch
    ``Exception`` to be lenient, and must not swallow this."""


# After the first expiry the timer fires again this often: code that swallows even a
# BaseException is stopped at the next one.
_REPEAT_SECONDS = 0.1


@contextmanager
def cpu_budget(seconds: float | None) -> Iterator[None]:
    """Raise OverBudget in the block once it has used ``seconds`` of CPU (None: no budget)."""
    if seconds is None:
        yield
        return

    def expired(signum: int, frame: FrameType | None) -> None:
        raise OverBudget(f"more than {seconds:g}s of CPU")

    previous = signal.signal(signal.SIGPROF, expired)
    signal.setitimer(signal.ITIMER_PROF, seconds, _REPEAT_SECONDS)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)
