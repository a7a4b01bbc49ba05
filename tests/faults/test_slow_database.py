"""A stalled database (writes blocked) gets the sender a temporary failure in bounded time."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from pathlib import Path

import pytest
from pymongo import AsyncMongoClient

from store.database import open_database
from store.documents import Message
from store.embedded import EmbeddedMongo
from store.spool import Spool
from tests.conftest import report
from tests.mail import make_email, running, send, stored


@pytest.mark.slow
async def test_blocked_writes_get_451_in_bounded_time_then_mail_flows_again(tmp_path: Path) -> None:
    async with (
        EmbeddedMongo(tmp_path) as mongo,
        open_database(mongo.uri, name="slow", timeout=timedelta(seconds=2)),
        running(Spool()) as port,
    ):
        admin: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(mongo.uri)
        await admin.admin.command({"fsync": 1, "lock": True})  # every write now waits
        try:
            started = time.perf_counter()
            # The bound of this wait is the test's guard against a hang, not a speed claim.
            code, reply = await asyncio.wait_for(send(port, make_email()), timeout=60)
            waited = time.perf_counter() - started
            assert (code, reply[:5]) == (451, "4.3.0")
            report(f"answered 451 after {waited:.1f}s with writes blocked")
        finally:
            await admin.admin.command("fsyncUnlock")
            await admin.close()
        code, reply = await send(port, make_email())
        assert code == 250
        await stored(reply)
        assert await Message.count() == 1
