"""serve parses mail in a process of its own; killing that process loses nothing."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from datetime import timedelta
from pathlib import Path

import pytest

from ingest import parsing
from ingest.filer import Filer
from ingest.parsing import ParserLost, Parsers
from store.database import Database
from store.documents import Message, SpoolEntry, utcnow
from store.embedded import EmbeddedMongo
from store.spool import Spool
from tests.conftest import report
from tests.faults import poison
from tests.faults.processes import serve_env, serving
from tests.helpers import eventually
from tests.mail import SUPPORT, make_email, send

MESSAGES = 200


def parsing_processes(serve_pid: int) -> list[int]:
    """serve's children that run the parsing pool's workers (not the resource tracker)."""
    children = Path(f"/proc/{serve_pid}/task/{serve_pid}/children").read_text().split()
    workers = []
    for child in map(int, children):
        try:
            command = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")
        except FileNotFoundError:
            continue  # exited meanwhile
        if b"spawn_main" in command:
            workers.append(child)
    return workers


@pytest.mark.slow
async def test_a_killed_parsing_process_loses_nothing_and_serve_starts_another(
    database: Database, mongo: EmbeddedMongo, tmp_path: Path
) -> None:
    env = serve_env(mongo.uri, database.db.name, tmp_path, parse_workers="1")
    async with serving(env, tmp_path / "serve.log") as serve:
        code, _ = await send(serve.smtp_port, make_email(message_id="<first@example.com>"))
        assert code == 250
        await eventually(lambda: _stored_at_least(1), timeout=30)
        [worker] = parsing_processes(serve.process.pid)

        sessions = asyncio.Semaphore(20)  # as an MTA would: a few sessions at a time

        async def deliver(n: int) -> int:
            async with sessions:
                code, _ = await send(serve.smtp_port, make_email(
                    message_id=f"<p-{n}@example.com>", body=f"message {n}"))  # fmt: skip
            return code

        sending = asyncio.gather(*(deliver(n) for n in range(MESSAGES)))
        await eventually(lambda: _stored_at_least(10), timeout=60, interval=0.01)
        os.kill(worker, signal.SIGKILL)  # in the middle of the stream
        killed_with = await Message.count()
        assert all(code == 250 for code in await sending)

        async def all_filed() -> bool:
            return await Message.count() == MESSAGES + 1 and not await SpoolEntry.count()

        await eventually(all_filed, timeout=120)
        [successor] = parsing_processes(serve.process.pid)
    assert successor != worker
    assert killed_with < MESSAGES + 1, "the kill landed after everything was filed"
    assert await Message.find({"message_id_header": {"$regex": "^p-"}}).count() == MESSAGES
    report(f"faults injected: the parsing process SIGKILLed with {killed_with} of "
           f"{MESSAGES + 1} messages filed; serve started another and filed them all")  # fmt: skip


async def _stored_at_least(n: int) -> bool:
    return await Message.count() >= n


async def test_a_delivery_that_kills_every_parsing_process_stops_only_itself(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its batch is parsed again one delivery at a time: the others are filed, and it counts
    attempts like any delivery that cannot be filed, until it is filed raw-only."""
    monkeypatch.setattr(parsing, "_parse_many", poison.parse_or_die)
    fine = [
        await spool.put_email(make_email(message_id=f"<fine-{n}@example.com>"), envelope=None,
                              received_at=utcnow())
        for n in range(5)
    ]  # fmt: skip
    deadly = poison.MARK + b"\r\n" + make_email(message_id="<deadly@example.com>")
    queued = await spool.put_email(deadly, envelope=None, received_at=utcnow())
    filer = Filer(spool, support=SUPPORT, parsers=Parsers(1), max_attempts=2,
                  retry_base=timedelta(0))  # fmt: skip
    try:
        for _ in range(6):
            with contextlib.suppress(ParserLost):
                await filer.file_once()
    finally:
        filer.stop()
        await asyncio.wait_for(filer.run(), timeout=30)  # closes the pool

    assert await SpoolEntry.count() == 0
    assert {m.id for m in await Message.find_all().to_list()} == {*fine, queued}
    message = await Message.get(queued)
    assert message is not None and message.parse_error is not None
    assert message.parse_error.startswith("filed raw-only after 2 attempts: ParserLost")
