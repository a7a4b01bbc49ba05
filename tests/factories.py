"""Test data through the real ingest paths (parse + file), not hand-made documents."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from ingest.mime import SupportSide, parse_email
from store.chat import ChatBatch, NewChatMessage, file_chat
from store.documents import Author, AuthorRole, Direction, Message, utcnow
from store.messages import file_email
from tests.mail import make_email

SUPPORT = SupportSide.parse(["@shop.example"])
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
_counter = itertools.count()


async def email(
    *, account_id: str | None = None, at: datetime | None = None, **fields: Any
) -> Message:
    """An email, filed as SMTP would file it; ``account_id`` forces the account."""
    n = next(_counter)
    fields.setdefault("message_id", f"<factory-{n}@example.com>")
    parsed = parse_email(make_email(**fields), support=SUPPORT, received_at=utcnow())
    if at is not None:
        parsed = replace(parsed, sent_at=at)
    if account_id is not None:
        parsed = parsed.for_account(account_id)
    filed = await file_email(parsed)
    message = await Message.get(filed.message_id)
    assert message is not None
    return message


async def chat(
    text: str,
    *,
    account_id: str | None = None,
    conversation: str = "chat-1",
    at: datetime | None = None,
    role: AuthorRole = AuthorRole.CUSTOMER,
    customer_email: str | None = None,
) -> Message:
    n = next(_counter)
    filed = await file_chat(
        ChatBatch(
            source="widget",
            conversation_id=conversation,
            received_at=utcnow(),
            account_id=account_id,
            customer_email=customer_email,
            messages=[
                NewChatMessage(
                    external_id=f"m-{n}",
                    author=Author(role=role),
                    direction=Direction.INBOUND
                    if role is AuthorRole.CUSTOMER
                    else Direction.OUTBOUND,
                    text=text,
                    sent_at=at or T0 + timedelta(minutes=n),
                )
            ],
        )
    )
    message = await Message.get(filed.messages[0].id)
    assert message is not None
    return message
