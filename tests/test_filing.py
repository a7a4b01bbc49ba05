"""Every acknowledged message gets filed: bodies bounded in bytes, header lists bounded, and
what still cannot be filed after its attempts is filed raw-only; no spool entry outlives them."""

from __future__ import annotations

from datetime import timedelta

import pytest
from prometheus_client import REGISTRY

from ingest.filer import Filer
from ingest.mime import parse_email
from retention.holds import place_hold, release_hold
from retention.rules import RetentionPolicy
from retention.sweep import sweep
from store.accounts import register_account, request_erasure
from store.blobs import read_blob
from store.database import Database
from store.documents import (
    MAX_BODY_BYTES,
    Blob,
    BlobChunk,
    Envelope,
    HoldKind,
    Message,
    Role,
    SpoolEntry,
    utcnow,
)
from store.messages import MAX_ADDRESSES, MAX_REFERENCES, file_email, stored_body
from store.spool import Spool
from tests.conftest import Api
from tests.factories import email
from tests.helpers import operations, whole_reads
from tests.mail import SUPPORT, make_email, running, send, stored

POLICY = RetentionPolicy(grace=timedelta(days=180), max_age=timedelta(days=1095),
                         secret_key=b"k" * 32, blob_quiet_period=timedelta(0))  # fmt: skip
ENVELOPE = Envelope(mail_from="Ann@Example.com", rcpt_tos=["support@shop.example"],
                    client_address="127.0.0.1")  # fmt: skip
UNFILEABLE = "Unfileable by this database"


def raw_only_count() -> float:
    return REGISTRY.get_sample_value("archive_filed_raw_only_total") or 0.0


async def refuse_subject(database: Database, subject: str) -> None:
    """A real fault: mongod itself refuses every message document with this subject."""
    await database.db.command("collMod", "messages", validator={"subject": {"$ne": subject}})


async def file_until_empty(filer: Filer, *, rounds: int) -> None:
    for _ in range(rounds):
        await filer.file_once()


def part(subtype: str) -> bytes:
    return (
        f"--B\r\nContent-Type: text/{subtype}; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\n"
    ).encode()


def four_byte_mail(size: int) -> bytes:
    """``size`` bytes of mail in 4-byte characters (emoji) sent as 8-bit UTF-8, as SMTPUTF8
    mailers do: a subject of 250,000 of them, then a text and an HTML part."""
    subject = ("\N{GRINNING FACE}" * 250_000).encode()
    head = (
        b"From: Ann <ann@example.com>\r\nTo: support@shop.example\r\nSubject: " + subject
        + b"\r\nMessage-ID: <emoji-flood@example.com>\r\nDate: Tue, 24 Nov 2026 10:00:00 +0100"
        b'\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary="B"\r\n\r\n'
    )  # fmt: skip
    line = ("\N{GRINNING FACE}" * 1000 + "\r\n").encode()
    half = line * ((size - len(head)) // 2 // len(line))
    return head + part("plain") + half + part("html") + half + b"--B--\r\n"


@pytest.mark.slow
async def test_a_22_7_mb_mail_of_4_byte_characters_is_filed_and_purged_on_schedule(
    database: Database, spool: Spool
) -> None:
    raw = four_byte_mail(22_700_000)
    assert 22_600_000 < len(raw) < 26_214_400
    await register_account(account_id="ann", emails=["ann@example.com"], name=None)
    async with running(spool, max_message_bytes=26_214_400) as port:
        code, reply = await send(port, raw)
        assert code == 250
        message = await stored(reply, within=60)
    assert message.body_truncated
    assert 0 < len(message.text.encode()) <= MAX_BODY_BYTES
    assert message.html is not None and len(message.html.encode()) <= MAX_BODY_BYTES
    assert message.raw is not None and await read_blob(message.raw.sha256) == raw

    now = utcnow()
    await request_erasure(account_id="ann", now=now)
    await sweep(database, now=now, policy=POLICY)
    assert await Message.get(message.id) is None
    assert await Blob.get(message.raw.sha256) is None
    assert await BlobChunk.find({"blob_id": message.raw.sha256}).count() == 0


def test_bodies_are_cut_in_bytes_at_a_character_boundary() -> None:
    body = stored_body(subject=None, text="\N{GRINNING FACE}" * MAX_BODY_BYTES, html=None)
    assert body["body_truncated"]
    assert len(body["text"].encode()) == MAX_BODY_BYTES  # 4 divides it: no half character
    assert set(body["text"]) == {"\N{GRINNING FACE}"}


async def test_header_lists_are_bounded_and_what_was_cut_is_noted(database: Database) -> None:
    many_to = ", ".join(f"c{n}@example.com" for n in range(MAX_ADDRESSES * 5))
    references = " ".join(f"<r{n}@example.com>" for n in range(MAX_REFERENCES * 10))
    raw = make_email(to=many_to, references=references, message_id="<wide@example.com>")
    filed = await file_email(parse_email(raw, support=SUPPORT, received_at=utcnow()))
    message = await Message.get(filed.message_id)
    assert message is not None
    assert len(message.to) == MAX_ADDRESSES
    # The nearest ancestors are kept: they are the ones a thread is found by.
    assert message.references[-1] == f"r{MAX_REFERENCES * 10 - 1}@example.com"
    assert len(message.references) == MAX_REFERENCES
    assert message.parse_error is not None and "To: 1000 kept 200" in message.parse_error
    assert "ann@example.com" in message.participants


async def test_mail_that_cannot_be_filed_is_filed_raw_only_after_its_attempts(
    database: Database, spool: Spool
) -> None:
    await register_account(account_id="ann", emails=["ann@example.com"], name=None)
    await refuse_subject(database, UNFILEABLE)
    raw = make_email(subject=UNFILEABLE)
    before = raw_only_count()
    queued = await spool.put_email(raw, envelope=ENVELOPE, received_at=utcnow())
    filer = Filer(spool, support=SUPPORT, max_attempts=3, retry_base=timedelta(0))

    await file_until_empty(filer, rounds=2)
    entry = await SpoolEntry.get(queued)
    assert entry is not None and entry.attempts == 2  # tried, and still waiting
    await filer.file_once()

    assert await SpoolEntry.count() == 0
    assert raw_only_count() == before + 1
    message = await Message.get(queued)
    assert message is not None
    assert message.parse_error is not None
    assert message.parse_error.startswith("filed raw-only after 3 attempts: ")
    assert "DocumentValidationFailure" in message.parse_error or "121" in message.parse_error
    assert message.subject is None  # nothing parsed is kept, so the database takes it
    assert message.raw is not None and await read_blob(message.raw.sha256) == raw
    assert message.account_id == "ann"  # linked by its envelope sender
    assert message.participants == ["ann@example.com", "support@shop.example"]


async def test_a_raw_only_message_is_found_by_its_envelope_and_read_raw(
    database: Database, spool: Spool, api: Api
) -> None:
    await refuse_subject(database, UNFILEABLE)
    raw = make_email(subject=UNFILEABLE)
    queued = await spool.put_email(raw, envelope=ENVELOPE, received_at=utcnow())
    await file_until_empty(Filer(spool, support=SUPPORT, max_attempts=1), rounds=1)
    await api.indexed()
    found = await api.get("/api/v1/search?participant=ann@example.com", Role.AGENT)
    assert [h["message_id"] for h in (await found.json())["hits"]] == [str(queued)]
    response = await api.get(f"/api/v1/messages/{queued}/raw", Role.AGENT)
    assert response.status == 200 and await response.read() == raw


async def test_a_raw_only_message_is_held_and_purged_like_any_other(
    database: Database, spool: Spool
) -> None:
    await register_account(account_id="ann", emails=["ann@example.com"], name=None)
    await refuse_subject(database, UNFILEABLE)
    queued = await spool.put_email(make_email(subject=UNFILEABLE), envelope=ENVELOPE,
                                   received_at=utcnow())  # fmt: skip
    await file_until_empty(Filer(spool, support=SUPPORT, max_attempts=1), rounds=1)
    now = utcnow()
    await request_erasure(account_id="ann", now=now)
    hold = await place_hold(database, account_id="ann", conversation_id=None,
                            kind=HoldKind.DISPUTE, reason="chargeback", case_ref=None,
                            expires_at=None, created_by="legal")  # fmt: skip
    await sweep(database, now=now, policy=POLICY)
    assert await Message.get(queued) is not None
    assert hold.id is not None
    await release_hold(hold_id=hold.id, released_by="legal", reason="settled", now=utcnow())
    await sweep(database, now=utcnow(), policy=POLICY)
    assert await Message.get(queued) is None


async def test_a_delivery_whose_bytes_were_lost_is_filed_as_a_record_of_the_loss(
    database: Database, spool: Spool, api: Api
) -> None:
    queued = await spool.put_email(b"x" * 5_000_000, envelope=ENVELOPE, received_at=utcnow())
    await Blob.find_all().delete()  # its large raw copy is gone (an operator's mistake)
    await file_until_empty(Filer(spool, support=SUPPORT, max_attempts=2,
                                 retry_base=timedelta(0)), rounds=2)  # fmt: skip
    assert await SpoolEntry.count() == 0
    view = await (await api.get(f"/api/v1/messages/{queued}", Role.AGENT)).json()
    assert view["status"] == "filed" and view["raw_url"] is None
    assert view["parse_error"].startswith("the original bytes were lost before filing")


async def test_filing_mail_finds_related_messages_by_index_not_by_reading_them_all(
    database: Database,
) -> None:
    # Threading (In-Reply-To, References) and the mark on a Message-ID that other content
    # carries too look stored messages up by Message-ID: a scan cost each batch as much as the
    # whole archive (an import beside 100,000 chat messages: 8.5 s of mongod's time in scans).
    await email(message_id="<q1@example.com>")
    async with operations(database) as ops:
        await email(message_id="<q2@example.com>", in_reply_to="<q1@example.com>",
                    references="<q0@example.com> <q1@example.com>")  # fmt: skip
        await email(message_id="<q2@example.com>", body="Other content, the same Message-ID")
    assert whole_reads(ops, "messages") == []
