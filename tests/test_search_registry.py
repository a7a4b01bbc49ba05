"""Every process's search index is accounted for: each registers in MongoDB (heartbeat, and
whether its files still hold deleted documents), compacts its own files within its interval
whether or not it runs the scheduler, and a purge's certificate says "pending" until every
live index has dropped the purged documents physically. One not heard of for long is listed
as gone, and rebuilt before it serves again."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from retention.records import verify_purge
from retention.rules import RetentionPolicy
from retention.sweep import sweep
from search.index import STALE_AFTER, SearchIndex, deleted_documents, following, presence
from store.accounts import register_account, request_erasure
from store.database import Database
from store.documents import PurgeRecord, SearchIndexEntry, utcnow
from tests.factories import chat
from tests.helpers import eventually

POLICY = RetentionPolicy(grace=timedelta(days=180), max_age=timedelta(days=1095),
                         secret_key=b"r" * 32, blob_quiet_period=timedelta(0))  # fmt: skip


def index_findings(lines: list[str]) -> list[str]:
    return [line for line in lines if "search index of" in line]


async def test_a_purge_is_pending_until_every_live_index_has_compacted_it(
    database: Database, tmp_path: Path
) -> None:
    """Before: two API processes, each with its own index, a purge run by one: the record
    named its own index only, and the other kept the purged words until an unrelated merge (a
    serve --no-scheduler never compacted)."""
    sweeper = SearchIndex(tmp_path / "a", database.db.name, await_ms=50, heartbeat_every=0.2)
    other = SearchIndex(tmp_path / "b", database.db.name, await_ms=50, heartbeat_every=0.2,
                        compact_every=3.0)  # fmt: skip
    await register_account(account_id="ann", emails=["ann@example.com"], name="Ann")
    said = await chat("quuxberry pie", account_id="ann", conversation="ann-1")
    # Another's message in the same segment (both indexed by the first build): a segment left
    # with no live document is dropped at once, one with some is rewritten only by a merge or
    # a compaction.
    await chat("apple pie", account_id="cy", conversation="cy-1")
    async with following(sweeper), following(other):
        for index in (sweeper, other):
            await index.sync()
        await request_erasure(account_id="ann", now=utcnow())
        await sweep(database, now=utcnow(), policy=POLICY, index_synced=other.sync)

        async def other_holds_the_deleted_document() -> bool:
            return presence(other.path, [str(said.id)]).deleted == 1

        await eventually(other_holds_the_deleted_document, timeout=10)
        found = await verify_purge(account_id="ann", emails=[], names=[], now=utcnow(),
                                   policy=POLICY)  # fmt: skip
        pending = index_findings(found.lines())
        assert any(str(other.path) in line and line.startswith("pending") for line in pending)

        async def compacted_by_itself() -> bool:  # no scheduler asked it to
            return deleted_documents(other.path) == 0

        await eventually(compacted_by_itself, timeout=15)
        await sweeper.request("compact")  # the scheduler's housekeeping, in the sweeper

        async def accounted() -> bool:
            scan = await verify_purge(account_id="ann", emails=[], names=[], now=utcnow(),
                                      policy=POLICY)  # fmt: skip
            return not index_findings(scan.lines())

        await eventually(accounted, timeout=10)
        [record] = await PurgeRecord.find_all().to_list()
        assert record.residue is not None and record.residue["verdict"] == "pending"
        await sweep(database, now=utcnow(), policy=POLICY)  # the next sweep rechecks it
    [record] = await PurgeRecord.find_all().to_list()
    assert record.residue is not None and record.residue["verdict"] == "clean", record.residue
    assert presence(other.path, [str(said.id)]).deleted == 0


async def test_an_index_not_heard_of_for_long_is_listed_and_rebuilt_before_it_serves(
    database: Database, tmp_path: Path
) -> None:
    index = SearchIndex(tmp_path / "b", database.db.name, await_ms=50, heartbeat_every=0.2)
    await register_account(account_id="bo", emails=["bo@example.com"], name="Bo")
    said = await chat("zanzibarquux", account_id="bo", conversation="bo-1")
    async with following(index):
        await index.sync()

        async def registered() -> bool:
            return await SearchIndexEntry.find_all().count() == 1

        await eventually(registered, timeout=10)
    # Its serve stops; the account is purged; nobody hears of the index for long.
    await request_erasure(account_id="bo", now=utcnow())
    await sweep(database, now=utcnow(), policy=POLICY)
    [entry] = await SearchIndexEntry.find_all().to_list()
    await entry.set({"heartbeat_at": utcnow() - STALE_AFTER - timedelta(minutes=1)})
    found = await verify_purge(account_id="bo", emails=[], names=[], now=utcnow(), policy=POLICY)
    [gone] = index_findings(found.lines())
    assert "not heard of since" in gone and "rebuilt from MongoDB before it serves" in gone
    assert presence(index.path, [str(said.id)]).searchable == 1  # its files: as it left them

    back = SearchIndex(tmp_path / "b", database.db.name, await_ms=50, heartbeat_every=0.2)
    async with following(back):  # its serve comes back
        await back.sync()
        assert presence(back.path, [str(said.id)]) == presence(back.path, [])  # nothing
        assert deleted_documents(back.path) == 0
