"""Nothing lost: mongod is killed (SIGKILL) while mail and chat stream in, then restarted.

Senders behave like a real MTA and a real webhook client: a message that got 250/2xx is
done; one that got a temporary failure or a dropped connection is sent again until it is
acknowledged. At the end every message must be stored exactly once.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import aiosmtplib
import pytest
from pymongo import AsyncMongoClient

from ingest.chat.signature import sign
from store.embedded import EmbeddedMongo, free_port, kill
from store.journal import journal_files
from tests.conftest import report
from tests.helpers import eventually
from tests.mail import make_email

MESSAGES = 120  # per channel
SECRET = "fault-secret-0123456789"


@dataclass
class Tally:
    sent: Counter[str] = field(default_factory=Counter)  # attempts by outcome
    acknowledged: set[str] = field(default_factory=set)


async def smtp_sender(port: int, tally: Tally) -> None:
    for n in range(MESSAGES):
        ident = f"fault-{n}@example.com"
        raw = make_email(message_id=f"<{ident}>", body=f"message {n}")
        while True:
            try:
                async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=15) as smtp:
                    await smtp.sendmail("ann@example.com", ["support@shop.example"], raw)
                tally.sent["250"] += 1
                tally.acknowledged.add(ident)
                break
            except aiosmtplib.SMTPResponseException as exc:
                tally.sent[str(exc.code)] += 1
            except (aiosmtplib.SMTPException, OSError):
                tally.sent["dropped"] += 1
            await asyncio.sleep(0.2)


async def webhook_sender(port: int, tally: Tally) -> None:
    async with aiohttp.ClientSession() as http:
        for n in range(MESSAGES):
            ident = f"chat-{n}"
            body = json.dumps({
                "conversation": {"id": f"conv-{n % 7}"},
                "messages": [{"id": ident, "author": {"role": "customer"}, "text": f"chat {n}",
                              "sent_at": "2026-11-24T10:00:00Z"}],
            }).encode()  # fmt: skip
            while True:
                stamp = str(int(time.time()))
                headers = {"X-Archive-Timestamp": stamp, "Content-Type": "application/json",
                           "X-Archive-Signature": sign(SECRET.encode(), stamp, body)}  # fmt: skip
                try:
                    url = f"http://127.0.0.1:{port}/webhooks/chat/widget"
                    timeout = aiohttp.ClientTimeout(total=15)
                    post = http.post(url, data=body, headers=headers, timeout=timeout)
                    async with post as response:
                        tally.sent[str(response.status)] += 1
                        if 200 <= response.status < 300:
                            tally.acknowledged.add(ident)
                            break
                except (aiohttp.ClientError, TimeoutError):
                    tally.sent["dropped"] += 1
                await asyncio.sleep(0.2)


@pytest.mark.slow
async def test_every_acknowledged_message_survives_a_killed_mongod_and_none_is_doubled(
    tmp_path: Path,
) -> None:
    mongo = EmbeddedMongo(tmp_path / "mongo")
    await mongo.start()
    restarted = EmbeddedMongo(tmp_path / "mongo", port=mongo.port)
    http_port, smtp_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARCHIVE_")} | {
        "ARCHIVE_MONGODB_URI": mongo.uri, "ARCHIVE_DB_NAME": "faults",
        "ARCHIVE_DATA_DIR": str(tmp_path), "ARCHIVE_HTTP_PORT": str(http_port),
        "ARCHIVE_SMTP_PORT": str(smtp_port), "ARCHIVE_DB_TIMEOUT": "2s",
        "ARCHIVE_WEBHOOK_SOURCES": f"widget:generic:{SECRET}",
    }  # fmt: skip
    log = (tmp_path / "serve.log").open("wb")
    serve = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service.cli", "serve", "--no-scheduler", env=env,
        stdout=log, stderr=log,
    )  # fmt: skip
    try:

        async def ready() -> bool:
            try:
                async with aiohttp.ClientSession() as http, http.get(
                    f"http://127.0.0.1:{http_port}/readyz") as response:  # fmt: skip
                    return response.status == 200
            except aiohttp.ClientError:
                return False

        await eventually(ready, timeout=60)
        mail, chat = Tally(), Tally()
        senders = asyncio.gather(smtp_sender(smtp_port, mail), webhook_sender(http_port, chat))

        async def some_acknowledged() -> bool:
            return len(mail.acknowledged) >= 30 and len(chat.acknowledged) >= 30

        await eventually(some_acknowledged, timeout=60)
        kill(mongo)  # the crash: no shutdown, no flush beyond what is journaled
        await asyncio.sleep(3)
        await restarted.start()
        await asyncio.wait_for(senders, timeout=240)

        client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(restarted.uri)
        messages = client["faults"]["messages"]

        async def all_filed() -> bool:  # acknowledged once spooled (or journaled), filed behind
            spooled = await client["faults"]["spool"].count_documents({})
            return spooled == 0 and not journal_files(tmp_path)

        await eventually(all_filed, timeout=60)
        # Mail is identified by its content; its Message-ID says which delivery it was.
        stored = Counter([
            f"email:{d['message_id_header']}" if d["channel"] == "email" else d["dedup_key"]
            async for d in messages.find({}, {"dedup_key": 1, "channel": 1, "message_id_header": 1})
        ])  # fmt: skip
        await client.close()
        report(f"faults injected: 1 mongod SIGKILL + restart\n"
              f"email: {MESSAGES} messages, attempts {dict(mail.sent)}, acknowledged "
              f"{len(mail.acknowledged)}\nchat: {MESSAGES} messages, attempts {dict(chat.sent)}, "
              f"acknowledged {len(chat.acknowledged)}\nstored: {sum(stored.values())}")  # fmt: skip

        assert {k for k, n in stored.items() if n > 1} == set(), "stored twice"
        expected = {f"email:{i}" for i in mail.acknowledged} | {
            f"chat:widget:{i}" for i in chat.acknowledged
        }
        assert set(stored) == expected
        assert len(expected) == 2 * MESSAGES
        assert (
            sum(n for k, n in mail.sent.items() if k != "250")
            + sum(n for k, n in chat.sent.items() if not k.startswith("2"))
            > 0
        ), "the fault was never felt"
    finally:
        if serve.returncode is None:
            serve.terminate()
            await serve.wait()
        log.close()
        await restarted.stop()
        await mongo.stop()
