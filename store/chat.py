"""Filing chat messages: one conversation per (source, conversation id), idempotent messages."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from beanie import PydanticObjectId
from pymongo import ReturnDocument, UpdateOne
from pymongo.errors import BulkWriteError

from store.accounts import account_for_emails, ensure_account, link_terms
from store.blobs import NewAttachment, attachment_ref, put_blobs
from store.documents import (
    AttachmentRef,
    Author,
    AuthorRole,
    Channel,
    ChatClaim,
    Conversation,
    Direction,
    FetchRetry,
    Message,
    MessageVersion,
    UnfetchedAttachment,
)
from store.errors import is_transient
from store.messages import (
    DUPLICATE_KEY,
    by_dedup_key,
    cut_to_bytes,
    insert_unless_stored,
    stored_body,
)


@dataclass(frozen=True)
class AttachmentLink:
    """An attachment a chat message names by URL, to be fetched before filing (what the
    source said of it, which the fetched response may complete)."""

    url: str
    filename: str | None = None
    content_type: str | None = None
    size: int | None = None

    @property
    def origin(self) -> str | None:
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else None

    def unfetched(self, reason: str, retry: FetchRetry | None = None) -> UnfetchedAttachment:
        return UnfetchedAttachment(
            filename=self.filename, content_type=self.content_type, size=self.size,
            origin=self.origin, reason=reason, retry=retry,
        )  # fmt: skip


@dataclass(frozen=True)
class NewChatMessage:
    external_id: str
    author: Author
    direction: Direction
    text: str
    sent_at: datetime
    html: str | None = None
    attachments: Sequence[NewAttachment] = ()
    # What search indexes of the attachments' contents (extracted by ingest before filing).
    attachment_text: str = ""
    # The message's own subject (an email that reached the helpdesk); else the batch's.
    subject: str | None = None
    # Attachments by URL: fetched into ``attachments`` before filing, or kept as metadata.
    links: Sequence[AttachmentLink] = ()
    unfetched: Sequence[UnfetchedAttachment] = ()
    # The source deleted the message: the archive keeps its text and notes when it heard so.
    deleted: bool = False
    # The id an acknowledgement named for it (store.chat_spool): it is stored under that id.
    id: PydanticObjectId | None = None


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
    # The id an acknowledgement named for the conversation, if it is created by this batch.
    conversation_ref: PydanticObjectId | None = None


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
    """Store a batch durably; its known messages are duplicates."""
    [filed] = await file_chats([batch])
    return filed


async def file_chats(batches: Sequence[ChatBatch]) -> list[ChatFiled]:
    """Store batches durably, each message once, in a handful of round trips for all of them
    (the webhook groups concurrent calls into one ``file_chats``).

    Conversations come first and the messages' insert is the commit point, as for email. A
    message that appears more than once (in a batch, or in two batches) is new only the first
    time, in order.
    """
    conversations = await _conversations_for(batches)
    keys = [[chat_dedup_key(b.source, m.external_id) for m in b.messages] for b in batches]
    known = await by_dedup_key([k for ks in keys for k in ks])
    unique: dict[str, tuple[ChatBatch, Conversation, NewChatMessage]] = {}
    for batch, conversation, batch_keys in zip(batches, conversations, keys, strict=True):
        for key, new in zip(batch_keys, batch.messages, strict=True):
            # The copy that carries a named id is the one stored (an edit of it may come
            # first in the list when two instances spooled them).
            if key not in known and (key not in unique or (new.id and not unique[key][2].id)):
                unique[key] = (batch, conversation, new)
    fresh = await _messages(unique)
    raced = await insert_unless_stored(fresh)
    known |= await by_dedup_key(sorted(raced))
    # An edit filed in the same group as the message it edits applies to it.
    known |= {m.dedup_key: m for m in fresh if m.dedup_key not in raced}
    for batch in batches:
        if batch.edits:
            await _apply_edits(batch, known)
    inserted = {m.dedup_key: m for m in fresh if m.dedup_key not in raced}
    await _record_in_conversations(list(inserted.values()))

    results, reported = [], set()
    for batch, conversation, batch_keys in zip(batches, conversations, keys, strict=True):
        assert conversation.id is not None
        filed = ChatFiled(conversation.id, conversation.account_id)
        for key, new in zip(batch_keys, batch.messages, strict=True):
            is_new = key in inserted and key not in reported
            stored = inserted[key] if key in inserted else known[key]
            assert stored.id is not None
            filed.messages.append(ChatFiledMessage(stored.id, new.external_id, not is_new))
            reported.add(key)
        results.append(filed)
    return results


async def file_chats_each(batches: Sequence[ChatBatch]) -> list[ChatFiled | Exception]:
    """``file_chats`` for a group of unrelated calls: if the group fails for a reason other
    than the database, each batch is filed alone, so that one bad batch fails alone."""
    try:
        return list(await file_chats(batches))
    except Exception as exc:
        if is_transient(exc) or len(batches) == 1:
            raise
    results: list[ChatFiled | Exception] = []
    for batch in batches:
        try:
            results.extend(await file_chats([batch]))
        except Exception as exc:
            if is_transient(exc):
                raise
            results.append(exc)
    return results


async def _messages(
    unique: dict[str, tuple[ChatBatch, Conversation, NewChatMessage]],
) -> list[Message]:
    datas = [a.data for _, _, new in unique.values() for a in new.attachments]
    refs = iter(await put_blobs(datas))
    messages = []
    for key, (batch, conversation, new) in unique.items():
        attachments = [attachment_ref(a, next(refs)) for a in new.attachments]
        messages.append(_message(batch, conversation, new, key, attachments))
    return messages


def _message(
    batch: ChatBatch,
    conversation: Conversation,
    new: NewChatMessage,
    key: str,
    attachments: list[AttachmentRef],
) -> Message:
    subject = new.subject or batch.subject
    unfetched = [*new.unfetched, *(k.unfetched("not fetched") for k in new.links)]
    return Message(
        id=new.id or PydanticObjectId(),
        conversation_id=conversation.id,
        account_id=conversation.account_id,
        restricted=conversation.restricted,
        channel=Channel.CHAT,
        direction=new.direction,
        source=batch.source,
        dedup_key=key,
        external_id=new.external_id,
        subject=subject,
        author=new.author,
        participants=[new.author.email] if new.author.email else [],
        sent_at=new.sent_at,
        # When the company first had it: its time in the chat, unless that claims to be later
        # than its arrival (a backfill of last year's chats keeps last year's clock).
        collected_at=min(new.sent_at, batch.received_at),
        archived_at=batch.received_at,
        **stored_body(subject=subject, text=new.text, html=new.html),
        attachments=attachments,
        has_attachments=bool(attachments),
        attachment_text=new.attachment_text,
        deleted_at_source=batch.received_at if new.deleted else None,
        # Links nobody fetched (a caller that skipped the fetch step) are kept as what they are.
        unfetched_attachments=unfetched,
        refetch_at=refetch_at(unfetched),
    )


def refetch_at(unfetched: Sequence[UnfetchedAttachment]) -> datetime | None:
    """When the first of a message's unfetched attachments is to be fetched again."""
    return min((u.retry.next_at for u in unfetched if u.retry is not None), default=None)


# An edited message keeps its first text and the latest ones before the current one, each
# cut in bytes: however often and however large the edits, the message stays far below
# MongoDB's 16 MiB document (2 x MAX_BODY_BYTES of current body, 5 MiB of history at most).
MAX_HISTORY = 10
MAX_VERSION_BYTES = 256 * 1024


async def _apply_edits(batch: ChatBatch, known: dict[str, Message]) -> None:
    for new in batch.messages:
        current = known.get(chat_dedup_key(batch.source, new.external_id))
        if current is None or (change := _edit(current, new, batch.received_at)) is None:
            continue
        await Message.get_pymongo_collection().update_one({"_id": current.id}, change)


def _edit(
    current: Message, new: NewChatMessage, at: datetime
) -> dict[str, Any] | list[dict[str, Any]] | None:
    """The update an edit makes to a stored message; None when it changes nothing there (an
    update of its delivery status, say, which the archive does not keep)."""
    if new.deleted:
        # The source replaces a deleted message's text with a notice: the archive keeps what
        # was said (retention, not the source, decides when it goes) and notes the deletion.
        return None if current.deleted_at_source else {"$set": {"deleted_at_source": at}}
    body = stored_body(subject=current.subject, text=new.text, html=new.html)
    if (current.text, current.html) == (body["text"], body["html"]):
        return None
    previous = MessageVersion(
        text=cut_to_bytes(current.text, MAX_VERSION_BYTES),
        html=cut_to_bytes(current.html, MAX_VERSION_BYTES) if current.html else current.html,
        replaced_at=at,
    )
    # A pipeline update: values are $literal, so that a text such as "$5 off" stays text.
    kept = {name: {"$literal": value} for name, value in body.items()}
    return [{"$set": kept | {"history": _history_with(previous)}}]


def _history_with(previous: MessageVersion) -> dict[str, Any]:
    """The stored history with ``previous`` appended, keeping the first version (what was
    said first) and the latest ones, MAX_HISTORY in all."""
    history = {"$ifNull": ["$history", []]}
    rest = {"$slice": [history, 1, {"$max": [{"$size": history}, 1]}]}
    later = {"$concatArrays": [rest, [{"$literal": previous.model_dump()}]]}
    return {"$concatArrays": [{"$slice": [history, 1]}, {"$slice": [later, 1 - MAX_HISTORY]}]}


async def _conversations_for(batches: Sequence[ChatBatch]) -> list[Conversation]:
    """The conversation of each batch's (source, id), created on first sight (one unordered
    bulk upsert for all) and linked to its account."""
    by_key: dict[tuple[str, str], list[ChatBatch]] = {}
    for batch in batches:
        by_key.setdefault((batch.source, batch.conversation_id), []).append(batch)
    accounts = await _accounts_for(batches)
    upserts = []
    for (source, external_id), group in by_key.items():
        customers = sorted({b.customer_email for b in group if b.customer_email})
        first_sent = min(
            (m.sent_at for b in group for m in b.messages), default=group[0].received_at
        )
        named = next((b.conversation_ref for b in group if b.conversation_ref), None)
        upserts.append(UpdateOne(
            # $type lets the planner use the partial unique index (source, external_id): a
            # bare equality does not imply the index's filter, and would scan the collection
            {"source": source, "external_id": {"$eq": external_id, "$type": "string"}},
            {
                "$setOnInsert": {
                    "channel": Channel.CHAT.value, "subject": group[0].subject,
                    "message_count": 0, "first_message_at": first_sent,
                    "last_message_at": first_sent, "collected_at": group[0].received_at,
                    "participants": [], "restricted": False, "guard": 0,
                    **({"_id": named} if named else {}),
                },
                "$addToSet": {"customer_emails": {"$each": customers}},
            },
            upsert=True,
        ))  # fmt: skip
    collection = Conversation.get_pymongo_collection()
    try:
        await collection.bulk_write(upserts, ordered=False)
    except BulkWriteError as exc:  # two first deliveries raced: the upserts now match
        if any(e.get("code") != DUPLICATE_KEY for e in exc.details.get("writeErrors", [])):
            raise
        await collection.bulk_write(upserts, ordered=False)
    found = await Conversation.find(
        {"source": {"$in": sorted({s for s, _ in by_key})},
         # $type lets the planner use the (partial) source_external_id index
         "external_id": {"$in": sorted({i for _, i in by_key}), "$type": "string"}}
    ).to_list()  # fmt: skip
    conversations = {(c.source, c.external_id): c for c in found}
    for key, group in by_key.items():
        account_id = next((accounts[id(b)] for b in group if id(b) in accounts), None)
        if conversations[key].account_id is None and account_id is not None:
            conversations[key] = await _link(conversations[key], account_id)
    return [conversations[(b.source, b.conversation_id)] for b in batches]


async def _accounts_for(batches: Sequence[ChatBatch]) -> dict[int, str]:
    """The account of each batch (by ``id()``) that names one or whose customer has one."""
    found: dict[int, str] = {}
    for account_id in sorted({b.account_id for b in batches if b.account_id}):
        await ensure_account(account_id=account_id)
    for batch in batches:
        if batch.account_id is not None:
            found[id(batch)] = batch.account_id
        elif batch.customer_email:
            account = await account_for_emails([batch.customer_email])
            if account is not None:
                found[id(batch)] = account.id
    return found


async def _link(conversation: Conversation, account_id: str) -> Conversation:
    """Link an unlinked conversation to ``account_id``, unless another call linked it first:
    the conversation keeps the account it has, and its messages take that one's terms."""
    terms = (await link_terms([account_id]))[account_id]
    stored = await Conversation.get_pymongo_collection().find_one_and_update(
        {"_id": conversation.id, "account_id": None},
        {"$set": {"account_id": account_id, "restricted": terms["restricted"]}},
        return_document=ReturnDocument.AFTER,
    ) or await Conversation.get_pymongo_collection().find_one({"_id": conversation.id})
    assert stored is not None
    account_id = stored["account_id"]
    terms = (await link_terms([account_id]))[account_id]
    await Message.get_pymongo_collection().update_many(
        {"conversation_id": conversation.id, "account_id": None},
        {"$set": {"account_id": account_id, **terms}},
    )
    conversation.account_id = account_id
    conversation.restricted = bool(terms["restricted"])
    return conversation


async def _record_in_conversations(inserted: list[Message]) -> None:
    by_conversation: dict[PydanticObjectId, list[Message]] = {}
    for message in inserted:
        by_conversation.setdefault(message.conversation_id, []).append(message)
    if not by_conversation:
        return
    await Conversation.get_pymongo_collection().bulk_write(
        [
            UpdateOne(
                {"_id": conversation_id},
                {
                    "$inc": {"message_count": len(messages)},
                    "$min": {"first_message_at": min(m.sent_at for m in messages)},
                    "$max": {"last_message_at": max(m.sent_at for m in messages)},
                    "$addToSet": {"participants": {
                        "$each": sorted({p for m in messages for p in m.participants})}},
                },
            )
            for conversation_id, messages in by_conversation.items()
        ],
        ordered=False,
    )  # fmt: skip


async def file_unreadable_call(
    *, source: str, raw: bytes, received_at: datetime, claims: Sequence[ChatClaim], note: str
) -> int:
    """A spooled webhook call that could not be filed after its attempts (its source is gone,
    or it no longer parses): each message id its acknowledgement named is filed as a message
    of its own, empty but for the error and the call's body as an attachment, so that the id
    resolves and the content falls under holds and the maximum age like any other. Returns
    how many messages were filed."""
    named = [c for c in claims if c.key.startswith("chat:")]
    if not named:
        return 0  # its acknowledgement named only stored messages: they resolve already
    conversation = await _unreadable_conversation(source, claims, received_at)
    [body] = await put_blobs([raw])
    attachment = AttachmentRef(sha256=body.sha256, size=body.size, filename="webhook-call.json",
                               content_type="application/json")  # fmt: skip
    messages = [
        Message(
            id=claim.id, conversation_id=conversation, channel=Channel.CHAT,
            direction=Direction.INBOUND, source=source, dedup_key=claim.key,
            external_id=claim.key.split(":", 2)[-1], author=Author(role=AuthorRole.SYSTEM),
            sent_at=received_at, collected_at=received_at, archived_at=received_at,
            attachments=[attachment], has_attachments=True, parse_error=note,
        )
        for claim in named
    ]  # fmt: skip
    raced = await insert_unless_stored(messages)
    await _record_in_conversations([m for m in messages if m.dedup_key not in raced])
    return len(messages) - len(raced)


async def _unreadable_conversation(
    source: str, claims: Sequence[ChatClaim], received_at: datetime
) -> PydanticObjectId:
    """The conversation an unreadable call's messages go to: the one its acknowledgement
    named, else a new one."""
    claim = next((c for c in claims if c.key.startswith("conversation:")), None)
    ident = claim.id if claim is not None else PydanticObjectId()
    await Conversation.get_pymongo_collection().update_one(
        {"_id": ident},
        {"$setOnInsert": {
            "channel": Channel.CHAT.value, "source": source, "message_count": 0,
            "first_message_at": received_at, "last_message_at": received_at,
            "collected_at": received_at, "participants": [], "customer_emails": [],
            "restricted": False, "guard": 0,
        }},
        upsert=True,
    )  # fmt: skip
    return ident
