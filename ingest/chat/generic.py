"""The ``generic`` format: one conversation and 1..N messages (a message or a transcript)."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from ingest.chat.formats import ChatFormat, Ignored, SignatureHeaders
from store.blobs import NewAttachment
from store.chat import ChatBatch, NewChatMessage
from store.documents import Author, AuthorRole, Direction, at_millis, in_utc_range

Id = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f]+$")]
Email = Annotated[
    str,
    Field(max_length=320, pattern=r"^[^@\x00-\x20\x7f-\x9f]+@[^@\x00-\x20\x7f-\x9f]+$"),
    AfterValidator(lambda v: v.lower()),
]
Text = Annotated[str, Field(max_length=1_000_000)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Customer(_Model):
    email: Email | None = None
    name: Annotated[str, Field(max_length=500)] | None = None


class Conversation(_Model):
    id: Id
    account_id: Id | None = None
    customer: Customer | None = None
    subject: Annotated[str, Field(max_length=1000)] | None = None


class MessageAuthor(_Model):
    role: Literal["customer", "agent", "bot", "system"]
    name: Annotated[str, Field(max_length=500)] | None = None
    email: Email | None = None


class Attachment(_Model):
    filename: Annotated[str, Field(min_length=1, max_length=255)]
    content_type: Annotated[str, Field(pattern=r"^[\w.+-]+/[\w.+-]+$", max_length=255)]
    data_base64: str

    @field_validator("data_base64")
    @classmethod
    def _base64(cls, value: str) -> str:
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("is not valid base64") from None
        return value


class ChatMessage(_Model):
    id: Id
    author: MessageAuthor
    text: Text
    sent_at: Annotated[AwareDatetime, AfterValidator(in_utc_range)]
    attachments: Annotated[list[Attachment], Field(max_length=50)] = []


class Payload(_Model):
    conversation: Conversation
    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=5000)]


_DIRECTION = {
    AuthorRole.CUSTOMER: Direction.INBOUND,
    AuthorRole.AGENT: Direction.OUTBOUND,
    AuthorRole.BOT: Direction.OUTBOUND,
    AuthorRole.SYSTEM: Direction.INTERNAL,
}


def parse(
    body: Any, source: str, received_at: datetime, *, trusted: bool = False
) -> ChatBatch | Ignored:
    # Every generic source is trusted: its signed payload names the account itself.
    payload = Payload.model_validate(body)
    customer = payload.conversation.customer
    return ChatBatch(
        source=source,
        conversation_id=payload.conversation.id,
        received_at=received_at,
        account_id=payload.conversation.account_id,
        customer_email=customer.email if customer else None,
        subject=payload.conversation.subject,
        messages=[_message(m) for m in payload.messages],
    )


def _message(message: ChatMessage) -> NewChatMessage:
    role = AuthorRole(message.author.role)
    author = Author(role=role, name=message.author.name, email=message.author.email)
    return NewChatMessage(
        external_id=message.id,
        author=author,
        direction=_DIRECTION[role],
        text=message.text,
        sent_at=at_millis(message.sent_at),
        attachments=[
            NewAttachment(
                data=base64.b64decode(a.data_base64),
                filename=a.filename,
                content_type=a.content_type,
            )
            for a in message.attachments
        ],
    )


GENERIC = ChatFormat(
    name="generic",
    headers=SignatureHeaders(timestamp="X-Archive-Timestamp", signature="X-Archive-Signature"),
    parse=parse,
)
