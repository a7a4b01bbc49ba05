"""Chatwoot as it is: its payloads built the way Chatwoot's own code builds them, encoded and
signed the way Chatwoot sends them. See tests/data/chatwoot/README.md for the files followed.

Each builder is named after the Chatwoot method it mirrors and keeps its keys in that method's
order, so that the bytes are those Chatwoot would send.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import UTC, datetime
from typing import Any

T0 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
Json = dict[str, Any]


def rails_json(value: Any) -> bytes:
    """``value.to_json`` as ActiveSupport writes it: compact, UTF-8, with ``<``, ``>``, ``&``
    and the JavaScript line separators escaped (``escape_html_entities_in_json``)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    for char, escaped in (
        ("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
        ("\u2028", "\\u2028"), ("\u2029", "\\u2029"),
    ):  # fmt: skip
        text = text.replace(char, escaped)
    return text.encode()


def rails_time(at: datetime) -> str:
    """A ``Time`` in JSON: ISO 8601, UTC, milliseconds (ActiveSupport's time precision 3)."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def signed_headers(secret: str, body: bytes, *, timestamp: int | None = None) -> dict[str, str]:
    """lib/webhooks/trigger.rb: ``sha256=`` HMAC-SHA256 of ``"#{ts}.#{body}"``."""
    ts = str(timestamp if timestamp is not None else int(time.time()))
    digest = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/json",
        "Accept": "application/json",
        "X-Chatwoot-Delivery": "6f1c2b9e-3f0a-4d7b-9a51-1c2d3e4f5a6b",
        "X-Chatwoot-Timestamp": ts,
        "X-Chatwoot-Signature": f"sha256={digest}",
    }


# --- senders ------------------------------------------------------------------------------


def contact_push_event_data(
    *, id: int = 77, name: str = "Ann Customer", email: str | None = "ann@example.com",
    identifier: str | None = None,
) -> Json:  # fmt: skip
    """app/models/contact.rb ``push_event_data`` (``conversation.meta.sender``, API senders)."""
    return {
        "additional_attributes": {"city": "Lyon", "country": "France"},
        "custom_attributes": {},
        "email": email,
        "id": id,
        "identifier": identifier,
        "name": name,
        "phone_number": None,
        "thumbnail": "",
        "blocked": False,
        "type": "contact",
    }


def contact_webhook_data(**kw: Any) -> Json:
    """app/models/contact.rb ``webhook_data`` (a contact as a message's ``sender``): no type."""
    data = contact_push_event_data(**kw)
    return {
        "additional_attributes": data["additional_attributes"], "avatar": "",
        "custom_attributes": {}, "email": data["email"], "id": data["id"],
        "identifier": data["identifier"], "name": data["name"], "phone_number": None,
        "thumbnail": "", "blocked": False,
    }  # fmt: skip


def user_webhook_data(id: int = 5, name: str = "Maya", email: str = "maya@shop.example") -> Json:
    """app/models/user.rb ``webhook_data`` (an agent)."""
    return {"id": id, "name": name, "email": email, "type": "user"}


def user_push_event_data(id: int = 5, name: str = "Maya") -> Json:
    """app/models/user.rb ``push_event_data`` (an agent, as the API lists messages)."""
    return {
        "id": id, "name": name, "available_name": name, "avatar_url": "", "type": "user",
        "availability_status": "online", "thumbnail": "",
    }  # fmt: skip


def agent_bot_webhook_data(id: int = 2, name: str = "Order bot") -> Json:
    """app/models/agent_bot.rb ``webhook_data``."""
    return {"id": id, "name": name, "type": "agent_bot"}


def captain_assistant_webhook_data(id: int = 3, name: str = "Captain") -> Json:
    """enterprise/app/models/captain/assistant.rb ``webhook_data``."""
    return {
        "id": id, "name": name, "avatar_url": "", "description": "Answers shipping questions",
        "created_at": rails_time(T0), "type": "captain_assistant",
    }  # fmt: skip


# --- attachments and conversations ----------------------------------------------------------


def attachment_push_event_data(
    *, id: int = 900, message_id: int = 501, data_url: str, file_type: str = "image",
    file_size: int = 0, extension: str | None = None, account_id: int = 1,
) -> Json:  # fmt: skip
    """app/models/attachment.rb ``push_event_data`` (``base_data`` + ``file_metadata``):
    ``data_url`` is ``url_for(file)``, ActiveStorage's redirect URL ending in the file name."""
    return {
        "id": id, "message_id": message_id, "file_type": file_type, "account_id": account_id,
        "extension": extension, "data_url": data_url, "thumb_url": data_url,
        "file_size": file_size, "width": 64, "height": 64,
    }  # fmt: skip


ACCOUNT = {"id": 1, "name": "Shop"}  # app/models/account.rb ``webhook_data``
SOURCE_ID = "3b2a1c0d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"  # the contact inbox's


def conversation_webhook_data(
    *, display_id: int = 3, contact: Json | None = None, hmac_verified: bool | None = False,
    channel: str = "Channel::WebWidget", account_id: int = 1, inbox_id: int = 1,
    last_message: Json | None = None, account: Json | None = None,
) -> Json:  # fmt: skip
    """app/models/conversation.rb ``webhook_data``: ``push_data``
    (app/presenters/conversations/event_data_presenter.rb) merged with ``account:
    account.webhook_data`` (a new key: last) and ``messages: webhook_push_messages`` (the
    conversation's last chat message, ``message_webhook_push_event_data``, in ``messages``'
    place). ``id`` is the display id; ``meta.hmac_verified`` is the contact inbox's identity
    validation."""
    contact = contact if contact is not None else contact_push_event_data()
    created = int(T0.timestamp()) - 600
    return {
        "additional_attributes": {"browser": {"browser_name": "Firefox"}},
        "can_reply": True,
        "channel": channel,
        "contact_inbox": {
            "id": 40, "contact_id": contact["id"], "inbox_id": inbox_id,
            "source_id": SOURCE_ID,
            "created_at": rails_time(T0), "updated_at": rails_time(T0),
            "hmac_verified": bool(hmac_verified), "pubsub_token": "Xq7pRk2mZs9vTn4w",
        },
        "id": display_id,
        "inbox_id": inbox_id,
        "messages": [last_message] if last_message is not None else [],
        "labels": [],
        "meta": {
            "sender": contact, "assignee": None, "assignee_type": None, "team": None,
            "hmac_verified": hmac_verified,
        },
        "status": "open",
        "custom_attributes": {},
        "snoozed_until": None,
        "unread_count": 1,
        "first_reply_created_at": None,
        "priority": None,
        "waiting_since": created,
        "agent_last_seen_at": 0,
        "contact_last_seen_at": 0,
        "last_activity_at": int(T0.timestamp()),
        "timestamp": int(T0.timestamp()),
        "created_at": created,
        "updated_at": T0.timestamp() + 0.123456,
        "account": account if account is not None else ACCOUNT | {"id": account_id},
    }  # fmt: skip


# --- messages -----------------------------------------------------------------------------


def message_webhook_data(
    event: str = "message_created",
    *,
    id: int = 501,
    content: str | None = "Hello, is my order shipped?",
    message_type: str = "incoming",
    content_type: str = "text",
    content_attributes: Json | None = None,
    private: bool = False,
    sender: Json | None = None,
    conversation: Json | None = None,
    attachments: list[Json] | None = None,
    created_at: datetime = T0,
    account: Json | None = None,
) -> Json:
    """app/models/message.rb ``webhook_data`` merged with ``event`` (webhook_listener.rb).

    The conversation is ``Conversation#webhook_data`` as Chatwoot builds it once this message
    is saved: its ``messages`` hold the conversation's last chat message (``.chat``: neither
    private nor an activity), this one when it is such a message."""
    sender = sender if sender is not None else contact_webhook_data()
    conversation = conversation or conversation_webhook_data()
    if not private and message_type != "activity" and not conversation["messages"]:
        last = message_webhook_push_event_data(
            id=id, content=content, message_type=message_type, content_type=content_type,
            content_attributes=content_attributes or {}, private=private, sender=sender,
            display_id=conversation["id"], attachments=attachments, created_at=created_at,
        )  # fmt: skip
        conversation = conversation | {"messages": [last]}  # in place: the key order stays
    data: Json = {
        "account": account or ACCOUNT,
        "additional_attributes": {},
        "content_attributes": content_attributes or {},
        "content_type": content_type,
        "content": content,
        "conversation": conversation,
        "created_at": rails_time(created_at),
        "id": id,
        "inbox": {"id": 1, "name": "Website"},
        "message_type": message_type,
        "private": private,
        "sender": sender,
        "source_id": None,
    }
    if attachments:
        data["attachments"] = attachments
    return data | {"event": event}


# Message#message_type as its enum number, and Message#sender_type, by sender ``type``.
MESSAGE_TYPES = {"incoming": 0, "outgoing": 1, "activity": 2, "template": 3}
SENDER_TYPES = {None: "Contact", "contact": "Contact", "user": "User", "agent_bot": "AgentBot",
                "captain_assistant": "Captain::Assistant"}  # fmt: skip


def message_webhook_push_event_data(
    *, id: int, content: str | None, message_type: str, content_type: str = "text",
    content_attributes: Json | None = None, private: bool = False, sender: Json | None,
    display_id: int, attachments: list[Json] | None = None, created_at: datetime = T0,
    account_id: int = 1, inbox_id: int = 1,
) -> Json:  # fmt: skip
    """app/models/message.rb ``webhook_push_event_data``: ``push_event_data`` (the message's
    columns in table order, ``created_at`` in unix seconds, ``message_type`` as its number,
    ``conversation_id`` the display id; then ``conversation``, ``attachments`` and the
    sender's ``push_event_data``) with ``content`` normalised (plain text stays as it is).
    ``sender`` is the sender's ``webhook_data``, as ``message_webhook_data`` takes it."""
    data: Json = {
        "id": id, "content": content, "account_id": account_id, "inbox_id": inbox_id,
        "conversation_id": display_id,
        "message_type": MESSAGE_TYPES.get(message_type, message_type),
        "created_at": int(created_at.timestamp()), "updated_at": rails_time(created_at),
        "private": private, "status": "sent", "source_id": None, "content_type": content_type,
        "content_attributes": content_attributes or {},
        "sender_type": SENDER_TYPES.get(sender.get("type")) if sender else None,
        "sender_id": sender["id"] if sender else None, "external_source_ids": {},
        "additional_attributes": {}, "processed_message_content": content, "sentiment": {},
        "conversation": {
            "assignee_id": None, "unread_count": 1, "last_activity_at": int(T0.timestamp()),
            "contact_inbox": {"source_id": SOURCE_ID},
        },
    }  # fmt: skip
    if attachments:
        data["attachments"] = attachments
    if sender:
        data["sender"] = sender_push_event_data(sender)
    return data


def sender_push_event_data(webhook_data: Json) -> Json:
    """A sender's ``push_event_data``, from its ``webhook_data``: a contact's has a ``type``
    (app/models/contact.rb), an agent bot's an ``avatar_url`` (app/models/agent_bot.rb), a
    Captain assistant's is the same (enterprise/app/models/captain/assistant.rb)."""
    kind = webhook_data.get("type")
    if kind is None:
        keys = ("id", "name", "email", "identifier")
        return contact_push_event_data(**{k: webhook_data[k] for k in keys})
    if kind == "user":
        return user_push_event_data(webhook_data["id"], webhook_data["name"])
    if kind == "agent_bot":
        return {"id": webhook_data["id"], "name": webhook_data["name"], "avatar_url": "",
                "type": "agent_bot"}  # fmt: skip
    return webhook_data


def mail_serialized_data(
    *, subject: str, text: str, html: str, message_id: str = "7a1b2c3d@mail.example.com"
) -> Json:
    """app/presenters/mail_presenter.rb ``serialized_data`` (``content_attributes.email`` of a
    mail that reached an Email inbox)."""
    return {
        "bcc": None, "cc": None, "content_type": "multipart/alternative; boundary=b1",
        "date": "2026-11-24T09:00:00+00:00", "from": ["ann@example.com"],
        "html_content": {"full": html, "reply": html, "quoted": html},
        "in_reply_to": None, "message_id": message_id, "multipart": True,
        "number_of_attachments": 0, "references": [], "subject": subject,
        "text_content": {"full": text, "reply": text, "quoted": text},
        "to": ["support@shop.example"], "auto_reply": False,
    }  # fmt: skip


def message_push_event_data(
    *, id: int, display_id: int, content: str, message_type: int = 0, created_at: int,
    sender: Json | None, private: bool = False, attachments: list[Json] | None = None,
) -> Json:  # fmt: skip
    """app/views/api/v1/models/_message.json.jbuilder (the API's messages): ``message_type``
    as Chatwoot's enum number, ``created_at`` in unix seconds, senders' ``push_event_data``."""
    data: Json = {
        "id": id, "content": content, "inbox_id": 1, "conversation_id": display_id,
        "message_type": message_type, "content_type": "text", "status": "sent",
        "content_attributes": {}, "created_at": created_at, "private": private,
        "source_id": None,
    }  # fmt: skip
    if sender is not None:
        data["sender"] = sender
    if attachments:
        data["attachments"] = attachments
    return data


def api_conversation(
    *, display_id: int, contact: Json, last_activity_at: int, account_id: int = 1,
    hmac_verified: bool | None = False,
) -> Json:  # fmt: skip
    """app/views/api/v1/conversations/partials/_conversation.json.jbuilder."""
    return {
        "meta": {"sender": contact, "channel": "Channel::WebWidget",
                 "hmac_verified": hmac_verified},
        "id": display_id, "messages": [], "account_id": account_id,
        "uuid": f"5e0c-{display_id}", "additional_attributes": {}, "agent_last_seen_at": 0,
        "assignee_last_seen_at": 0, "can_reply": True, "contact_last_seen_at": 0,
        "custom_attributes": {}, "inbox_id": 1, "labels": [], "muted": False,
        "snoozed_until": None, "status": "resolved", "created_at": last_activity_at - 3600,
        "timestamp": last_activity_at, "first_reply_created_at": 0, "unread_count": 0,
        "last_non_activity_message": None, "last_activity_at": last_activity_at,
        "priority": None, "waiting_since": 0, "sla_policy_id": None,
    }  # fmt: skip
