"""Filing chat messages: one conversation per (source, conversation id), idempotent messages."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from beanie import PydanticObjectId
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from store.accounts import account_for_emails, ensure_account, is_deleted
from store.blobs import NewAttachment, put_attachment
from store.documents import (
    Author,
    Channel,
    Conversation,
    Direction,
    Message,
    MessageVersion,
)
from store.messages import by_dedup_key, insert_unless_stored, stored_body


@dataclass(frozen=True)
class NewChatMessage:
    external_id: str
    author: Author
    direction: Direction
    text: str
    sent_at: datetime
    html: str | None = None
    attachments: Sequence[NewAttachment] = ()


@dataclass(frozen=True)
class ChatBatch:
    """Messages of one chat conversation, as one webhook call delivered them."""

    source: str
    conversation_id: str
    received_at: datetime
    messages: Sequence[NewChatMessage]
    account_id: str | None = None
    customer_email: str | None = None
    subject: str | None = None
    # message_updated semantics: a message already stored takes the new text, and its
    # previous text goes to its history. Otherwise a known message is a duplicate.
    edits: bool = False


@dataclass(frozen=True)
class ChatFiledMessage:
    id: PydanticObjectId
    external_id: str
    duplicate: bool


@dataclass(frozen=True)
class ChatFiled:
    conversation_id: PydanticObjectId
    account_id: str | None
    messages: list[ChatFiledMessage] = field(default_factory=list)

    @property
    def stored_any(self) -> bool:
        return any(not m.duplicate for m in self.messages)


def chat_dedup_key(source: str, external_id: str) -> str:
    return f"chat:{source}:{external_id}"


async def file_chat(batch: ChatBatch) -> ChatFiled:
    """Store a batch durably in one write of its new messages; known ones are duplicates.

    The conversation comes first and the messages' insert is the commit point, as for email.
    """
    conversation = await _conversation_for(batch)
    assert conversation.id is not None
    keys = [chat_dedup_key(batch.source, m.external_id) for m in batch.messages]
    known = await by_dedup_key(keys)
    unique: dict[str, NewChatMessage] = {}
    for key, new in zip(keys, batch.messages, strict=True):
        if key not in known:
            unique.setdefault(key, new)  # a message repeated within the batch is stored once
    fresh = [await _message(batch, conversation, new, key) for key, new in unique.items()]
    raced = await insert_unless_stored(fresh)
    known |= await by_dedup_key(sorted(raced))
    if batch.edits:
        await _apply_edits(batch, known)
    inserted = {m.dedup_key: m for m in fresh if m.dedup_key not in raced}
    await _record_in_conversation(conversation, list(inserted.values()))

    results, reported = [], set()
    for key, new in zip(keys, batch.messages, strict=True):
        is_new = key in inserted and key not in reported
        stored = inserted[key] if key in inserted else known[key]
        assert stored.id is not None
        results.append(ChatFiledMessage(stored.id, new.external_id, duplicate=not is_new))
        reported.add(key)
    return ChatFiled(conversation.id, conversation.account_id, results)


async def _message(
    batch: ChatBatch, conversation: Conversation, new: NewChatMessage, key: str
) -> Message:
    attachments = [await put_attachment(a) for a in new.attachments]
    return Message(
        id=PydanticObjectId(),
        conversation_id=conversation.id,
        account_id=conversation.account_id,
        restricted=conversation.restricted,
        channel=Channel.CHAT,
        direction=new.direction,
        source=batch.source,
        dedup_key=key,
        external_id=new.external_id,
        subject=batch.subject,
        author=new.author,
        participants=[new.author.email] if new.author.email else [],
        sent_at=new.sent_at,
        collected_at=batch.received_at,
        **stored_body(subject=batch.subject, text=new.text, html=new.html),
        attachments=attachments,
        has_attachments=bool(attachments),
    )


async def _apply_edits(batch: ChatBatch, known: dict[str, Message]) -> None:
    for new in batch.messages:
        current = known.get(chat_dedup_key(batch.source, new.external_id))
        if current is None or (current.text, current.html) == (new.text, new.html):
            continue
        previous = MessageVersion(
            text=current.text, html=current.html, replaced_at=batch.received_at
        )
        await Message.get_pymongo_collection().update_one(
            {"_id": current.id},
            {
                "$set": stored_body(subject=current.subject, text=new.text, html=new.html),
                "$push": {"history": previous.model_dump()},
            },
        )


async def _conversation_for(batch: ChatBatch) -> Conversation:
    """The conversation of (source, id), created on first sight and linked to its account."""
    account_id = batch.account_id
    if account_id is not None:
        await ensure_account(account_id=account_id)
    elif batch.customer_email:
        account = await account_for_emails([batch.customer_email])
        account_id = account.id if account else None
    customers = [batch.customer_email] if batch.customer_email else []
    first_sent = min((m.sent_at for m in batch.messages), default=batch.received_at)
    collection = Conversation.get_pymongo_collection()
    query = {"source": batch.source, "external_id": batch.conversation_id}
    update = {
        "$setOnInsert": {
            "channel": Channel.CHAT.value,
            "subject": batch.subject,
            "message_count": 0,
            "first_message_at": first_sent,
            "last_message_at": first_sent,
            "collected_at": batch.received_at,
            "participants": [],
        },
        "$addToSet": {"customer_emails": {"$each": customers}},
    }
    try:
        document = await collection.find_one_and_update(
            query, update, upsert=True, return_document=ReturnDocument.AFTER
        )
    except DuplicateKeyError:  # two first deliveries raced and the other one inserted it
        document = await collection.find_one_and_update(
            query, update, return_document=ReturnDocument.AFTER
        )
    conversation: Conversation = Conversation.model_validate(document)
    if conversation.account_id is None and account_id is not None:
        conversation = await _link(conversation, account_id)
    return conversation


async def _link(conversation: Conversation, account_id: str) -> Conversation:
    link = {"account_id": account_id, "restricted": await is_deleted(account_id)}
    await Conversation.get_pymongo_collection().update_one(
        {"_id": conversation.id, "account_id": None}, {"$set": link}
    )
    await Message.get_pymongo_collection().update_many(
        {"conversation_id": conversation.id, "account_id": None}, {"$set": link}
    )
    conversation.account_id = account_id
    conversation.restricted = bool(link["restricted"])
    return conversation


async def _record_in_conversation(conversation: Conversation, inserted: list[Message]) -> None:
    if not inserted:
        return
    participants = sorted({p for m in inserted for p in m.participants})
    await Conversation.get_pymongo_collection().update_one(
        {"_id": conversation.id},
        {
            "$inc": {"message_count": len(inserted)},
            "$min": {"first_message_at": min(m.sent_at for m in inserted)},
            "$max": {"last_message_at": max(m.sent_at for m in inserted)},
            "$addToSet": {"participants": {"$each": participants}},
        },
    )
