"""Reading conversations and messages, with purpose limitation applied by the caller's role."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from beanie import PydanticObjectId

from store.blobs import read_blob
from store.documents import AttachmentRef, Conversation, Message, SpoolEntry
from store.errors import NotFound
from store.spool import raw_of

# A conversation is shown with at most this many messages (the oldest first).
MAX_MESSAGES_SHOWN = 5000


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
        entry = await SpoolEntry.get(message_id)
        if entry is not None:
            assert entry.id is not None
            return Filing(id=entry.id, size=entry.size, received_at=entry.received_at,
                          entry=entry)  # fmt: skip
        found = await filed_message(message_id)
    if found is None or (found.restricted and not include_restricted):
        raise NotFound(f"no message {message_id}")
    return found


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
    return await raw_of(filing.entry)


async def raw_bytes(found: Message) -> bytes:
    if found.raw is None:
        raise NotFound("this message has no original bytes (chat messages have none)")
    return await read_blob(found.raw.sha256)


async def attachment(found: Message, n: int) -> tuple[AttachmentRef, bytes]:
    if not 0 <= n < len(found.attachments):
        raise NotFound(f"message {found.id} has no attachment {n}")
    ref = found.attachments[n]
    return ref, await read_blob(ref.sha256)
