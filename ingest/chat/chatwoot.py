"""The ``chatwoot`` format: Chatwoot's account webhooks ``message_created`` and
``message_updated``. Private notes are kept as internal; every other event is ignored."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from ingest.chat.formats import ChatFormat, Ignored, SignatureHeaders
from store.chat import ChatBatch, NewChatMessage
from store.documents import Author, AuthorRole, Direction, at_millis

HANDLED = frozenset({"message_created", "message_updated"})
# Chatwoot's API sends message_type as an integer in some payloads.
_TYPES = {0: "incoming", 1: "outgoing", 2: "activity", 3: "template"}
Id = int | Annotated[str, Field(min_length=1, max_length=200)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Event(_Model):
    event: Annotated[str, Field(max_length=100)]


class Contact(_Model):
    id: Id | None = None
    name: str | None = None
    email: str | None = None
    # The platform's own user id, set by the widget's setUser(identifier, ...): the account.
    identifier: str | None = None
    type: str | None = None


class Meta(_Model):
    sender: Contact | None = None


class Named(_Model):
    id: Id
    name: str | None = None


class Conversation(_Model):
    id: Id
    display_id: Id | None = None
    meta: Meta | None = None


class MessageEvent(_Model):
    event: Literal["message_created", "message_updated"]
    id: Id
    content: Annotated[str, Field(max_length=1_000_000)] | None = None
    message_type: Annotated[
        Literal["incoming", "outgoing", "template", "activity"],
        BeforeValidator(lambda v: _TYPES.get(v, v) if isinstance(v, int) else v),
    ]
    private: bool = False
    created_at: datetime | None = None  # ISO 8601, or unix seconds
    sender: Contact | None = None
    conversation: Conversation
    account: Named | None = None
    inbox: Named | None = None


def parse(body: Any, source: str, received_at: datetime) -> ChatBatch | Ignored:
    event = Event.model_validate(body).event
    if event not in HANDLED:
        return Ignored(event)
    message = MessageEvent.model_validate(body)
    kind = message.message_type
    contact = message.conversation.meta.sender if message.conversation.meta else None
    if contact is None and kind == "incoming":
        contact = message.sender
    scope = f"{message.account.id}/" if message.account else ""
    return ChatBatch(
        source=source,
        conversation_id=f"{scope}{message.conversation.id}",
        received_at=received_at,
        account_id=contact.identifier if contact and contact.identifier else None,
        customer_email=contact.email.lower() if contact and contact.email else None,
        messages=[
            NewChatMessage(
                external_id=f"{scope}{message.id}",
                author=_author(message, kind),
                direction=_direction(message, kind),
                text=message.content or "",
                sent_at=at_millis(message.created_at or received_at),
            )
        ],
        edits=event == "message_updated",
    )


def _author(message: MessageEvent, kind: str) -> Author:
    sender = message.sender
    if kind == "activity":
        role = AuthorRole.SYSTEM
    elif kind == "incoming":
        role = AuthorRole.CUSTOMER
    elif sender is not None and sender.type == "agent_bot":
        role = AuthorRole.BOT
    else:
        role = AuthorRole.AGENT
    email = sender.email.lower() if sender and sender.email else None
    return Author(role=role, name=sender.name if sender else None, email=email)


def _direction(message: MessageEvent, kind: str) -> Direction:
    if message.private or kind == "activity":
        return Direction.INTERNAL
    return Direction.INBOUND if kind == "incoming" else Direction.OUTBOUND


CHATWOOT = ChatFormat(
    name="chatwoot",
    headers=SignatureHeaders(timestamp="X-Chatwoot-Timestamp", signature="X-Chatwoot-Signature"),
    parse=parse,
)
