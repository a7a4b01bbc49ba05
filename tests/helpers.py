"""Small helpers shared by tests: waiting on conditions, finding processes, counting the
commands MongoDB receives."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from beanie import init_beanie
from pymongo import AsyncMongoClient, monitoring

from store.database import Database
from store.documents import ALL_DOCUMENTS, iso
from store.embedded import EmbeddedMongo, free_port

__all__ = ["Commands", "counting", "eventually", "found", "free_port", "iso", "mongod_pids_using"]


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
    from search.engine import Filters, Order, parse_query, search

    index = app[SEARCH]
    await index.sync()
    everything = Filters(hide_restricted=False)
    results = await search(index=index, query=parse_query(q), filters=everything,
                           order=Order.NEWEST, limit=100, after=None)  # fmt: skip
    return {str(h.message.id) for h in results.hits}


class Commands(monitoring.CommandListener):
    """The commands a client sends, by name."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.database: Database | None = None  # the counting client's, while counting

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.sent.append(event.command_name)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@asynccontextmanager
async def counting(mongo: EmbeddedMongo, database: Database) -> AsyncIterator[Commands]:
    """The test's database through a client that counts its commands: the documents are bound
    to it while this lasts, and to the test's client again after."""
    listener = Commands()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        mongo.uri, tz_aware=True, event_listeners=[listener]
    )
    try:
        await init_beanie(database=client[database.db.name], document_models=ALL_DOCUMENTS)
        listener.database = Database(client=client, db=client[database.db.name])
        listener.sent.clear()
        yield listener
    finally:
        await init_beanie(database=database.db, document_models=ALL_DOCUMENTS)
        await client.close()


@dataclass(frozen=True)
class Operation:
    """An operation mongod ran, as its profiler recorded it."""

    collection: str
    command: str  # find, aggregate, q (an update's or a delete's), ...
    plan: str  # mongod's plan summary: "COLLSCAN", "IXSCAN { dedup_key: 1 }", ...
    fields: frozenset[str]  # the fields its filter names at the top

    @property
    def reads_whole_collection(self) -> bool:
        return "COLLSCAN" in self.plan


@asynccontextmanager
async def operations(database: Database) -> AsyncIterator[list[Operation]]:
    """The operations run on the test's database while this lasts (its profiler records them
    all meanwhile), filled in on exit."""
    found: list[Operation] = []
    await database.db.command("profile", 2)
    try:
        yield found
    finally:
        await database.db.command("profile", 0)
    async for op in database.db["system.profile"].find({"ns": {"$ne": "system.profile"}}):
        command: dict[str, Any] = op.get("command", {})
        name = next(iter(command), op.get("op", "?"))
        stages = command.get("pipeline") or [{}]
        where = command.get("filter") or command.get("q") or stages[0].get("$match") or {}
        found.append(Operation(
            collection=op.get("ns", "").split(".", 1)[-1], command=name,
            plan=str(op.get("planSummary", "")), fields=frozenset(where),
        ))  # fmt: skip


def whole_reads(found: list[Operation], *collections: str) -> list[str]:
    """The operations of ``found`` on ``collections`` that read one of them whole."""
    return [f"{o.collection}.{o.command} {sorted(o.fields)}" for o in found
            if o.collection in collections and o.reads_whole_collection]  # fmt: skip
