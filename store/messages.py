"""Filing messages: dedup, blobs, threading, account linking, in an order that loses nothing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, TypeVar

from beanie import PydanticObjectId
from pymongo import UpdateOne
from pymongo.errors import BulkWriteError

from store.accounts import (
    apply_link_terms,
    best_account,
    ensure_account,
    normalise_email,
    settle_links,
)
from store.blobs import NewAttachment, attachment_ref, put_blobs
from store.documents import (
    MAX_BODY_BYTES,
    Account,
    AccountStatus,
    Address,
    AttachmentRef,
    Author,
    BlobRef,
    Channel,
    Conversation,
    Direction,
    Envelope,
    Message,
)
from store.subjects import address_hashes

DUPLICATE_KEY = 11000
_T = TypeVar("_T")

# Header-derived fields are bounded so that any mail under SMTP's 25 MiB makes a document well
# under MongoDB's 16 MiB (two 2 MiB bodies, 256 KiB of attachment text and these lists, all in
# 4-byte characters, come to under 10 MiB); the raw copy keeps everything that is cut.
MAX_ADDRESSES = 200  # of To, and of Cc
MAX_REFERENCES = 50  # the nearest ancestors are the last ones
MAX_ATTACHMENTS = 1000
MAX_HEADER_CHARS = 998  # the longest line RFC 5322 allows: subject, Message-IDs
MAX_NAME_CHARS = 255  # display names, addresses, file names, content types
# A retransmission's acknowledged id is kept on the stored message up to this many times (a
# relay stuck in a loop is stopped by its hop count long before).
MAX_ALIASES = 10_000


@dataclass(frozen=True)
class NewEmail:
    """An email as ingest understood it; the raw bytes are the truth, the rest is derived."""

    # None only for a delivery whose bytes were lost before it could be filed (filed as a
    # record of that loss, so that its acknowledged id still answers).
    raw: bytes | None
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
    # What search indexes of the attachments' contents (extracted by ingest, bounded).
    attachment_text: str = ""
    parse_error: str | None = None
    # The account this message is known to belong to (an import for one account); otherwise
    # the account is found by the customer's addresses.
    account_id: str | None = None
    # The id the stored message takes (the spool entry's, so that the SMTP reply names it).
    id: PydanticObjectId | None = None
    # When the company first received it (its earliest Received or Date header), if earlier
    # than ``received_at``, the archive's own arrival time: the maximum age counts from it.
    collected_at: datetime | None = None

    def for_account(self, account_id: str) -> NewEmail:
        return replace(self, account_id=account_id)

    def with_id(self, message_id: PydanticObjectId) -> NewEmail:
        return replace(self, id=message_id)

    def thread_keys(self) -> list[str]:
        """Message-IDs whose conversation this message joins, most telling first: its parent,
        then its references from the nearest ancestor back. Not its own Message-ID: another
        message that carries it too is someone else's mail (a retransmission is not filed)."""
        keys = [self.in_reply_to, *reversed(self.references)]
        return list(dict.fromkeys(k for k in keys if k))

    @property
    def first_received_at(self) -> datetime:
        """What the maximum age counts from: never later than the archive's arrival time."""
        return min(self.collected_at or self.received_at, self.received_at)


def bounded(email: NewEmail) -> NewEmail:
    """``email`` with its header-derived fields cut to what one document can hold; what was
    cut is noted in ``parse_error`` (the raw copy keeps it all)."""
    cut: list[str] = []

    def first(items: Sequence[_T], limit: int, what: str) -> list[_T]:
        if len(items) > limit:
            cut.append(f"{what}: {len(items)} kept {limit}")
        return list(items[:limit])

    def address(a: Address) -> Address:
        return Address(email=_short(a.email, MAX_NAME_CHARS), name=_short(a.name, MAX_NAME_CHARS))

    references = first(email.references[::-1], MAX_REFERENCES, "References")[::-1]
    attachments = [
        replace(a, filename=_short(a.filename, MAX_NAME_CHARS),
                content_type=_short(a.content_type, MAX_NAME_CHARS) or "application/octet-stream",
                content_id=_short(a.content_id, MAX_NAME_CHARS))
        for a in first(email.attachments, MAX_ATTACHMENTS, "attachments")
    ]  # fmt: skip
    to = [address(a) for a in first(email.to, MAX_ADDRESSES, "To")]
    cc = [address(a) for a in first(email.cc, MAX_ADDRESSES, "Cc")]
    kept = {a.email for a in (email.sender, *to, *cc) if a is not None and a.email}
    return replace(
        email,
        message_id=_short(email.message_id, MAX_HEADER_CHARS),
        in_reply_to=_short(email.in_reply_to, MAX_HEADER_CHARS),
        references=[r[:MAX_HEADER_CHARS] for r in references],
        subject=_short(email.subject, MAX_HEADER_CHARS),
        sender=address(email.sender) if email.sender is not None else None,
        to=to,
        cc=cc,
        participants=_addresses_of(email.participants, kept),
        customer_emails=_addresses_of(email.customer_emails, kept),
        author=email.author.model_copy(
            update={
                "name": _short(email.author.name, MAX_NAME_CHARS),
                "email": _short(email.author.email, MAX_NAME_CHARS),
            }
        ),
        attachments=attachments,
        parse_error="; ".join(filter(None, [email.parse_error, *cut])) or None,
    )


def _addresses_of(addresses: Sequence[str], kept: set[str]) -> list[str]:
    """``addresses`` (participants, customers) as they are if there are not too many, else
    those of the addresses kept in sender, To and Cc."""
    if len(addresses) > 2 * MAX_ADDRESSES + 1:
        addresses = [a for a in addresses if a in kept]
    return [a[:MAX_NAME_CHARS] for a in addresses]


def _short(value: str | None, limit: int) -> str | None:
    return value[:limit] if value is not None else None


def cut_to_bytes(text: str, limit: int) -> str:
    """The longest prefix of ``text`` whose UTF-8 takes at most ``limit`` bytes."""
    if len(text) * 4 <= limit:  # no character takes more than 4 bytes
        return text
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", "ignore")  # drops a character cut in the middle


def stored_body(*, subject: str | None, text: str, html: str | None) -> dict[str, Any]:
    """The body fields of a message document, the same for every channel and for edits:
    text and HTML cut to MAX_BODY_BYTES of UTF-8 each (the raw copy keeps everything),
    and whether they were cut."""
    kept = cut_to_bytes(text, MAX_BODY_BYTES)
    kept_html = cut_to_bytes(html, MAX_BODY_BYTES) if html else html
    return {
        "text": kept,
        "html": kept_html,
        "body_truncated": kept != text or kept_html != html,
    }


@dataclass(frozen=True)
class Filed:
    message_id: PydanticObjectId
    conversation_id: PydanticObjectId
    account_id: str | None
    duplicate: bool = False


async def file_email(email: NewEmail) -> Filed:
    """Store one email durably, once. Returns what was stored, or the earlier copy of it."""
    [filed] = await file_emails([email])
    return filed


async def file_emails(emails: Sequence[NewEmail]) -> list[Filed]:
    """Store emails durably, each once, in a handful of round trips for the whole batch.

    Blobs come first, then new conversations, and the messages' insert is the commit point: a
    crash before it leaves at worst unreferenced blobs or an empty conversation (housekeeping
    removes both) and nothing acknowledged; the unique ``dedup_key`` (the content) makes filing
    a stored message again a no-op that answers with the earlier copy, and keeps the id this
    copy was acknowledged under as an alias of it. A message may reply to another of the same
    batch: the batch is threaded in order.
    """
    emails = [bounded(e) for e in emails]
    earlier = await by_dedup_key([e.dedup_key for e in emails])
    fresh: dict[str, NewEmail] = {}  # first of each dedup key not stored yet
    for email in emails:
        if email.dedup_key not in earlier:
            fresh.setdefault(email.dedup_key, email)
    new = list(fresh.values())
    with_raw = [e.raw for e in new if e.raw is not None]
    refs = await put_blobs(with_raw + [a.data for e in new for a in e.attachments])
    raw_refs, attachment_refs = iter(refs[: len(with_raw)]), iter(refs[len(with_raw) :])
    conversations, created = await _conversations_for(new)

    messages: list[Message] = []
    for email, conversation in zip(new, conversations, strict=True):
        raw = next(raw_refs) if email.raw is not None else None
        attachments = [attachment_ref(a, next(attachment_refs)) for a in email.attachments]
        messages.append(_message(email, conversation, raw, attachments))
    if created:
        await Conversation.get_pymongo_collection().insert_many(
            [c.model_dump(by_alias=True) for c in created], ordered=False
        )
    raced = await insert_unless_stored(messages)
    if raced:  # the same messages arrived on another connection a moment ago
        earlier |= await by_dedup_key(sorted(raced))
    inserted = [m for m in messages if m.dedup_key not in raced]
    await _record_in_conversations(inserted, {e.dedup_key: e for e in new})
    await _mark_shared_message_ids(inserted)
    stored = {m.dedup_key: m for m in inserted}

    results = []
    for email in emails:
        if email.dedup_key in stored:
            message = stored.pop(email.dedup_key)
            results.append(_filed(message, duplicate=False))
            earlier[email.dedup_key] = message  # a repeat later in the batch is a duplicate
        elif email.dedup_key in earlier:
            results.append(_filed(earlier[email.dedup_key], duplicate=True))
        else:
            raise RuntimeError(f"{email.dedup_key} was neither stored nor found")
    await _keep_aliases(emails, results)
    return results


async def _keep_aliases(emails: Sequence[NewEmail], results: Sequence[Filed]) -> None:
    """Record, on each stored message, the ids its retransmissions were acknowledged under:
    written before their spool entries go, so that every id a 250 named resolves."""
    aliases: dict[PydanticObjectId, list[PydanticObjectId]] = {}
    for email, filed in zip(emails, results, strict=True):
        if filed.duplicate and email.id is not None and email.id != filed.message_id:
            aliases.setdefault(filed.message_id, []).append(email.id)
    if not aliases:
        return
    await Message.get_pymongo_collection().bulk_write(
        [
            UpdateOne(
                {"_id": message_id, f"alias_ids.{MAX_ALIASES - 1}": {"$exists": False}},
                {"$addToSet": {"alias_ids": {"$each": ids}}},
            )
            for message_id, ids in aliases.items()
        ],
        ordered=False,
    )


def _with_message_ids(ids: Sequence[str]) -> dict[str, Any]:
    """The query for the messages whose Message-ID is one of ``ids``."""
    # $type lets the planner use the partial message_id_header index: an $in alone does not
    # imply the index's filter, and mongod would read every message of the archive instead.
    return {"message_id_header": {"$in": list(ids), "$type": "string"}}


async def _mark_shared_message_ids(inserted: Sequence[Message]) -> None:
    """Mark every message whose Message-ID another message (with other content) carries too.
    Checked after the insert, so that of two such messages filed at the same moment, the
    later check sees both."""
    ids = sorted({m.message_id_header for m in inserted if m.message_id_header})
    if not ids:
        return
    collection = Message.get_pymongo_collection()
    cursor = await collection.aggregate([
        {"$match": _with_message_ids(ids)},
        {"$group": {"_id": "$message_id_header", "messages": {"$sum": 1}}},
        {"$match": {"messages": {"$gt": 1}}},
    ])  # fmt: skip
    shared = [group["_id"] async for group in cursor]
    if shared:
        await collection.update_many(
            _with_message_ids(shared) | {"shares_message_id": {"$ne": True}},
            {"$set": {"shares_message_id": True}},
        )


def _message(
    email: NewEmail,
    conversation: Conversation,
    raw: BlobRef | None,
    attachments: list[AttachmentRef],
) -> Message:
    return Message(
        id=email.id or PydanticObjectId(),
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
        collected_at=email.first_received_at,
        **stored_body(subject=email.subject, text=email.text, html=email.html),
        attachments=attachments,
        has_attachments=bool(attachments),
        attachment_text=email.attachment_text,
        raw=raw,
        envelope=email.envelope,
        parse_error=email.parse_error,
        archived_at=email.received_at,
    )


async def by_dedup_key(keys: Sequence[str]) -> dict[str, Message]:
    if not keys:
        return {}
    found = await Message.find({"dedup_key": {"$in": list(set(keys))}}).to_list()
    return {m.dedup_key: m for m in found}


async def insert_unless_stored(messages: list[Message]) -> set[str]:
    """Insert all at once; the dedup keys that turned out to be stored already. The messages
    take their accounts' terms before, and are settled with them after (see
    ``settle_links``)."""
    if not messages:
        return set()
    await apply_link_terms(messages)
    raced: set[str] = set()
    try:
        # pydantic's dump is what Beanie would write, BSON for BSON, at a tenth of the cost
        await Message.get_pymongo_collection().insert_many(
            [m.model_dump(by_alias=True) for m in messages], ordered=False
        )
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if any(e.get("code") != DUPLICATE_KEY for e in errors):
            raise
        raced = {messages[e["index"]].dedup_key for e in errors}
    await settle_links([m for m in messages if m.dedup_key not in raced])
    return raced


def _filed(message: Message, *, duplicate: bool) -> Filed:
    assert message.id is not None
    return Filed(
        message_id=message.id,
        conversation_id=message.conversation_id,
        account_id=message.account_id,
        duplicate=duplicate,
    )


async def _conversations_for(
    emails: Sequence[NewEmail],
) -> tuple[list[Conversation], list[Conversation]]:
    """The thread of each email, in order: the conversation of the nearest related message
    (stored, or earlier in the batch), else a new one linked to the customer's account; and
    the new ones, which are not saved yet."""
    keys = sorted({k for e in emails for k in e.thread_keys()})
    related = await Message.get_pymongo_collection().find(
        _with_message_ids(keys), {"message_id_header": 1, "conversation_id": 1}
    ).to_list() if keys else []  # fmt: skip
    known = await Conversation.find(
        {"_id": {"$in": list({m["conversation_id"] for m in related})}}
    ).to_list() if related else []  # fmt: skip
    by_id = {c.id: c for c in known}
    by_key = {m["message_id_header"]: by_id[m["conversation_id"]] for m in related
              if m["conversation_id"] in by_id}  # fmt: skip
    accounts = await _accounts_for(emails)

    threads: list[Conversation] = []
    created: list[Conversation] = []
    for email in emails:
        thread = next((by_key[k] for k in email.thread_keys() if k in by_key), None)
        if thread is None:
            account = accounts.get(id(email))
            thread = Conversation(
                id=PydanticObjectId(),
                channel=Channel.EMAIL,
                account_id=account.id if account else None,
                restricted=account is not None and account.status is AccountStatus.DELETED,
                subject=email.subject,
                customer_emails=sorted(set(email.customer_emails)),
                participants=sorted(set(email.participants)),
                first_message_at=email.sent_at,
                last_message_at=email.sent_at,
                collected_at=email.first_received_at,
            )
            created.append(thread)
        if email.message_id:
            by_key.setdefault(email.message_id, thread)
        threads.append(thread)
    return threads, created


async def _accounts_for(emails: Sequence[NewEmail]) -> dict[int, Account]:
    """The account of each email (by ``id()``) that names one or whose customer has one: a
    live account before a deleted one, the oldest first (as ``account_for_emails``)."""
    for account_id in sorted({e.account_id for e in emails if e.account_id}):
        await ensure_account(account_id=account_id)
    named = {e.account_id for e in emails if e.account_id}
    addresses = {normalise_email(a) for e in emails if not e.account_id
                 for a in e.customer_emails if a}  # fmt: skip
    query: list[dict[str, Any]] = []
    if named:
        query.append({"_id": {"$in": sorted(named)}})
    if addresses:
        query.append({"emails": {"$in": sorted(addresses)}})
        query.append({"purged_addresses": {"$in": address_hashes(addresses)}})
    if not query:
        return {}
    candidates = await Account.find({"$or": query}).sort("+created_at").to_list()
    by_id = {a.id: a for a in candidates}
    found: dict[int, Account] = {}
    for email in emails:
        if email.account_id:
            found[id(email)] = by_id[email.account_id]
            continue
        account = best_account(candidates, [a for a in email.customer_emails if a])
        if account is not None:
            found[id(email)] = account
    return found


async def _record_in_conversations(
    inserted: Sequence[Message], emails: dict[str, NewEmail]
) -> None:
    if not inserted:
        return
    await Conversation.get_pymongo_collection().bulk_write(
        [
            UpdateOne(
                {"_id": message.conversation_id},
                {
                    "$inc": {"message_count": 1},
                    "$min": {
                        "first_message_at": message.sent_at,
                        "collected_at": message.collected_at,
                    },
                    "$max": {"last_message_at": message.sent_at},
                    "$addToSet": {
                        "participants": {"$each": list(message.participants)},
                        "customer_emails": {
                            "$each": list(emails[message.dedup_key].customer_emails)
                        },
                    },
                },
            )
            for message in inserted
        ]
    )
