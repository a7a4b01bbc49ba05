"""Building test emails and sending them to a real SMTP server."""

from __future__ import annotations

import re
import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from email import policy
from email.message import EmailMessage

import aiosmtplib
from beanie import PydanticObjectId

from ingest.filer import Filer, filing
from ingest.mime import SupportSide
from ingest.smtp import ArchiveHandler, networks, smtp_server
from store.documents import Message
from store.spool import Spool
from tests.helpers import eventually

_QUEUED = re.compile(r"queued as ([0-9a-f]{24})")

SUPPORT = SupportSide.parse(["@shop.example"])
LOOPBACK = ("127.0.0.0/8", "::1")
MAX_BYTES = 64 * 1024


def handler(
    spool: Spool, *, allowed: Sequence[str] = LOOPBACK, max_recipients: int = 1000
) -> ArchiveHandler:
    return ArchiveHandler(spool=spool, allowed_clients=networks(allowed),
                          max_recipients=max_recipients)  # fmt: skip


@asynccontextmanager
async def running(
    spool: Spool,
    *,
    allowed: Sequence[str] = LOOPBACK,
    tls: ssl.SSLContext | None = None,
    max_message_bytes: int = MAX_BYTES,
    idle_timeout: float = 300.0,
    max_per_client: int = 50,
    max_per_network: int = 200,
    max_connections: int = 1000,
    max_recipients: int = 1000,
) -> AsyncIterator[int]:
    """An SMTP server spooling into the current database and its filer, as serve runs them;
    yields the port."""
    async with (
        filing(Filer(spool, support=SUPPORT), spool, shutdown_grace=10),
        smtp_server(
            handler(spool, allowed=allowed, max_recipients=max_recipients), host="127.0.0.1",
            port=0, tls=tls, max_message_bytes=max_message_bytes, idle_timeout=idle_timeout,
            max_per_client=max_per_client, max_per_network=max_per_network,
            max_connections=max_connections,
        ) as server,
    ):  # fmt: skip
        yield server.sockets[0].getsockname()[1]


async def stored(reply: str, *, within: float = 20) -> Message:
    """The message a 250 named, once the filer has filed it."""
    message_id = PydanticObjectId(queued_id(reply))

    async def filed() -> bool:
        return await Message.get(message_id) is not None

    await eventually(filed, timeout=within)
    message = await Message.get(message_id)
    assert message is not None
    return message


def make_email(
    *,
    subject: str = "Where is my order?",
    sender: str = "Ann Customer <ann@example.com>",
    to: str = "support@shop.example",
    body: str = "Hello, my order 1234 has not arrived.",
    message_id: str | None = "<order-1234@example.com>",
    in_reply_to: str | None = None,
    references: str | None = None,
    html: str | None = None,
    attachments: list[tuple[str, str, bytes]] = (),  # type: ignore[assignment]
    date: str = "Tue, 24 Nov 2026 10:00:00 +0100",
) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = date
    if message_id:
        msg["Message-ID"] = message_id
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    if references:
        msg["References"] = references
    msg.set_content(body)
    if html:
        msg.add_alternative(html, subtype="html")
    for filename, content_type, data in attachments:
        maintype, subtype = content_type.split("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg.as_bytes(policy=policy.SMTP)


async def send(
    port: int,
    raw: bytes,
    *,
    sender: str = "ann@example.com",
    recipients: tuple[str, ...] = ("support@shop.example",),
) -> tuple[int, str]:
    """Send ``raw`` in one SMTP session; the (code, text) of the reply to DATA."""
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False) as client:
        try:
            errors, reply = await client.sendmail(sender, list(recipients), raw)
        except aiosmtplib.SMTPResponseException as exc:
            return exc.code, exc.message
    assert not errors
    return 250, reply


def queued_id(reply: str) -> str:
    found = _QUEUED.search(reply)
    assert found, f"the 250 reply does not name the stored message: {reply!r}"
    return found[1]
