"""Building test emails and sending them to a real SMTP server."""

from __future__ import annotations

import re
from email import policy
from email.message import EmailMessage

import aiosmtplib

_QUEUED = re.compile(r"queued as ([0-9a-f]{24})")


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
) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = "Tue, 24 Nov 2026 10:00:00 +0100"
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
