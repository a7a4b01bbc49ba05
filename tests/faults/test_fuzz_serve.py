"""Random mail and webhook bodies against a real serve: never a 500, never a stall (/healthz
answers within 1 s throughout), and every id an acknowledgement named resolves once filed.

Mutations of the real corpus over SMTP, and of a valid transcript (each field replaced by
what a hostile or broken sender might put there) over signed webhooks, from a fixed seed."""

from __future__ import annotations

import copy
import json
import random
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from beanie import PydanticObjectId

from ingest.chat.signature import sign
from store.database import Database
from store.embedded import EmbeddedMongo
from store.reading import filed_message
from tests.conftest import report
from tests.faults.processes import serve_env, serving, watching_healthz
from tests.faults.test_fuzz_mime import CORPUS, mutate
from tests.helpers import eventually
from tests.mail import queued_id, send

SECRET = "widget-secret-0123456789"
MAILS = 60
CALLS = 60
ODD_VALUES: list[Any] = [
    None, "", "x" * 5000, -1, 10**30, 1e308, [], {}, True, "\u0000", {"$ne": None},
    "9999-12-31T23:59:59-12:00", "0001-01-01T00:00:00+14:00", "2026-02-30T00:00:00Z",
    "not a date", "\ud800", "<script>alert(1)</script>", ["a", 1, None],
]  # fmt: skip


def transcript(n: int) -> dict[str, Any]:
    return {
        "conversation": {"id": f"fuzz-{n}", "customer": {"email": "ann@example.com"}},
        "messages": [{
            "id": f"fuzz-{n}-{i}", "author": {"role": "customer", "name": "Ann"},
            "text": f"message {i}", "sent_at": datetime.now(UTC).isoformat(),
            "attachments": [{"filename": "a.txt", "content_type": "text/plain",
                             "data_base64": "aGVsbG8="}],
        } for i in range(2)],
    }  # fmt: skip


def places(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into ``value``'s dicts and lists."""
    found = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            found += places(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += places(item, (*path, index))
    return found


def mutated_call(rng: random.Random, n: int) -> bytes:
    body: Any = copy.deepcopy(transcript(n))
    for _ in range(rng.randint(1, 3)):
        path = rng.choice(places(body)[1:])
        parent = body
        for step in path[:-1]:
            parent = parent[step]
        if rng.random() < 0.2 and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = rng.choice(ODD_VALUES)
    return json.dumps(body).encode("utf-8", "surrogatepass")


@pytest.mark.slow
async def test_random_mail_and_webhooks_get_no_500_no_stall_and_every_ack_resolves(
    database: Database, mongo: EmbeddedMongo, tmp_path: Path
) -> None:
    rng = random.Random(20261208)
    env = serve_env(mongo.uri, database.db.name, tmp_path, parse_workers="1",
                    webhook_sources=f"widget:generic:{SECRET}")  # fmt: skip
    acknowledged: list[PydanticObjectId] = []
    statuses: dict[int, int] = {}
    async with (
        serving(env, tmp_path / "serve.log") as serve,
        aiohttp.ClientSession() as http,
        watching_healthz(serve) as health,
    ):
        base = f"http://127.0.0.1:{serve.http_port}"
        for _ in range(MAILS):
            code, reply = await send(serve.smtp_port, mutate(rng.choice(CORPUS), rng))
            statuses[code] = statuses.get(code, 0) + 1
            assert code == 250, reply  # a message is never refused for its content
            acknowledged.append(PydanticObjectId(queued_id(reply)))
        for n in range(CALLS):
            body, stamp = mutated_call(rng, n), str(int(time.time()))
            headers = {"X-Archive-Timestamp": stamp, "Content-Type": "application/json",
                       "X-Archive-Signature": sign(SECRET.encode(), stamp, body)}  # fmt: skip
            async with http.post(f"{base}/webhooks/chat/widget", data=body,
                                 headers=headers) as answer:  # fmt: skip
                statuses[answer.status] = statuses.get(answer.status, 0) + 1
                assert answer.status in (200, 201, 400, 413, 422), await answer.text()
                if answer.status < 300:
                    named = (await answer.json())["messages"]
                    acknowledged += [PydanticObjectId(m["id"]) for m in named]

        async def all_resolve() -> bool:
            return all([await filed_message(i) is not None for i in acknowledged])

        await eventually(all_resolve, timeout=120)
    slowest = health.slowest
    assert slowest < 1.0, f"/healthz took {slowest:.2f}s"
    report(f"fuzzing a real serve: {MAILS} mutated mails and {CALLS} mutated webhook calls, "
           f"answers {dict(sorted(statuses.items()))}, {len(acknowledged)} acknowledged ids "
           f"all resolve; /healthz at most {slowest * 1000:.0f} ms")  # fmt: skip
