"""Filing messages: dedup, blobs, threading, account linking, in an order that loses nothing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from beanie import PydanticObjectId
from pymongo.errors import DuplicateKeyError

from store.accounts import account_for_emails, ensure_account
from store.blobs import NewAttachment, put_attachment, put_blob
from store.documents import (
    MAX_BODY_CHARS,
    Account,
    AccountStatus,
    Address,
    Author,
    Channel,
    Conversation,
    Direction,
    Envelope,
    Message,
)
from store.search import terms_of


@dataclass(frozen=True)
class NewEmail:
    """An email as ingest understood it; the raw bytes are the truth, the rest is derived."""

    raw: bytes
    dedup_key: str
    received_at: datetime
    sent_at: datetime
    direction: Direction
    author: Author
    envelope: Envelope | None = None
    source: str = "smtp"
    message_id: str | None = None
    in_reply_to: str | None = None
    references: Sequence[str] = ()
    subject: str | None = None
    sender: Address | None = None
    to: Sequence[Address] = ()
    cc: Sequence[Address] = ()
    participants: Sequence[str] = ()
    customer_emails: Sequence[str] = ()
    text: str = ""
    html: str | None = None
    attachments: Sequence[NewAttachment] = ()
    parse_error: str | None = None
    # The account this message is known to belong to (an import for one account); otherwise
    # the account is found by the customer's addresses.
    account_id: str | None = None

    def for_account(self, account_id: str) -> NewEmail:
        return replace(self, account_id=account_id)

    def thread_keys(self) -> list[str]:
        """Message-IDs whose conversation this message joins, most telling first: itself (a
        retransmission), its parent, then its references from the nearest ancestor back."""
        keys = [self.message_id, self.in_reply_to, *reversed(self.references)]
        return list(dict.fromkeys(k for k in keys if k))


def stored_body(*, subject: str | None, text: str, html: str | None) -> dict[str, Any]:
    """The body fields of a message document, the same for every channel and for edits:
    text and HTML cut to MAX_BODY_CHARS (the raw copy keeps everything), whether they were
    cut, and the search terms of the subject and the kept text."""
    kept = text[:MAX_BODY_CHARS]
    return {
        "text": kept,
        "html": html[:MAX_BODY_CHARS] if html else html,
        "body_truncated": max(len(text), len(html or "")) > MAX_BODY_CHARS,
        "search_terms": terms_of(subject, kept),
    }


@dataclass(frozen=True)
class Filed:
    message_id: PydanticObjectId
    conversation_id: PydanticObjectId
    account_id: str | None
    duplicate: bool = False


async def file_email(email: NewEmail) -> Filed:
    """Store one email durably, once. Returns what was stored, or the earlier copy of it.

    Blobs come first and the message insert is the commit point: a crash before it leaves at
    worst unreferenced blobs (housekeeping removes them) and the sender, never acknowledged,
    retries; the unique ``dedup_key`` makes a retry of a stored message a no-op.
    """
    earlier = await Message.find_one(Message.dedup_key == email.dedup_key)
    if earlier is not None:
        return _filed(earlier, duplicate=True)

    raw = await put_blob(email.raw)
    attachments = [await put_attachment(a) for a in email.attachments]
    conversation = await _conversation_for(email)
    message = Message(
        conversation_id=conversation.id,
        account_id=conversation.account_id,
        restricted=conversation.restricted,
        channel=Channel.EMAIL,
        direction=email.direction,
        source=email.source,
        dedup_key=email.dedup_key,
        message_id_header=email.message_id,
        in_reply_to=email.in_reply_to,
        references=list(email.references),
        subject=email.subject,
        author=email.author,
        sender=email.sender,
        to=list(email.to),
        cc=list(email.cc),
        participants=list(email.participants),
        sent_at=email.sent_at,
        collected_at=email.received_at,
        **stored_body(subject=email.subject, text=email.text, html=email.html),
        attachments=attachments,
        has_attachments=bool(attachments),
        raw=raw,
        envelope=email.envelope,
        parse_error=email.parse_error,
    )
    try:
        await message.insert()
    except DuplicateKeyError:
        # The same message arrived on another connection a moment ago.
        earlier = await Message.find_one(Message.dedup_key == email.dedup_key)
        if earlier is None:
            raise
        return _filed(earlier, duplicate=True)
    await _record_in_conversation(conversation, message, email.customer_emails)
    return _filed(message, duplicate=False)


def _filed(message: Message, *, duplicate: bool) -> Filed:
    assert message.id is not None
    return Filed(
        message_id=message.id,
        conversation_id=message.conversation_id,
        account_id=message.account_id,
        duplicate=duplicate,
    )


async def _conversation_for(email: NewEmail) -> Conversation:
    """The thread this email belongs to, or a new one linked to the customer's account."""
    keys = email.thread_keys()
    if keys:
        related = await Message.find({"message_id_header": {"$in": keys}}).to_list()
        by_key = {m.message_id_header: m.conversation_id for m in related}
        for key in keys:
            if key in by_key:
                conversation = await Conversation.get(by_key[key])
                if conversation is not None:
                    return conversation
    if email.account_id is None:
        account = await account_for_emails(email.customer_emails)
    else:
        await ensure_account(account_id=email.account_id)
        account = await Account.get(email.account_id)
    conversation = Conversation(
        channel=Channel.EMAIL,
        account_id=account.id if account else None,
        restricted=account is not None and account.status is AccountStatus.DELETED,
        subject=email.subject,
        customer_emails=sorted(set(email.customer_emails)),
        participants=sorted(set(email.participants)),
        first_message_at=email.sent_at,
        last_message_at=email.sent_at,
        collected_at=email.received_at,
    )
    await conversation.insert()
    return conversation


async def _record_in_conversation(
    conversation: Conversation, message: Message, customer_emails: Sequence[str]
) -> None:
    await Conversation.get_pymongo_collection().update_one(
        {"_id": conversation.id},
        {
            "$inc": {"message_count": 1},
            "$min": {"first_message_at": message.sent_at},
            "$max": {"last_message_at": message.sent_at},
            "$addToSet": {
                "participants": {"$each": list(message.participants)},
                "customer_emails": {"$each": list(customer_emails)},
            },
        },
    )
