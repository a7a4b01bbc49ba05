"""Reading conversations and messages, with purpose limitation applied by the caller's role."""

from __future__ import annotations

from beanie import PydanticObjectId

from store.blobs import read_blob
from store.documents import AttachmentRef, Conversation, Message
from store.errors import NotFound

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


async def message(*, message_id: PydanticObjectId, include_restricted: bool) -> Message:
    found = await Message.get(message_id)
    if found is None or (found.restricted and not include_restricted):
        raise NotFound(f"no message {message_id}")
    return found


async def raw_bytes(found: Message) -> bytes:
    if found.raw is None:
        raise NotFound("this message has no original bytes (chat messages have none)")
    return await read_blob(found.raw.sha256)


async def attachment(found: Message, n: int) -> tuple[AttachmentRef, bytes]:
    if not 0 <= n < len(found.attachments):
        raise NotFound(f"message {found.id} has no attachment {n}")
    ref = found.attachments[n]
    return ref, await read_blob(ref.sha256)
