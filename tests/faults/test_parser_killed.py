"""serve parses mail in a process of its own; killing that process loses nothing."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from store.database import Database
from store.documents import Message, SpoolEntry
from store.embedded import EmbeddedMongo
from tests.conftest import report
from tests.faults.processes import serve_env, serving
from tests.helpers import eventually
from tests.mail import make_email, send

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
