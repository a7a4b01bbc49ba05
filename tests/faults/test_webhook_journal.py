"""Chatwoot never retries a webhook: with mongod stopped, calls are journaled and answered 2xx;
the serve process is killed outright and restarted, mongod comes back, and every call is stored
exactly once."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pymongo import AsyncMongoClient

from store.embedded import EmbeddedMongo
from store.journal import iter_journal_records, journal_files
from tests.chatwoot import rails_json, signed_headers
from tests.conftest import report
from tests.faults.processes import serve_env, serving
from tests.helpers import eventually
from tests.test_chat import chatwoot_event

CALLS = 20
SECRET = "chatwoot-fault-secret-0123"


async def chatwoot_call(http: aiohttp.ClientSession, port: int, event: dict[str, Any]) -> int:
    """One delivery as Chatwoot's WebhookJob makes it: the bytes Rails writes, signed over
    ``"<timestamp>.<body>"`` with Chatwoot's headers, sent once (Chatwoot does not retry)."""
    body = rails_json(event)
    headers = signed_headers(SECRET, body)
    url = f"http://127.0.0.1:{port}/webhooks/chat/helpdesk"
    # A bound against a hang, not a speed claim (Chatwoot itself gives up after 5 s).
    async with http.post(url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(30)) as r:
        await r.read()
        return r.status


@pytest.mark.slow
async def test_calls_taken_while_mongod_is_down_survive_a_killed_serve(tmp_path: Path) -> None:
    mongo = EmbeddedMongo(tmp_path / "mongo")
    await mongo.start()
    env = serve_env(mongo.uri, "journal_faults", tmp_path, db_timeout="2s",
                    webhook_sources=f"helpdesk:chatwoot:{SECRET}")  # fmt: skip
    log = tmp_path / "serve.log"
    events = [chatwoot_event(message_id=1000 + n, content=f"call {n}") for n in range(CALLS)]
    try:
        async with serving(env, log, "--no-smtp", "--no-scheduler") as first:
            await mongo.stop()
            async with aiohttp.ClientSession() as http:
                statuses = [await chatwoot_call(http, first.http_port, e) for e in events]
            assert set(statuses) <= {200, 201, 202}, statuses
            assert len(list(iter_journal_records(tmp_path))) == CALLS
            first.kill()  # SIGKILL: no shutdown, nothing flushed but what was fsync'd
            await first.process.wait()

        # The serve is restarted first, while mongod is still away: it waits for it.
        restarted = EmbeddedMongo(tmp_path / "mongo", port=mongo.port)
        second_log = tmp_path / "restarted.log"

        async def mongod_comes_back() -> None:
            async def waiting() -> bool:
                return second_log.exists() and "MongoDB does not answer" in second_log.read_text()

            await eventually(waiting, timeout=60)
            await restarted.start()

        back = asyncio.create_task(mongod_comes_back())
        try:
            async with serving(env, second_log, "--no-smtp", "--no-scheduler"):
                await back
                client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(restarted.uri)
                db = client["journal_faults"]

                async def all_filed() -> bool:
                    return (
                        not journal_files(tmp_path)
                        and await db["spool"].count_documents({}) == 0
                        and await db["messages"].count_documents({}) >= CALLS
                    )

                await eventually(all_filed, timeout=120)
                stored = Counter([d["external_id"] async for d in db["messages"].find()])
                await client.close()
        finally:
            await restarted.stop()
        answered = dict(Counter(statuses))
        report(f"webhook journal: {CALLS} Chatwoot calls with mongod down, answered {answered}; "
               f"serve SIGKILLed and restarted before mongod came back; stored "
               f"{sum(stored.values())}")  # fmt: skip
        assert stored == Counter({f"1/{1000 + n}": 1 for n in range(CALLS)})
    finally:
        await mongo.stop()
