"""Small helpers shared by tests: waiting on conditions, finding processes."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from store.documents import iso
from store.embedded import free_port

__all__ = ["eventually", "found", "free_port", "iso", "mongod_pids_using"]


async def eventually(
    condition: Callable[[], Awaitable[bool]], *, timeout: float = 30.0, interval: float = 0.05
) -> None:
    """Poll ``condition`` until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


def mongod_pids_using(path: Path) -> list[int]:
    """PIDs of running mongod processes whose command line mentions ``path``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().split()[2]
        except OSError:
            continue
        if (
            state != "Z"
            and argv
            and argv[0].endswith(b"mongod")
            and any(os.fsencode(path) in arg for arg in argv)
        ):
            pids.append(int(entry.name))
    return pids


async def found(app: Any, q: str) -> set[str]:
    """Ids of the messages the app's search index finds for ``q`` (as compliance sees them),
    once it has every write made so far."""
    from api.state import SEARCH
    from store.search import Filters, Order, parse_query, search

    index = app[SEARCH]
    await index.sync()
    everything = Filters(hide_restricted=False)
    results = await search(index=index, query=parse_query(q), filters=everything,
                           order=Order.NEWEST, limit=100, after=None)  # fmt: skip
    return {str(h.message.id) for h in results.hits}
