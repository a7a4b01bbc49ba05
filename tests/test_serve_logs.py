"""The log of a whole working session of a real ``serve`` process holds no personal data:
mail and chat in, searches, reads, an export, a deletion, an erasure and the purge."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ingest.chat.signature import sign
from store.database import Database
from store.documents import Message, PurgeRecord, Role
from store.embedded import EmbeddedMongo
from store.keys import create_key
from tests.faults.processes import Serve, serve_env, serving
from tests.helpers import eventually
from tests.mail import make_email, queued_id, send

SECRET = "widget-secret-0123456789"
ACCOUNT = "acct-7f3a"
ADDRESS = "zelda.quixotic@example.net"
NAME = "Zelda Quixotic-Marchbanks"
SUBJECT = "Xylophone invoice disputed"
BODY = "The parsnip umbrella arrived broken."
CHAT_TEXT = "Marmalade telescope, order never came"
ATTACHMENT = "zelda-passport-scan.pdf"
QUERY = "parsnip umbrella"
# Every piece of personal data the session uses: none may appear in the log, in any case.
PERSONAL = [ADDRESS, "zelda", "quixotic", "marchbanks", "xylophone", "parsnip", "umbrella",
            "marmalade", "telescope", "passport"]  # fmt: skip


class Session:
    """An HTTP client of the running serve, with a key for every role."""

    def __init__(self, serve: Serve, tokens: dict[Role, str], http: aiohttp.ClientSession):
        self.base = f"http://127.0.0.1:{serve.http_port}"
        self.tokens, self.http = tokens, http

    async def call(
        self, method: str, path: str, role: Role, expect: int, **kw: Any
    ) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"}
        async with self.http.request(method, self.base + path, headers=headers, **kw) as response:
            assert response.status == expect, await response.text()
            if response.content_type.endswith("json"):
                answer: dict[str, Any] = await response.json()
                return answer
            await response.read()
            return {}

    async def webhook(self, payload: dict[str, Any], *, secret: str = SECRET) -> int:
        raw = json.dumps(payload).encode()
        stamp = str(int(time.time()))
        headers = {"X-Archive-Timestamp": stamp, "Content-Type": "application/json",
                   "X-Archive-Signature": sign(secret.encode(), stamp, raw)}  # fmt: skip
        async with self.http.post(f"{self.base}/webhooks/chat/widget", data=raw,
                                  headers=headers) as response:  # fmt: skip
            return response.status


def chat_payload() -> dict[str, Any]:
    return {
        "conversation": {"id": "c-9", "customer": {"email": ADDRESS, "name": NAME},
                         "subject": SUBJECT},
        "messages": [{"id": "m-1", "author": {"role": "customer", "name": NAME, "email": ADDRESS},
                      "text": CHAT_TEXT, "sent_at": "2026-11-24T10:00:00Z"}],
    }  # fmt: skip


async def mail_in(serve: Serve) -> str:
    raw = make_email(subject=SUBJECT, sender=f"{NAME} <{ADDRESS}>", body=BODY,
                     message_id="<m-4411@mail.example.net>",
                     attachments=[(ATTACHMENT, "application/pdf", b"%PDF-1.4 scan")])  # fmt: skip
    code, reply = await send(serve.smtp_port, raw, sender=ADDRESS)
    assert code == 250
    reply_raw = make_email(subject=f"Re: {SUBJECT}", sender="Support <help@shop.example>",
                           to=f"{NAME} <{ADDRESS}>", body=f"Dear {NAME}, about the {BODY}",
                           message_id="<r-1@shop.example>",
                           in_reply_to="<m-4411@mail.example.net>")  # fmt: skip
    code, _ = await send(serve.smtp_port, reply_raw, sender="help@shop.example")
    assert code == 250
    return queued_id(reply)


async def work_through_a_customers_life(session: Session, serve: Serve) -> None:
    call = session.call
    body = {"emails": [ADDRESS], "name": NAME}
    await call("PUT", f"/api/v1/accounts/{ACCOUNT}", Role.PLATFORM, 201, json=body)
    bad = {"emails": [ADDRESS, f"not an address {NAME}"]}
    await call("PUT", f"/api/v1/accounts/{ACCOUNT}", Role.PLATFORM, 422, json=bad)
    message_id = await mail_in(serve)
    assert await session.webhook(chat_payload()) == 201
    assert await session.webhook(chat_payload(), secret="wrong-secret-0123456789") == 401

    async def filed() -> bool:
        return await Message.find({"account_id": ACCOUNT}).count() == 3

    await eventually(filed, timeout=60)

    async def searchable() -> bool:  # the index follows MongoDB a moment behind
        found = await call("GET", "/api/v1/search", Role.AGENT, 200, params={"q": QUERY})
        return bool(found["hits"])

    await eventually(searchable, timeout=30)
    for params in ({"participant": ADDRESS}, {"q": f'from:{ADDRESS} "{SUBJECT}"'},
                   {"q": f"{NAME} -invoice", "account_id": ACCOUNT}):  # fmt: skip
        await call("GET", "/api/v1/search", Role.AGENT, 200, params=params)
    too_long = f"{QUERY} {'zelda' * 20}"  # a query the API refuses (400)
    await call("GET", "/api/v1/search", Role.AGENT, 400, params={"q": too_long})
    message = await call("GET", f"/api/v1/messages/{message_id}", Role.AGENT, 200)
    await call("GET", f"/api/v1/conversations/{message['conversation_id']}", Role.AGENT, 200)
    await call("GET", f"/api/v1/messages/{message_id}/raw", Role.AGENT, 200)
    await call("GET", f"/api/v1/messages/{message_id}/attachments/0", Role.AGENT, 200)
    await call("GET", f"/api/v1/accounts/{ACCOUNT}", Role.AGENT, 200)
    await export(session)
    await call("POST", f"/api/v1/accounts/{ACCOUNT}/deletion", Role.PLATFORM, 200)
    await call("POST", f"/api/v1/accounts/{ACCOUNT}/erasure", Role.COMPLIANCE, 202)

    async def purged() -> bool:
        record = await PurgeRecord.find_one({"done_at": {"$ne": None}})
        return record is not None and await Message.find({"account_id": ACCOUNT}).count() == 0

    await eventually(purged, timeout=60)
    await call("GET", f"/api/v1/audit?account_id={ACCOUNT}", Role.ADMIN, 200)


async def export(session: Session) -> None:
    started = await session.call("POST", "/api/v1/exports", Role.COMPLIANCE, 202,
                                 json={"account_id": ACCOUNT})  # fmt: skip

    async def ready() -> bool:
        view = await session.call("GET", f"/api/v1/exports/{started['id']}", Role.COMPLIANCE, 200)
        return bool(view["status"] == "ready")

    await eventually(ready, timeout=60)
    path = f"/api/v1/exports/{started['id']}/download"
    await session.call("GET", path, Role.COMPLIANCE, 200)


@pytest.mark.slow
@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_a_whole_session_of_serve_logs_no_personal_data(
    database: Database, mongo: EmbeddedMongo, tmp_path: Path, log_format: str
) -> None:
    tokens = {role: (await create_key(name=f"{role}-key", role=role))[1] for role in Role}
    env = serve_env(mongo.uri, database.db.name, tmp_path / "data", log_level="DEBUG",
                    log_format=log_format, webhook_sources=f"widget:generic:{SECRET}",
                    support_addresses="@shop.example", purge_interval="1s",
                    blob_quiet_period="0s",
                    secret_key="log-test-secret-key-0123456789abcdef01")  # fmt: skip
    log = tmp_path / "serve.log"
    async with (
        serving(env, log) as serve,
        aiohttp.ClientSession() as http,
    ):
        await work_through_a_customers_life(Session(serve, tokens, http), serve)
        serve.process.send_signal(signal.SIGTERM)
        assert await serve.process.wait() == 0
    text = log.read_text()
    # The session really was logged: requests, filing, the export and the purge.
    for expected in ("/api/v1/search", "/webhooks/chat/widget", "stored", "export",
                     "sweep", "stopped"):  # fmt: skip
        assert expected in text, f"{expected!r} not in the log"
    leaked = [word for word in PERSONAL if word in text.lower()]
    assert leaked == [], f"personal data in the log: {leaked}"
