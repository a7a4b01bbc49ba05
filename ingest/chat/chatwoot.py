"""The ``chatwoot`` format: Chatwoot's ``message_created`` and ``message_updated`` events, as
Chatwoot builds them (``Message#webhook_data`` merged with ``event``), and the same messages as
its API lists them (``Message#push_event_data``), for ``chatwoot backfill``.

Private notes are kept as internal; every other event is ignored. The contact's
``identifier`` names the account only when Chatwoot verified it (identity validation:
``conversation.meta.hmac_verified``) or the source is trusted: a website visitor can set any
identifier with ``setUser`` otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from ingest.chat.formats import ChatFormat, Ignored, SignatureHeaders
from store.chat import AttachmentLink, ChatBatch, NewChatMessage
from store.documents import (
    Author,
    AuthorRole,
    Direction,
    UnfetchedAttachment,
    at_millis,
    in_utc_range,
)
from store.messages import MAX_HEADER_CHARS

HANDLED = frozenset({"message_created", "message_updated"})
# The API (push_event_data) sends message_type as Chatwoot's enum integer; webhooks its name.
_TYPES = {0: "incoming", 1: "outgoing", 2: "activity", 3: "template"}
# Attachment#file_type, by name (webhooks, API) or number; only these carry a stored file.
_FILE_TYPES = ["image", "audio", "video", "file", "location", "fallback", "share",
               "story_mention", "contact", "ig_reel", "ig_post", "ig_story", "embed"]  # fmt: skip
_WITH_FILE = frozenset({"image", "audio", "video", "file"})
# Who wrote an outgoing message, by the ``type`` of its sender.
_SENDER_ROLES = {
    "user": AuthorRole.AGENT,
    "agent_bot": AuthorRole.BOT,
    "captain_assistant": AuthorRole.ASSISTANT,
}
Id = int | Annotated[str, Field(min_length=1, max_length=200)]
# Chatwoot never sends an event again, so content is taken however long and cut, never
# refused: the body limit (413) bounds a call, the store cuts texts to their bound in bytes,
# and a subject is cut to the longest line a mail header may have, as a mail's is.
Text = str
Subject = Annotated[str, AfterValidator(lambda v: v[:MAX_HEADER_CHARS])]


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Event(_Model):
    event: Annotated[str, Field(max_length=100)]


class Contact(_Model):
    """``Contact#push_event_data`` (``conversation.meta.sender``)."""

    id: Id | None = None
    name: str | None = None
    email: str | None = None
    # The platform's own user id, set by the widget's setUser(identifier, ...).
    identifier: str | None = None


class Sender(_Model):
    """``sender``: a contact (no ``type`` in webhooks, ``contact`` in the API), a ``user``
    (agent), an ``agent_bot`` or a ``captain_assistant``."""

    id: Id | None = None
    name: str | None = None
    email: str | None = None
    identifier: str | None = None
    type: str | None = None


class Meta(_Model):
    sender: Contact | None = None
    # Whether the contact's identity was verified (identity validation, HMAC of identifier).
    hmac_verified: bool | None = None


class Conversation(_Model):
    """``Conversation#webhook_data`` / the API's conversation: ``id`` is the display id."""

    id: Id
    meta: Meta | None = None


class Named(_Model):
    id: Id
    name: str | None = None


class EmailPart(_Model):
    full: Text | None = None


class Email(_Model):
    """``content_attributes.email``: ``MailPresenter#serialized_data`` of a mail Chatwoot got."""

    subject: Subject | None = None
    html_content: EmailPart | None = None
    text_content: EmailPart | None = None


class ContentAttributes(_Model):
    # Chatwoot's delete replaces the content with a notice and sets this.
    deleted: bool | None = None
    email: Email | None = None


class Attachment(_Model):
    """``Attachment#push_event_data``: no file name or type; ``data_url`` is ActiveStorage's
    redirect URL, which ends in the file name."""

    file_type: (
        Annotated[
            str,
            BeforeValidator(lambda v: _FILE_TYPES[v] if isinstance(v, int) and 0 <= v < 13 else v),
        ]
        | None
    ) = None
    data_url: Annotated[str, Field(max_length=10_000)] | None = None
    extension: str | None = None
    file_size: int | None = None
    fallback_title: str | None = None


class ChatwootMessage(_Model):
    id: Id
    content: Text | None = None
    message_type: Annotated[
        Literal["incoming", "outgoing", "template", "activity"],
        BeforeValidator(lambda v: _TYPES.get(v, v) if isinstance(v, int) else v),
    ]
    private: bool = False
    # ISO 8601 (webhooks), or unix seconds (API)
    created_at: Annotated[datetime, AfterValidator(in_utc_range)] | None = None
    sender: Sender | None = None
    content_attributes: ContentAttributes | None = None
    attachments: Annotated[list[Attachment], Field(max_length=50)] = []


class MessageEvent(ChatwootMessage):
    event: Literal["message_created", "message_updated"]
    conversation: Conversation
    account: Named | None = None


def parse(
    body: Any, source: str, received_at: datetime, *, trusted: bool = False
) -> ChatBatch | Ignored:
    event = Event.model_validate(body).event
    if event not in HANDLED:
        return Ignored(event)
    message = MessageEvent.model_validate(body)
    return conversation_batch(
        source=source, account_id=message.account.id if message.account else None,
        conversation=message.conversation, messages=[message], received_at=received_at,
        trusted=trusted, edits=event == "message_updated",
    )  # fmt: skip


def conversation_batch(
    *,
    source: str,
    account_id: Id | None,
    conversation: Conversation,
    messages: Sequence[ChatwootMessage],
    received_at: datetime,
    trusted: bool,
    edits: bool = False,
) -> ChatBatch:
    """Messages of one Chatwoot conversation as a batch to file. Ids are scoped by Chatwoot's
    account: conversation display ids are numbered per account."""
    scope = f"{account_id}/" if account_id is not None else ""
    contact = _contact(conversation, messages)
    verified = trusted or bool(conversation.meta and conversation.meta.hmac_verified)
    new = [_message(m, scope, received_at) for m in messages]
    return ChatBatch(
        source=source,
        conversation_id=f"{scope}{conversation.id}",
        received_at=received_at,
        # An identifier nobody verified is ignored: the email links the conversation instead.
        account_id=contact.identifier if verified and contact and contact.identifier else None,
        customer_email=contact.email.lower() if contact and contact.email else None,
        subject=next((m.subject for m in new if m.subject), None),
        messages=new,
        edits=edits,
    )


def _contact(
    conversation: Conversation, messages: Sequence[ChatwootMessage]
) -> Contact | Sender | None:
    if conversation.meta and conversation.meta.sender:
        return conversation.meta.sender
    incoming = (m.sender for m in messages if m.message_type == "incoming" and m.sender)
    return next(incoming, None)


def _message(message: ChatwootMessage, scope: str, received_at: datetime) -> NewChatMessage:
    attributes = message.content_attributes or ContentAttributes()
    email = attributes.email
    text = (email.text_content.full if email and email.text_content else None) or message.content
    links, unfetched = _attachments(message.attachments)
    return NewChatMessage(
        external_id=f"{scope}{message.id}",
        author=_author(message),
        direction=_direction(message),
        text=text or "",
        html=email.html_content.full if email and email.html_content else None,
        subject=email.subject if email else None,
        sent_at=at_millis(message.created_at or received_at),
        links=links,
        unfetched=unfetched,
        deleted=bool(attributes.deleted),
    )


def _author(message: ChatwootMessage) -> Author:
    sender = message.sender
    kind = message.message_type
    if kind == "incoming":
        role = AuthorRole.CUSTOMER
    elif kind == "activity":
        role = AuthorRole.SYSTEM
    elif kind == "template":
        role = AuthorRole.TEMPLATE
    elif sender is None:  # an automation rule or a campaign: the helpdesk itself
        role = AuthorRole.SYSTEM
    else:
        role = _SENDER_ROLES.get(sender.type or "", AuthorRole.AGENT)
    email = sender.email.lower() if sender and sender.email else None
    return Author(role=role, name=sender.name if sender else None, email=email)


def _direction(message: ChatwootMessage) -> Direction:
    if message.private or message.message_type == "activity":
        return Direction.INTERNAL
    return Direction.INBOUND if message.message_type == "incoming" else Direction.OUTBOUND


def _attachments(
    attachments: Sequence[Attachment],
) -> tuple[list[AttachmentLink], list[UnfetchedAttachment]]:
    links, unfetched = [], []
    for attachment in attachments:
        if attachment.file_type in _WITH_FILE and attachment.data_url:
            links.append(AttachmentLink(
                url=attachment.data_url, filename=_filename(attachment.data_url),
                size=attachment.file_size,
            ))  # fmt: skip
        else:  # a location, a shared link, a contact card: no file to fetch
            link = AttachmentLink(url=attachment.data_url or "", filename=attachment.fallback_title)
            unfetched.append(link.unfetched(f"{attachment.file_type or 'unknown'}: not a file"))
    return links, unfetched


def _filename(url: str) -> str | None:
    name = unquote(PurePosixPath(urlsplit(url).path).name)
    return name[:255] or None


CHATWOOT = ChatFormat(
    name="chatwoot",
    headers=SignatureHeaders(timestamp="X-Chatwoot-Timestamp", signature="X-Chatwoot-Signature"),
    parse=parse,
)
