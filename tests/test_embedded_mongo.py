"""The embedded mongod: a real single-node replica set that starts, restarts and stops cleanly."""

from __future__ import annotations

import resource
import time
from pathlib import Path

import pytest
from pymongo import AsyncMongoClient

from store.embedded import OPEN_FILES, EmbeddedMongo, MongodNotFound, find_mongod
from tests.helpers import mongod_pids_using


async def test_the_embedded_mongod_runs_transactions(mongo: EmbeddedMongo) -> None:
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(mongo.uri)
    collection = client.get_database("embedded_test").get_collection("tx")
    try:
        async with client.start_session() as session, await session.start_transaction():
            await collection.insert_one({"_id": 1}, session=session)
            await collection.insert_one({"_id": 2}, session=session)
        assert await collection.count_documents({}) == 2
    finally:
        await client.drop_database("embedded_test")
        await client.close()


async def test_data_survives_a_restart_on_another_port(tmp_path: Path) -> None:
    async with EmbeddedMongo(tmp_path) as first:
        client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(first.uri)
        await client.kept.things.insert_one({"_id": "kept"})
        await client.close()
        first_port = first.port

    async with EmbeddedMongo(tmp_path) as second:
        assert second.port != first_port
        client = AsyncMongoClient(second.uri)
        assert await client.kept.things.find_one({"_id": "kept"}) == {"_id": "kept"}
        await client.close()


async def test_stopping_leaves_no_mongod_running(tmp_path: Path) -> None:
    async with EmbeddedMongo(tmp_path):
        assert len(mongod_pids_using(tmp_path)) == 1
    assert mongod_pids_using(tmp_path) == []


def test_a_configured_binary_that_is_not_executable_is_named(tmp_path: Path) -> None:
    with pytest.raises(MongodNotFound, match="ARCHIVE_MONGOD_BIN"):
        find_mongod(tmp_path / "no-such-mongod")


def test_without_configuration_the_wheel_binary_is_found() -> None:
    assert find_mongod().name == "mongod"


async def test_mongod_keeps_no_idle_file_open_for_long_and_may_open_what_it_can(
    mongo: EmbeddedMongo,
) -> None:
    """A file per collection and index: with MongoDB's default of keeping idle ones open for
    10 minutes, a test suite's hundreds of databases ended in "Too many open files" (a fatal
    assertion of mongod at about the 350th test)."""
    assert mongo.process is not None
    limits = Path(f"/proc/{mongo.process.pid}/limits").read_text()
    [line] = [row for row in limits.splitlines() if row.startswith("Max open files")]
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert int(line.split()[3]) >= min(OPEN_FILES, hard)
    async with AsyncMongoClient(mongo.uri, directConnection=True) as client:
        options = await client.admin.command("getCmdLineOpts")
    engine = options["parsed"]["storage"]["wiredTiger"]["engineConfig"]["configString"]
    assert "close_idle_time=30" in engine


async def test_a_slow_query_leaves_no_address_in_the_mongod_log(tmp_path: Path) -> None:
    """mongod logs operations slower than 100 ms with their filter's values; its log lives
    under ARCHIVE_DATA_DIR, beyond every purge."""
    async with EmbeddedMongo(tmp_path) as mongo, AsyncMongoClient(mongo.uri) as client:
        people = client.get_database("log_test").get_collection("people")
        await people.insert_many([{"n": n} for n in range(10)])
        # Every document waits 30 ms: some 300 ms in all, three times the default threshold.
        slow = {"$or": [{"email": "zed.customer@example.org"},
                        {"$where": "sleep(30) || false"}]}  # fmt: skip
        started = time.perf_counter()
        assert await people.find_one(slow) is None
        assert time.perf_counter() - started > 0.2, "the query was not slow"
        await client.drop_database("log_test")
    log = mongo.log_path.read_text()
    assert "log_test" in log, "not the log of this mongod"
    assert "zed.customer@example.org" not in log
