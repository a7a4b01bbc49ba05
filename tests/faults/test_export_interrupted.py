"""A ``serve`` process stopped (SIGTERM) while it builds an export leaves none of its files."""

from __future__ import annotations

import signal
from pathlib import Path

import aiohttp
import pytest

from store.database import Database
from store.documents import Export, ExportStatus, Message, Role
from store.embedded import EmbeddedMongo
from store.keys import create_key
from tests.conftest import report
from tests.factories import email
from tests.faults.processes import serve_env, serving
from tests.helpers import eventually

MESSAGES = 3000


async def a_long_export(account_id: str) -> None:
    """Many messages, each an email whose raw copy the export reads back: seconds of work."""
    template = await email(account_id=account_id, message_id=f"<{account_id}-template@x>")
    documents = []
    for n in range(MESSAGES):
        doc = template.model_dump(by_alias=True, exclude={"id"})
        doc |= {"dedup_key": f"load:{account_id}:{n}", "message_id_header": None}
        documents.append(doc)
    await Message.get_pymongo_collection().insert_many(documents)


@pytest.mark.slow
async def test_a_serve_stopped_mid_export_removes_its_files_and_marks_it_failed(
    database: Database, mongo: EmbeddedMongo, tmp_path: Path
) -> None:
    await a_long_export("long")
    _, token = await create_key(name="legal", role=Role.COMPLIANCE)
    env = serve_env(mongo.uri, database.db.name, tmp_path / "data")
    exports_dir = tmp_path / "data" / "exports"
    async with serving(env, tmp_path / "serve.log", "--no-smtp", "--no-scheduler") as serve:
        async with (
            aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http,
            http.post(f"http://127.0.0.1:{serve.http_port}/api/v1/exports",
                      json={"account_id": "long"}) as response,
        ):  # fmt: skip
            assert response.status == 202
            export_id = (await response.json())["id"]

        async def writing() -> bool:
            return exports_dir.exists() and any(exports_dir.iterdir())

        await eventually(writing, timeout=60, interval=0.01)
        serve.process.send_signal(signal.SIGTERM)
        assert await serve.process.wait() == 0
    record = await Export.get(export_id)
    assert record is not None
    assert (record.status, record.error) == (ExportStatus.FAILED, "interrupted"), (
        "the signal did not land mid-export"
    )
    assert list(exports_dir.iterdir()) == []
    report("faults injected: serve SIGTERMed mid-export; its files were removed")
