"""The Beanie documents of the whole domain and their indexes.

Designed for every feature of SPEC.md up front (threading, dedup, retention, search, holds,
proof of deletion, audit, exports) so that later work adds behaviour, not migrations.
All times are timezone-aware UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from beanie import Document, PydanticObjectId
from pydantic import BaseModel, Field
from pymongo import ASCENDING, DESCENDING, IndexModel


def at_millis(when: datetime) -> datetime:
    """``when`` in UTC at MongoDB's precision (milliseconds), so what is stored equals what
    was written; a naive time is taken to be UTC."""
    when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    return when.replace(microsecond=when.microsecond // 1000 * 1000)


def in_utc_range(when: datetime) -> datetime:
    """``when`` if it is a time in UTC's range; ValueError if not (a time zone can push
    0001-01-01 or 9999-12-31 past either end, which no later step could store)."""
    try:
        when.astimezone(UTC)
    except OverflowError:
        raise ValueError("out of range: a time between 0001-01-01 and 9999-12-31 in UTC") from None
    return when


def iso(when: datetime | None) -> str | None:
    """A time as the API and exports write it: ISO 8601 in UTC with a Z."""
    return when.isoformat().replace("+00:00", "Z") if when is not None else None


def utcnow() -> datetime:
    return at_millis(datetime.now(UTC))


class Channel(StrEnum):
    EMAIL = "email"
    CHAT = "chat"


class Direction(StrEnum):
    INBOUND = "inbound"  # from the customer
    OUTBOUND = "outbound"  # from the support side (agent, bot)
    INTERNAL = "internal"  # private notes, system events: never sent to the customer


class AuthorRole(StrEnum):
    CUSTOMER = "customer"
    AGENT = "agent"
    BOT = "bot"
    SYSTEM = "system"
    ASSISTANT = "assistant"  # an AI assistant of the helpdesk (Chatwoot's Captain)
    TEMPLATE = "template"  # sent by the helpdesk from a template (greeting, survey, form)


class AccountStatus(StrEnum):
    ACTIVE = "active"
    DELETED = "deleted"


class HoldKind(StrEnum):
    DISPUTE = "dispute"
    CRIMINAL_INVESTIGATION = "criminal_investigation"
    LEGAL_OBLIGATION = "legal_obligation"


class Role(StrEnum):
    AGENT = "agent"
    PLATFORM = "platform"
    COMPLIANCE = "compliance"
    ADMIN = "admin"


class PurgeRule(StrEnum):
    ACCOUNT_DELETION = "account_deletion"
    ERASURE = "erasure"
    MAX_AGE = "max_age"


# --- accounts -------------------------------------------------------------------------------


class Account(Document):
    """A customer account of the main platform; ``id`` is the platform's own account id."""

    id: str  # type: ignore[assignment]
    emails: list[str] = Field(default_factory=list)  # lowercased
    name: str | None = None
    status: AccountStatus = AccountStatus.ACTIVE
    deleted_at: datetime | None = None
    erasure_requested_at: datetime | None = None
    # When everything of this account must be gone; None while the account lives.
    purge_due_at: datetime | None = None
    purged_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    # Written by hold creation and by every purge batch in their transactions, so that the two
    # conflict: a hold placed while a sweep runs is seen before anything it covers is deleted.
    guard: int = 0
    # The earliest deadline of this account's content still stored (messages carry their own
    # ``purge_due_at``): the sweep visits accounts where it has passed. It outlives the purge,
    # because content may link to a purged account later (a chat naming its id).
    next_purge_at: datetime | None = None
    # Bumped by every change that may give the account content to purge (a deletion, an
    # erasure, a restore, content linked while deleted): the sweep writes what it concluded
    # about the account only if this did not move meanwhile.
    links: int = 0
    # A platform may register a purged account id again: that starts a new life of the
    # account, which never revives (nor adopts) the content of the previous one.
    life: int = 1
    life_started_at: datetime | None = None
    # A purged account's addresses as keyed hashes (store.subjects): mail that comes later
    # from one of them links to the tombstone and goes at the next sweep.
    purged_addresses: list[str] = Field(default_factory=list)
    # Made by an erasure of a person by address (store.accounts.erase_person), not by the
    # platform: its erasure is never restored.
    person: bool = False

    class Settings:
        name = "accounts"
        indexes = [
            IndexModel([("emails", ASCENDING)], name="emails"),
            IndexModel([("purged_addresses", ASCENDING)], name="purged_addresses"),
            # The account list: newest first, of one status or all.
            IndexModel([("created_at", DESCENDING), ("_id", DESCENDING)], name="created"),
            IndexModel(
                [("status", ASCENDING), ("created_at", DESCENDING), ("_id", DESCENDING)],
                name="status_created",
            ),
            IndexModel(
                [("purge_due_at", ASCENDING)],
                name="purge_due",
                partialFilterExpression={"purge_due_at": {"$type": "date"}},
            ),
            IndexModel(
                [("next_purge_at", ASCENDING)],
                name="next_purge",
                partialFilterExpression={"next_purge_at": {"$type": "date"}},
            ),
        ]


# --- conversations and messages -------------------------------------------------------------


class Conversation(Document):
    """A thread of messages: an email thread, or one chat conversation of one source."""

    channel: Channel
    account_id: str | None = None
    # Chat: the webhook source and its conversation id; email: None.
    source: str | None = None
    external_id: str | None = None
    subject: str | None = None
    customer_emails: list[str] = Field(default_factory=list)  # lowercased, for late linking
    participants: list[str] = Field(default_factory=list)  # lowercased addresses
    message_count: int = 0
    # Set while the account is deleted (within grace): only compliance may see the content.
    restricted: bool = False
    first_message_at: datetime | None = None
    last_message_at: datetime | None = None
    collected_at: datetime = Field(default_factory=utcnow)
    guard: int = 0  # see Account.guard

    class Settings:
        name = "conversations"
        indexes = [
            IndexModel(
                [("source", ASCENDING), ("external_id", ASCENDING)],
                name="source_external_id",
                unique=True,
                partialFilterExpression={"external_id": {"$type": "string"}},
            ),
            IndexModel(
                [("account_id", ASCENDING), ("last_message_at", DESCENDING)], name="account"
            ),
            # Every conversation, linked or not: linking finds the unlinked ones of an address,
            # and the residue scan those of a purged address (an index of the unlinked only
            # left it reading every conversation). A database made before keeps the partial
            # "unlinked_customer_emails" beside it, unused (it may be dropped).
            IndexModel([("customer_emails", ASCENDING)], name="customer_emails"),
            IndexModel([("collected_at", ASCENDING)], name="collected_at"),
        ]


class Address(BaseModel):
    email: str | None = None  # lowercased
    name: str | None = None


class Author(BaseModel):
    role: AuthorRole
    name: str | None = None
    email: str | None = None


class BlobRef(BaseModel):
    """A reference to content-addressed bytes in ``blobs``."""

    sha256: str
    size: int


class AttachmentRef(BlobRef):
    filename: str | None = None
    content_type: str = "application/octet-stream"
    inline: bool = False
    content_id: str | None = None


class FetchRetry(BaseModel):
    """When to fetch an attachment again that did not answer in time (ingest.chat.refetch).
    Its URL is a credential that lets anyone download the file: it is never shown, and it
    goes with the message (or once the fetch succeeds or is given up)."""

    url: str
    attempts: int  # made so far
    next_at: datetime
    until: datetime  # given up after this


class UnfetchedAttachment(BaseModel):
    """An attachment a chat message pointed to by URL and the archive did not fetch: what is
    known of it, and why it is not here. Only the URL's origin is shown (its path is a
    credential); the whole URL is kept, in ``retry``, only while it is to be fetched again."""

    filename: str | None = None
    content_type: str | None = None
    size: int | None = None
    origin: str | None = None
    reason: str
    retry: FetchRetry | None = None

    def shown(self) -> dict[str, object]:
        """What the API, the pages and exports say of it (never the URL)."""
        return self.model_dump(exclude={"retry"})


class Envelope(BaseModel):
    """What the sending MTA said in the SMTP session, kept beside the message bytes."""

    mail_from: str
    rcpt_tos: list[str]
    client_address: str
    helo: str | None = None
    tls: bool = False


class MessageVersion(BaseModel):
    """A previous text of an edited chat message."""

    text: str
    html: str | None = None
    replaced_at: datetime


class Message(Document):
    """One email or chat message, with what search, threading, dedup and retention need."""

    conversation_id: PydanticObjectId
    account_id: str | None = None
    channel: Channel
    direction: Direction
    source: str | None = None  # chat webhook source; "smtp" or "import" for email
    # Unique across the archive: "email-sha256:<hex>" (the content without relay trace headers,
    # Message-ID included; "email:<Message-ID>" in archives filed before issue 14), or
    # "chat:<source>:<message id>". A retry of a stored message hits this and is not stored twice.
    dedup_key: str
    external_id: str | None = None

    # Email headers used for threading (normalised, without angle brackets).
    message_id_header: str | None = None
    in_reply_to: str | None = None
    references: list[str] = Field(default_factory=list)

    subject: str | None = None
    author: Author
    sender: Address | None = None
    to: list[Address] = Field(default_factory=list)
    cc: list[Address] = Field(default_factory=list)
    participants: list[str] = Field(default_factory=list)  # lowercased addresses
    sent_at: datetime
    collected_at: datetime = Field(default_factory=utcnow)

    text: str = ""
    html: str | None = None
    # True when text or html were cut at MAX_BODY_BYTES; the raw copy is always whole.
    body_truncated: bool = False
    attachments: list[AttachmentRef] = Field(default_factory=list)
    has_attachments: bool = False
    # The text of PDF and plain-text attachments (bounded), for search.
    attachment_text: str = ""

    # Set while the account is deleted (within grace): only compliance may see the content.
    restricted: bool = False
    raw: BlobRef | None = None  # the original bytes (email), byte-exact
    envelope: Envelope | None = None
    parse_error: str | None = None
    history: list[MessageVersion] = Field(default_factory=list)
    # When this message must be gone: set while its account is deleted (the account's
    # deadline, or now for an erasure), kept with the message so that a restore, a new life
    # of the account or a purge in progress can never move another life's deadline.
    purge_due_at: datetime | None = None
    # Chat: when the source said the message was deleted there (its archived text is kept).
    deleted_at_source: datetime | None = None
    unfetched_attachments: list[UnfetchedAttachment] = Field(default_factory=list)
    # The earliest ``retry.next_at`` of its unfetched attachments (None: nothing to fetch).
    refetch_at: datetime | None = None
    # Email: another message with other content carries the same Message-ID (real mailers reuse
    # them); each is stored as a message of its own.
    shares_message_id: bool = False
    # The ids that SMTP acknowledged for retransmissions of this message (each 250 names the
    # id of its own spool entry): reading any of them finds this message.
    alias_ids: list[PydanticObjectId] = Field(default_factory=list)
    # When the archive received it. ``collected_at`` is when the company first did (the
    # earliest Received or Date header of imported or late-forwarded mail), which is what the
    # maximum age counts from. None for messages filed before issue 14 (then collected_at).
    archived_at: datetime | None = None

    class Settings:
        name = "messages"
        indexes = [
            IndexModel([("dedup_key", ASCENDING)], name="dedup_key", unique=True),
            IndexModel(
                [("message_id_header", ASCENDING)],
                name="message_id_header",
                partialFilterExpression={"message_id_header": {"$type": "string"}},
            ),
            IndexModel([("conversation_id", ASCENDING), ("sent_at", ASCENDING)], name="thread"),
            IndexModel([("account_id", ASCENDING), ("sent_at", DESCENDING)], name="account_time"),
            IndexModel([("sent_at", DESCENDING), ("_id", DESCENDING)], name="newest"),
            IndexModel([("participants", ASCENDING), ("sent_at", DESCENDING)], name="participant"),
            # The max-age purge walks past held content in this order (a keyset, no skip list).
            IndexModel([("collected_at", ASCENDING), ("_id", ASCENDING)], name="collected_at_id"),
            # Blob reference lookups: a blob may go only when nothing points at it any more.
            IndexModel([("raw.sha256", ASCENDING)], name="raw_blob", sparse=True),
            IndexModel([("attachments.sha256", ASCENDING)], name="attachment_blobs", sparse=True),
            IndexModel(
                [("account_id", ASCENDING), ("purge_due_at", ASCENDING)],
                name="account_purge_due",
                partialFilterExpression={"purge_due_at": {"$type": "date"}},
            ),
            IndexModel(
                [("refetch_at", ASCENDING)],
                name="refetch_at",
                partialFilterExpression={"refetch_at": {"$type": "date"}},
            ),
            IndexModel(
                [("alias_ids", ASCENDING)],
                name="alias_ids",
                # Only messages that have aliases are indexed; a lookup must say "$type" too.
                partialFilterExpression={"alias_ids": {"$type": "objectId"}},
            ),
        ]


# A message document must stay well under MongoDB's 16 MiB whatever the mail holds (SMTP takes
# 25 MiB): text and HTML are each cut at this many bytes of UTF-8 (the raw copy keeps all).
MAX_BODY_BYTES = 2 * 1024 * 1024


# --- blobs ----------------------------------------------------------------------------------

# Content up to this size lives inside the blob document; larger content is chunked because
# a BSON document cannot exceed 16 MiB and SMTP accepts 25 MiB by default.
BLOB_INLINE_MAX = 4 * 1024 * 1024
BLOB_CHUNK_SIZE = 4 * 1024 * 1024


class Blob(Document):
    """Content-addressed bytes (``id`` = hex SHA-256): the same content is stored once."""

    id: str  # type: ignore[assignment]
    size: int
    data: bytes | None = None  # inline when small
    chunk_count: int = 0  # otherwise in ``blob_chunks``
    created_at: datetime = Field(default_factory=utcnow)
    # Bumped by every writer that references the blob, so a purge never removes a blob that a
    # message being ingested at the same moment is about to reference.
    last_referenced_at: datetime = Field(default_factory=utcnow)

    class Settings:
        name = "blobs"
        indexes = [IndexModel([("last_referenced_at", ASCENDING)], name="last_referenced_at")]


class BlobChunk(Document):
    blob_id: str
    n: int
    data: bytes

    class Settings:
        name = "blob_chunks"
        indexes = [
            IndexModel([("blob_id", ASCENDING), ("n", ASCENDING)], name="blob_n", unique=True)
        ]


class SpoolKind(StrEnum):
    EMAIL = "email"
    CHAT = "chat"


class ChatClaim(BaseModel):
    """An id named by a chat acknowledgement before its message (or conversation) is filed."""

    key: str  # a message's dedup key, or chat_spool.conversation_key(...)
    id: PydanticObjectId


class SpoolEntry(Document):
    """A delivery accepted durably and not filed yet: the SMTP reply is sent once this is
    written, and the filer parses and files it behind the acknowledgement, then deletes it.

    ``owner`` is the serve instance that files it, until ``lease_until``; an entry whose lease
    has run out (its instance died) is taken over by another. Filing is idempotent (dedup),
    so an entry filed twice is stored once.
    """

    raw: bytes | None = None  # the message, when up to BLOB_INLINE_MAX
    raw_sha256: str | None = None  # otherwise the blob that holds it
    size: int
    envelope: Envelope | None = None
    received_at: datetime
    owner: str
    lease_until: datetime
    attempts: int = 0
    last_error: str | None = None
    # A chat webhook call (``kind`` "chat"): ``raw`` is its body, ``chat_source`` the source
    # that signed it, and ``chat_claims`` the ids its acknowledgement named for messages and a
    # conversation not stored nor spooled before (unique across the spool: see store.chat_spool).
    kind: SpoolKind = SpoolKind.EMAIL
    chat_source: str | None = None
    chat_edits: bool = False
    chat_claims: list[ChatClaim] | None = None

    class Settings:
        name = "spool"
        indexes = [
            IndexModel([("owner", ASCENDING), ("_id", ASCENDING)], name="owner"),
            IndexModel([("lease_until", ASCENDING)], name="lease_until"),
            IndexModel([("raw_sha256", ASCENDING)], name="raw_sha256", sparse=True),
            # One claim per message or conversation key: two calls carrying the same new
            # message (two serve processes, or a retry) cannot both name an id for it.
            IndexModel(
                [("chat_claims.key", ASCENDING)], name="chat_claims", unique=True,
                partialFilterExpression={"chat_claims.key": {"$type": "string"}},
            ),
            # Reading an id a chat answer named, before it is filed (every id must resolve).
            IndexModel(
                [("chat_claims.id", ASCENDING)], name="chat_claims_id",
                partialFilterExpression={"chat_claims.id": {"$type": "objectId"}},
            ),
        ]  # fmt: skip


# --- retention ------------------------------------------------------------------------------


class Hold(Document):
    """A legal or dispute hold: while active, nothing in its scope is purged by any path."""

    account_id: str | None = None
    conversation_id: PydanticObjectId | None = None
    kind: HoldKind
    reason: str
    case_ref: str | None = None
    created_by: str
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime | None = None
    released_at: datetime | None = None
    released_by: str | None = None
    release_reason: str | None = None

    class Settings:
        name = "holds"
        indexes = [
            IndexModel([("account_id", ASCENDING), ("released_at", ASCENDING)], name="account"),
            IndexModel(
                [("conversation_id", ASCENDING), ("released_at", ASCENDING)], name="conversation"
            ),
            IndexModel([("expires_at", ASCENDING)], name="expires_at", sparse=True),
        ]


def active_holds_query(now: datetime) -> dict[str, object]:
    """Holds in force at ``now``: not released, not expired."""
    return {"released_at": None, "$or": [{"expires_at": None}, {"expires_at": {"$gt": now}}]}


class PurgeCounts(BaseModel):
    conversations: int = 0
    messages: int = 0
    blobs: int = 0
    bytes: int = 0


class PurgeRecord(Document):
    """Proof of one deletion, without personal data: the account appears only as an HMAC."""

    subject_hmac: str | None = None  # HMAC-SHA256(secret key, account id); None for unlinked
    # The HMACs of every account whose content this purge removed (one for an account's
    # deletion; several for a max-age purge): what "was X purged?" looks up.
    subjects: list[str] = Field(default_factory=list)
    rule: PurgeRule
    due_at: datetime
    started_at: datetime
    done_at: datetime | None = None
    counts: PurgeCounts = Field(default_factory=PurgeCounts)
    # Unique per purge so that two sweepers can never write two records for one purge.
    purge_key: str
    # Blobs that deleted messages referenced and that are still to be checked: a sweep killed
    # between deleting messages and their blobs leaves them here for the next one.
    pending_blobs: list[str] = Field(default_factory=list)
    # Conversations whose messages a batch deleted and that are still to be settled (dropped
    # when empty, their metadata recomputed otherwise): a crash leaves them for the next sweep.
    pending_conversations: list[PydanticObjectId] = Field(default_factory=list)
    # The residue scan run right after the purge (retention/residue.py): whether it was clean, and
    # what remained and why (counts and reasons only, no personal data).
    residue: dict[str, Any] | None = None

    class Settings:
        name = "purge_records"
        indexes = [
            IndexModel([("purge_key", ASCENDING)], name="purge_key", unique=True),
            # A changed index gets a new name: an existing database keeps the old one harmlessly
            # instead of refusing to start on a name clash.
            IndexModel([("subjects", ASCENDING), ("started_at", DESCENDING)], name="subjects"),
            IndexModel(
                [("done_at", ASCENDING)],
                name="unfinished",
                partialFilterExpression={"done_at": None},
            ),
            IndexModel([("done_at", DESCENDING)], name="done_at"),
            # What a sweep finishes first (retention.sweep): only the records with something
            # pending are in these, so that it never reads every record ever written.
            IndexModel(
                [("pending_blobs", ASCENDING)],
                name="pending_blobs",
                partialFilterExpression={"pending_blobs": {"$type": "string"}},
            ),
            IndexModel(
                [("pending_conversations", ASCENDING)],
                name="pending_conversations",
                partialFilterExpression={"pending_conversations": {"$type": "objectId"}},
            ),
            # Certificates still "pending" (a search index not compacted yet): rechecked.
            IndexModel(
                [("residue.verdict", ASCENDING)],
                name="pending_verdict",
                partialFilterExpression={"residue.verdict": "pending"},
            ),
        ]


class Lease(Document):
    """A named lease in MongoDB: of several ``serve`` processes, one holds it at a time."""

    id: str  # type: ignore[assignment]
    holder: str
    acquired_at: datetime
    expires_at: datetime

    class Settings:
        name = "leases"


# --- access ---------------------------------------------------------------------------------


class ApiKey(Document):
    """An API key; only the SHA-256 of the token is stored, the token is shown once."""

    name: str
    role: Role
    token_sha256: str
    prefix: str  # the first characters of the token, to recognise it in a list
    created_at: datetime = Field(default_factory=utcnow)
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None

    class Settings:
        name = "api_keys"
        indexes = [
            IndexModel([("name", ASCENDING)], name="name", unique=True),
            IndexModel([("token_sha256", ASCENDING)], name="token", unique=True),
        ]


class AuditEvent(Document):
    """Who did what to which personal data, when and from where. Expires by TTL."""

    at: datetime = Field(default_factory=utcnow)
    actor: str  # API key name, or "cli:<user>", or "system"
    role: Role | None = None
    action: str  # e.g. "search", "message.read", "hold.create"
    target: dict[str, str] = Field(default_factory=dict)  # ids only
    query: dict[str, str] = Field(default_factory=dict)
    client_address: str | None = None
    outcome: Annotated[int, Field(ge=100, le=599)] = 200
    expires_at: datetime
    # The normalised words, tokens and addresses of the free text in ``query``: what the purge
    # looks up (indexed) to redact the events that name a purged account.
    mentions: list[str] = Field(default_factory=list)

    class Settings:
        name = "audit_events"
        indexes = [
            IndexModel([("expires_at", ASCENDING)], name="ttl", expireAfterSeconds=0),
            IndexModel([("at", DESCENDING)], name="at"),
            IndexModel([("actor", ASCENDING), ("at", DESCENDING)], name="actor"),
            IndexModel([("action", ASCENDING), ("at", DESCENDING)], name="action"),
            IndexModel([("target.account_id", ASCENDING), ("at", DESCENDING)], name="account"),
            IndexModel([("mentions", ASCENDING)], name="mentions"),
            # The events that still keep free text, by age: what ages out of it next. (With
            # ``_id``: Beanie tells indexes apart by their fields, not their order, and would
            # take one on ``at`` alone for the index ``at`` above.)
            IndexModel(
                [("at", ASCENDING), ("_id", ASCENDING)],
                name="free_text_at",
                partialFilterExpression={"mentions.0": {"$exists": True}},
            ),
        ]


# --- exports --------------------------------------------------------------------------------


class ExportStatus(StrEnum):
    RUNNING = "running"
    READY = "ready"
    FAILED = "failed"


class Export(Document):
    """A zip of an account's data (subject access) or of a hold's scope (disclosure)."""

    account_id: str | None = None
    hold_id: PydanticObjectId | None = None
    status: ExportStatus = ExportStatus.RUNNING
    path: str | None = None
    size: int | None = None
    manifest_sha256: str | None = None
    error: str | None = None
    created_by: str
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime
    # Where its files go (``<id>.zip`` and its temporary ``<id>.*.part``): removed with the
    # record even when the export never finished.
    directory: str | None = None
    # Whose data it holds: the export goes (file and record) as soon as any of them is purged,
    # a disclosure of a hold's conversation as much as a subject-access export.
    account_ids: list[str] = Field(default_factory=list)
    conversation_ids: list[PydanticObjectId] = Field(default_factory=list)

    class Settings:
        name = "exports"
        indexes = [
            IndexModel([("expires_at", ASCENDING)], name="expires_at"),
            IndexModel([("account_id", ASCENDING)], name="account", sparse=True),
            IndexModel([("account_ids", ASCENDING)], name="subject_accounts"),
            IndexModel([("conversation_ids", ASCENDING)], name="subject_conversations"),
            IndexModel([("created_at", DESCENDING), ("_id", DESCENDING)], name="created"),
        ]


class Disclosure(Document):
    """The register of disclosures to authorities. Holds no message content."""

    export_id: PydanticObjectId
    hold_id: PydanticObjectId
    case_ref: str | None = None
    authority: str
    legal_basis: str
    disclosed_by: str
    disclosed_at: datetime = Field(default_factory=utcnow)
    manifest_sha256: str | None = None

    class Settings:
        name = "disclosures"
        indexes = [IndexModel([("disclosed_at", DESCENDING)], name="disclosed_at")]


class SearchIndexEntry(Document):
    """One process's search index (``search.index``), as the residue scan accounts for it:
    every index is a copy of the messages, and a purge is complete only once each has dropped
    the purged documents from its files. No personal data: where it is and when it was seen."""

    id: str  # type: ignore[assignment]  # the index's own id (kept in its state.json)
    host: str
    path: str
    started_at: datetime = Field(default_factory=utcnow)
    heartbeat_at: datetime = Field(default_factory=utcnow)
    # The last time its files held no deleted document: every purge before then is gone
    # from them physically.
    compacted_at: datetime | None = None

    class Settings:
        name = "search_indexes"


ALL_DOCUMENTS: list[type[Document]] = [
    SearchIndexEntry,
    Account,
    Conversation,
    Message,
    Blob,
    BlobChunk,
    Hold,
    PurgeRecord,
    Lease,
    ApiKey,
    AuditEvent,
    Export,
    Disclosure,
    SpoolEntry,
]
