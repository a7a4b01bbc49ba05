"""The MongoDB connection: durable writes (majority, journaled), bounded waits, Beanie set-up."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta

import pymongo
from beanie import init_beanie
from pymongo import AsyncMongoClient, WriteConcern
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import ConnectionFailure, PyMongoError

from store.documents import ALL_DOCUMENTS
from store.errors import StoreError

log = logging.getLogger("archive.db")

RawDocument = dict[str, object]


class UnusableDatabase(StoreError):
    """The database cannot serve the archive at all (unreachable at start, not a replica set);
    the message says what to do."""

    def __init__(self, message: str, *, unreachable: bool = False) -> None:
        super().__init__(message)
        # Nothing answered: it may be starting, or coming back (not a wrong kind of server).
        self.unreachable = unreachable


@dataclass(frozen=True)
class Database:
    client: AsyncMongoClient[RawDocument]
    db: AsyncDatabase[RawDocument]

    async def ping(self, *, within: float = 2.0) -> bool:
        """True when the primary answers within ``within`` seconds."""
        try:
            with pymongo.timeout(within):
                await self.db.command("ping")
            return True
        except PyMongoError:
            return False


def make_client(uri: str, *, timeout: timedelta) -> AsyncMongoClient[RawDocument]:
    """A client whose every write waits for a journaled majority, and no wait is unbounded.

    ``timeoutMS`` bounds each operation as a whole (server selection, a blocked write, the
    wait for the majority), so that ingest answers a temporary failure instead of hanging
    the sender when the database is down or stalled.
    """
    ms = int(timeout.total_seconds() * 1000)
    return AsyncMongoClient(
        uri,
        w="majority",
        journal=True,
        timeoutMS=ms,
        serverSelectionTimeoutMS=ms,
        connectTimeoutMS=min(ms, 5000),
        retryWrites=True,
        tz_aware=True,
        appname="support-archive",
    )


@asynccontextmanager
async def open_database(
    uri: str,
    *,
    name: str,
    timeout: timedelta = timedelta(seconds=10),  # noqa: ASYNC109
) -> AsyncIterator[Database]:
    """Connect, check the server is a replica set member, bind the documents, create indexes.

    ``timeout`` configures the client (see ``make_client``); it does not bound this call.
    """
    client = make_client(uri, timeout=timeout)
    try:
        db = client.get_database(name, write_concern=WriteConcern(w="majority", j=True))
        await _require_replica_set(client)
        await init_beanie(database=db, document_models=ALL_DOCUMENTS)
        await _drop_retired_indexes(db)
        log.info("connected to database %r", name)
        yield Database(client=client, db=db)
    finally:
        await client.close()


async def _require_replica_set(client: AsyncMongoClient[RawDocument]) -> None:
    try:
        hello = await client.admin.command("hello")
    except ConnectionFailure as exc:
        raise UnusableDatabase(
            "MongoDB did not answer (ARCHIVE_MONGODB_URI): check its address and that it runs",
            unreachable=True,
        ) from exc
    if "setName" not in hello and hello.get("msg") != "isdbgrid":
        raise UnusableDatabase(
            "MongoDB is a standalone server; it must run as a replica set (a single-node one is "
            "enough): start mongod with --replSet rs0 and run rs.initiate() once"
        )


# Indexes earlier versions made that nothing uses any more (each one costs every write).
RETIRED_INDEXES = {"messages": ("terms_newest", "account_terms_newest")}


async def _drop_retired_indexes(db: AsyncDatabase[RawDocument]) -> None:
    for collection, names in RETIRED_INDEXES.items():
        existing = {i["name"] async for i in await db[collection].list_indexes()}
        for name in sorted(existing & set(names)):
            await db[collection].drop_index(name)
            log.info("dropped index %s.%s (search runs on its own index now)", collection, name)
