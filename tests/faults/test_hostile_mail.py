"""Hostile content in a real serve: a PDF that takes a minute to read, HTML that took
html.parser minutes, the same PDF in a chat. serve keeps answering, and what comes after
them is filed within seconds: parsing and extraction run in the parsing process, each step
within its CPU budget (``ARCHIVE_PARSE_BUDGET``, 2 s here)."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import aiohttp
import pytest

from ingest.chat.signature import sign
from store.database import Database
from store.documents import Message
from store.embedded import EmbeddedMongo
from tests.conftest import report
from tests.faults.processes import serve_env, serving, watching_healthz
from tests.helpers import eventually
from tests.mail import make_email, send
from tests.pdfs import pdf_bomb

SECRET = "widget-secret-0123456789"
BUDGET_SECONDS = 2


def mail_with_pdf(pdf: bytes) -> bytes:
    message = EmailMessage()
    message["From"], message["To"] = "mallory@example.net", "support@shop.example"
    message["Subject"], message["Message-ID"] = "invoice", "<pdf-bomb@example.net>"
    message.set_content("see attached")
    message.add_attachment(pdf, maintype="application", subtype="pdf", filename="invoice.pdf")
    return message.as_bytes()


def html_bomb() -> bytes:
    return (
        b"From: mallory@example.net\r\nTo: support@shop.example\r\nSubject: html\r\n"
        b"Message-ID: <html-bomb@example.net>\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/html; charset=us-ascii\r\n\r\n" + b"<a " * 25_000 + b"\r\n"
    )


def chat_with_pdf(pdf: bytes) -> bytes:
    return json.dumps({
        "conversation": {"id": "bomb"},
        "messages": [{
            "id": "bomb-1", "author": {"role": "customer"}, "text": "see attached",
            "sent_at": datetime.now(UTC).isoformat(),
            "attachments": [{"filename": "invoice.pdf", "content_type": "application/pdf",
                             "data_base64": base64.b64encode(pdf).decode()}],
        }],
    }).encode()  # fmt: skip


@pytest.mark.slow
async def test_bombs_being_filed_stall_neither_serve_nor_the_mail_after_them(
    database: Database, mongo: EmbeddedMongo, tmp_path: Path
) -> None:
    env = serve_env(mongo.uri, database.db.name, tmp_path, parse_workers="1",
                    parse_budget=f"{BUDGET_SECONDS}s",
                    webhook_sources=f"widget:generic:{SECRET}")  # fmt: skip
    pdf = pdf_bomb()
    async with (
        serving(env, tmp_path / "serve.log") as serve,
        aiohttp.ClientSession() as http,
        watching_healthz(serve) as health,
    ):
        body, stamp = chat_with_pdf(pdf), str(int(time.time()))
        headers = {"X-Archive-Timestamp": stamp, "Content-Type": "application/json",
                   "X-Archive-Signature": sign(SECRET.encode(), stamp, body)}  # fmt: skip
        url = f"http://127.0.0.1:{serve.http_port}/webhooks/chat/widget"
        async with http.post(url, data=body, headers=headers) as answer:
            assert answer.status == 201
        assert (await send(serve.smtp_port, mail_with_pdf(pdf)))[0] == 250
        assert (await send(serve.smtp_port, html_bomb()))[0] == 250
        sent = time.monotonic()
        assert (await send(serve.smtp_port, make_email(message_id="<after@example.com>")))[0] == 250

        async def filed_after() -> bool:
            return await Message.find_one({"message_id_header": "after@example.com"}) is not None

        await eventually(filed_after, timeout=10)
        after = time.monotonic() - sent
    slowest = health.slowest
    pdf_mail = await Message.find_one({"message_id_header": "pdf-bomb@example.net"})
    html_mail = await Message.find_one({"message_id_header": "html-bomb@example.net"})
    chat = await Message.find_one({"external_id": "bomb-1"})
    assert pdf_mail is not None and pdf_mail.parse_error is not None
    assert "attachment text not extracted" in pdf_mail.parse_error
    assert pdf_mail.attachments and pdf_mail.text.strip() == "see attached"
    assert html_mail is not None and html_mail.raw is not None and html_mail.parse_error is None
    assert chat is not None and chat.attachments and chat.attachment_text == ""
    assert slowest < 1.0, f"/healthz took {slowest:.2f}s while the bombs were filed"
    report(f"hostile mail: /healthz at most {slowest * 1000:.0f} ms while a {len(pdf)}-byte PDF "
           f"bomb (mail and chat) and a 75 KB HTML bomb were filed; the next mail filed "
           f"{after:.1f}s after it was sent")  # fmt: skip
