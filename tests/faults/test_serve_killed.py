"""A purging serve is killed outright and restarted; two serve processes share a database."""

from __future__ import annotations

from pathlib import Path

import pytest

from store.accounts import register_account, request_erasure
from store.blobs import NewAttachment, put_attachment
from store.database import Database
from store.documents import Blob, Conversation, Message, PurgeRecord, utcnow
from store.embedded import EmbeddedMongo
from tests.conftest import report
from tests.factories import email
from tests.faults.processes import serve_env, serving
from tests.helpers import eventually
from tests.mail import make_email, send

MESSAGES = 3000


async def a_large_account(account_id: str) -> None:
    """Many messages, each with its own attachment blob (so blobs are purged too)."""
    await register_account(account_id=account_id, emails=[f"{account_id}@example.com"], name=None)
    template = await email(account_id=account_id, message_id=f"<{account_id}-template@x>")
    documents = []
    for n in range(MESSAGES):
        ref = await put_attachment(
            NewAttachment(f"{account_id} {n}".encode(), "a.txt", "text/plain")
        )
        doc = template.model_dump(by_alias=True, exclude={"id"})
        doc |= {"dedup_key": f"load:{account_id}:{n}", "attachments": [ref.model_dump()],
                "message_id_header": None, "raw": None}  # fmt: skip
        documents.append(doc)
    await Message.get_pymongo_collection().insert_many(documents)


@pytest.mark.slow
async def test_a_serve_killed_mid_purge_is_finished_by_the_next_one(
    database: Database, mongo: EmbeddedMongo, tmp_path: Path
) -> None:
    await a_large_account("kill-me")
    await request_erasure(account_id="kill-me", now=utcnow())
    env = serve_env(mongo.uri, database.db.name, tmp_path, purge_interval="1s",
                    secret_key="fault-secret-key-0123456789abcdef012345",
                    blob_quiet_period="0s")  # fmt: skip

    async with serving(env, tmp_path / "serve.log") as first:

        async def purging() -> bool:
            return 0 < await Message.find({"account_id": "kill-me"}).count() < MESSAGES

        await eventually(purging, timeout=60, interval=0.01)
        first.kill()  # SIGKILL, in the middle of the sweep
        await first.process.wait()
    left = await Message.find({"account_id": "kill-me"}).count()
    assert 0 < left < MESSAGES + 1, "the kill did not land mid-purge"

    async with serving(env, tmp_path / "serve.log"):

        async def finished() -> bool:
            record = await PurgeRecord.find_one()
            return record is not None and record.done_at is not None

        await eventually(finished, timeout=120)
    assert await Message.find({"account_id": "kill-me"}).count() == 0
    assert await Conversation.find({"account_id": "kill-me"}).count() == 0
    assert await Blob.count() == 0, "orphan blobs"
    [record] = await PurgeRecord.find().to_list()
    assert record.counts.messages == MESSAGES + 1
    report(f"faults injected: serve SIGKILLed mid-purge with {left} of {MESSAGES + 1} messages "
          f"left; the restarted serve finished the same purge record")  # fmt: skip


@pytest.mark.slow
async def test_two_serve_processes_ingest_both_and_purge_once(
    database: Database, mongo: EmbeddedMongo, tmp_path: Path
) -> None:
    await a_large_account("shared")
    # Each process keeps its own files (journal, search index) in its own data directory.
    env = {
        name: serve_env(mongo.uri, database.db.name, tmp_path / name, purge_interval="1s",
                        secret_key="fault-secret-key-0123456789abcdef012345",
                        blob_quiet_period="0s")
        for name in ("one", "two")
    }  # fmt: skip
    async with (
        serving(env["one"], tmp_path / "one.log") as one,
        serving(env["two"], tmp_path / "two.log") as two,
    ):
        for n in range(10):
            port = (one if n % 2 else two).smtp_port
            code, _ = await send(port, make_email(message_id=f"<both-{n}@example.com>"))
            assert code == 250
        await request_erasure(account_id="shared", now=utcnow())

        async def purged() -> bool:
            return await Message.find({"account_id": "shared"}).count() == 0

        await eventually(purged, timeout=120)
    assert await Message.find({"message_id_header": {"$regex": "^both-"}}).count() == 10
    records = await PurgeRecord.find().to_list()
    assert len(records) == 1 and records[0].counts.messages == MESSAGES + 1
