"""Reading conversations and messages, with purpose limitation applied by the caller's role."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from beanie import PydanticObjectId

from store.blobs import read_blob
from store.chat_spool import CONVERSATION
from store.documents import (
    AttachmentRef,
    ChatClaim,
    Conversation,
    Message,
    SpoolEntry,
    SpoolKind,
)
from store.errors import NotFound
from store.spool import raw_of

# A conversation is shown with at most this many messages (the oldest first).
MAX_MESSAGES_SHOWN = 5000
CHAT_HAS_NO_RAW = "this message has no original bytes (chat messages have none)"


async def conversation_with_messages(
    *, conversation_id: PydanticObjectId, include_restricted: bool
) -> tuple[Conversation, list[Message]]:
    conversation = await Conversation.get(conversation_id)
    if conversation is None or (conversation.restricted and not include_restricted):
        raise NotFound(f"no conversation {conversation_id}")
    messages = (
        await Message.find(Message.conversation_id == conversation_id)
        .sort([("sent_at", 1), ("_id", 1)])  # type: ignore[list-item]
        .limit(MAX_MESSAGES_SHOWN)
        .to_list()
    )
    return conversation, messages


@dataclass(frozen=True)
class Filing:
    """An acknowledged delivery that waits in the spool to be filed: its id is already the
    message's, its bytes can be read, nothing else is known of it yet."""

    id: PydanticObjectId
    size: int
    received_at: datetime
    entry: SpoolEntry

    @property
    def chat(self) -> bool:
        """A message of a chat call (its bytes are the call's, not the message's own)."""
        return self.entry.kind is SpoolKind.CHAT


@dataclass(frozen=True)
class ConversationFiling:
    """A chat conversation a webhook's answer named, still in the spool with the call that
    started it, and the messages that call named for the first time."""

    id: PydanticObjectId
    received_at: datetime
    messages: list[Filing]


async def message(*, message_id: PydanticObjectId, include_restricted: bool) -> Message:
    found = await filed_message(message_id)
    if found is None or (found.restricted and not include_restricted):
        raise NotFound(f"no message {message_id}")
    return found


async def message_or_filing(
    *, message_id: PydanticObjectId, include_restricted: bool
) -> Message | Filing:
    """The message an acknowledged id names: filed, or still in the spool. Looked up again
    after the spool, because the filer stores a message before it forgets its entry."""
    found = await filed_message(message_id)
    if found is None:
        filing = await _spooled_message(message_id)
        if filing is not None:
            return filing
        found = await filed_message(message_id)
    if found is None or (found.restricted and not include_restricted):
        raise NotFound(f"no message {message_id}")
    return found


async def conversation_or_filing(
    *, conversation_id: PydanticObjectId, include_restricted: bool
) -> tuple[Conversation, list[Message]] | ConversationFiling:
    """The conversation an acknowledged id names: filed, or still in the spool (looked up
    again after the spool, as ``message_or_filing`` does)."""
    stored = await Conversation.get_pymongo_collection().find_one(
        {"_id": conversation_id}, {"_id": 1}
    )
    if stored is None:
        spooled = await _spooled_conversation(conversation_id)
        if spooled is not None:
            return spooled
    return await conversation_with_messages(
        conversation_id=conversation_id, include_restricted=include_restricted
    )


async def _spooled_conversation(conversation_id: PydanticObjectId) -> ConversationFiling | None:
    entry = await _claiming(conversation_id)
    if entry is None or not _is_conversation(_claim_of(entry, conversation_id)):
        return None
    named = [_filing(entry, c.id) for c in entry.chat_claims or () if not _is_conversation(c)]
    return ConversationFiling(id=conversation_id, received_at=entry.received_at, messages=named)


async def _spooled_message(message_id: PydanticObjectId) -> Filing | None:
    """A message in the spool: an email's entry (its id is the message's), or a chat call
    whose answer named the id for one of its messages."""
    entry = await SpoolEntry.get(message_id)
    if entry is not None and entry.kind is SpoolKind.EMAIL:
        return _filing(entry, message_id)
    entry = await _claiming(message_id)
    if entry is None or _is_conversation(_claim_of(entry, message_id)):
        return None
    return _filing(entry, message_id)


async def _claiming(ident: PydanticObjectId) -> SpoolEntry | None:
    # $type lets the planner use a partial index on chat_claims.id
    return await SpoolEntry.find_one({"chat_claims.id": {"$eq": ident, "$type": "objectId"}})


def _claim_of(entry: SpoolEntry, ident: PydanticObjectId) -> ChatClaim:
    return next(c for c in entry.chat_claims or () if c.id == ident)


def _is_conversation(claim: ChatClaim) -> bool:
    return claim.key.startswith(CONVERSATION)


def _filing(entry: SpoolEntry, ident: PydanticObjectId) -> Filing:
    return Filing(id=ident, size=entry.size, received_at=entry.received_at, entry=entry)


async def filed_message(message_id: PydanticObjectId) -> Message | None:
    """The message stored under ``message_id``, or the one whose retransmission SMTP
    acknowledged under it (its alias)."""
    found = await Message.get(message_id)
    if found is None:
        alias = {"alias_ids": {"$eq": message_id, "$type": "objectId"}}  # uses its index
        found = await Message.find_one(alias)
    return found


async def spooled_raw(filing: Filing) -> bytes:
    """The bytes of a delivery not filed yet, from its spool entry (or the blob it names)."""
    if filing.chat:  # the entry holds the webhook call, not an original of the message
        raise NotFound(CHAT_HAS_NO_RAW)
    return await raw_of(filing.entry)


async def raw_bytes(found: Message) -> bytes:
    if found.raw is None:
        raise NotFound(CHAT_HAS_NO_RAW)
    return await read_blob(found.raw.sha256)


async def attachment(found: Message, n: int) -> tuple[AttachmentRef, bytes]:
    if not 0 <= n < len(found.attachments):
        raise NotFound(f"message {found.id} has no attachment {n}")
    ref = found.attachments[n]
    return ref, await read_blob(ref.sha256)
