"""The domain documents round-trip through a real MongoDB, with their indexes in place."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from beanie import PydanticObjectId
from pymongo.errors import DuplicateKeyError

from store.database import Database
from store.documents import (
    ALL_DOCUMENTS,
    Account,
    ApiKey,
    AttachmentRef,
    AuditEvent,
    Author,
    AuthorRole,
    Blob,
    BlobRef,
    Channel,
    Conversation,
    Direction,
    Envelope,
    Hold,
    HoldKind,
    Message,
    PurgeRecord,
    PurgeRule,
    Role,
)

T0 = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


def make_message(conversation: Conversation, **overrides: object) -> Message:
    fields: dict[str, object] = {
        "conversation_id": conversation.id,
        "account_id": "acct-1",
        "channel": Channel.EMAIL,
        "direction": Direction.INBOUND,
        "dedup_key": "email:abc@example.com",
        "message_id_header": "abc@example.com",
        "references": ["root@example.com"],
        "subject": "Refund for order 1234",
        "author": Author(role=AuthorRole.CUSTOMER, email="ann@example.com", name="Ann"),
        "participants": ["ann@example.com", "support@shop.example"],
        "sent_at": T0,
        "text": "Hello, I would like a refund.",
        "attachments": [AttachmentRef(sha256="a" * 64, size=3, filename="r.pdf")],
        "has_attachments": True,
        "raw": BlobRef(sha256="b" * 64, size=120),
        "envelope": Envelope(
            mail_from="ann@example.com", rcpt_tos=["support@shop.example"], client_address="::1"
        ),
    }
    fields.update(overrides)
    return Message(**fields)  # type: ignore[arg-type]


async def test_a_message_round_trips_with_its_nested_fields(database: Database) -> None:
    conversation = Conversation(channel=Channel.EMAIL, account_id="acct-1", subject="Refund")
    await conversation.insert()
    message = make_message(conversation)
    await message.insert()

    loaded = await Message.get(message.id)
    assert loaded is not None
    assert loaded.model_dump() == message.model_dump()
    assert loaded.sent_at == T0  # timezone-aware, millisecond precision kept


async def test_every_document_round_trips(database: Database) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    documents = [
        Account(id="acct-9", emails=["x@example.com"], name="X"),
        Blob(id="c" * 64, size=5, data=b"hello"),
        Hold(account_id="acct-9", kind=HoldKind.DISPUTE, reason="chargeback", created_by="legal"),
        PurgeRecord(
            subject_hmac="d" * 64, rule=PurgeRule.ACCOUNT_DELETION, due_at=now, started_at=now,
            purge_key="account:acct-9:1",
        ),
        ApiKey(name="ops", role=Role.ADMIN, token_sha256="e" * 64, prefix="sa_abc"),
        AuditEvent(actor="ops", action="search", expires_at=now + timedelta(days=395)),
    ]  # fmt: skip
    for document in documents:
        await document.insert()
        loaded = await type(document).get(document.id)
        assert loaded is not None
        assert loaded.model_dump() == document.model_dump()


EXPECTED_INDEXES = {
    "accounts": {"emails", "purge_due", "next_purge", "created", "status_created",
                 "purged_addresses"},
    "conversations": {"source_external_id", "account", "customer_emails", "collected_at"},
    "messages": {
        "dedup_key", "message_id_header", "thread", "account_time", "newest", "participant",
        "collected_at_id", "raw_blob", "attachment_blobs",
        "account_purge_due", "alias_ids", "refetch_at",
    },
    "blobs": {"last_referenced_at"},
    "blob_chunks": {"blob_n"},
    "holds": {"account", "conversation", "expires_at"},
    "purge_records": {"purge_key", "subjects", "done_at", "pending_blobs", "pending_conversations",
                      "pending_verdict"},
    "leases": set(),
    "api_keys": {"name", "token"},
    "audit_events": {"ttl", "at", "actor", "action", "account", "mentions", "free_text_at"},
    "exports": {"expires_at", "account", "created", "subject_accounts", "subject_conversations"},
    "disclosures": {"disclosed_at"},
    "search_indexes": set(),
    "spool": {"owner", "lease_until", "raw_sha256", "chat_claims", "chat_claims_id"},
}  # fmt: skip


async def test_every_collection_has_the_indexes_its_queries_need(database: Database) -> None:
    assert {model.get_settings().name for model in ALL_DOCUMENTS} == set(EXPECTED_INDEXES)
    for model in ALL_DOCUMENTS:
        name = model.get_settings().name
        existing = set(await model.get_pymongo_collection().index_information()) - {"_id_"}
        assert existing == EXPECTED_INDEXES[name], name


async def test_a_dedup_key_is_stored_once(database: Database) -> None:
    conversation = Conversation(channel=Channel.EMAIL)
    await conversation.insert()
    await make_message(conversation).insert()
    with pytest.raises(DuplicateKeyError):
        await make_message(conversation, id=PydanticObjectId()).insert()


async def test_a_chat_conversation_id_is_unique_per_source(database: Database) -> None:
    await Conversation(channel=Channel.CHAT, source="widget", external_id="c1").insert()
    await Conversation(channel=Channel.CHAT, source="other", external_id="c1").insert()
    await Conversation(channel=Channel.EMAIL).insert()
    await Conversation(channel=Channel.EMAIL).insert()  # email threads have no external id
    with pytest.raises(DuplicateKeyError):
        await Conversation(channel=Channel.CHAT, source="widget", external_id="c1").insert()


async def test_audit_events_expire_by_a_ttl_index(database: Database) -> None:
    info = await AuditEvent.get_pymongo_collection().index_information()
    assert info["ttl"]["expireAfterSeconds"] == 0
    assert info["ttl"]["key"] == [("expires_at", 1)]


async def test_writes_wait_for_a_journaled_majority(database: Database) -> None:
    concern = Message.get_pymongo_collection().write_concern
    assert concern.document == {"w": "majority", "j": True}
