"""What makes two deliveries one message: the same Message-ID with the same content, whatever
trace fields the relays on the way added. The same Message-ID with other content is another
message, and every id an acknowledgement named resolves."""

from __future__ import annotations

import asyncio
import mailbox
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path

import pytest
from beanie import PydanticObjectId

from ingest.filer import Filer
from ingest.mailbox import MailboxKind, import_messages, open_mailbox, raw_messages
from ingest.mime import content_sha256, parse_email
from ingest.smtp import smtp_server
from store.database import Database
from store.documents import Conversation, Message, SpoolEntry, utcnow
from store.messages import NewEmail, file_email, file_emails
from store.reading import filed_message
from store.spool import Spool
from tests.mail import MAX_BYTES, SUPPORT, handler, make_email, queued_id, send, stored

RAW = make_email(message_id="<same@example.com>")
TRACE = (
    b"Received: from mx2.example.net (mx2.example.net [198.51.100.4])\r\n"
    b"\tby mx1.shop.example (Postfix) with ESMTPS id 4QZ\r\n"
    b"\tfor <support@shop.example>; Tue, 24 Nov 2026 09:01:00 +0000 (UTC)\r\n"
    b"Return-Path: <ann@example.com>\r\n"
    b"Delivered-To: support@shop.example\r\n"
    b"X-Original-To: support@shop.example\r\n"
)


@pytest.fixture
async def smtp_without_filer(spool: Spool) -> AsyncIterator[tuple[int, Spool]]:
    """An SMTP server that spools and acknowledges; nothing files what it accepts."""
    async with smtp_server(handler(spool), host="127.0.0.1", port=0,
                           max_message_bytes=MAX_BYTES) as server:  # fmt: skip
        yield server.sockets[0].getsockname()[1], spool


def email(raw: bytes) -> NewEmail:
    return parse_email(raw, support=SUPPORT, received_at=utcnow())


def test_trace_fields_with_their_folded_lines_do_not_change_the_content() -> None:
    assert content_sha256(TRACE + RAW) == content_sha256(RAW)


def test_line_ends_and_the_final_line_end_do_not_change_the_content() -> None:
    as_mbox_keeps_it = RAW.replace(b"\r\n", b"\n").rstrip(b"\n")
    assert content_sha256(as_mbox_keeps_it) == content_sha256(RAW)


def test_a_trace_field_in_the_body_is_content() -> None:
    in_body = RAW + b"Received: quoted by the customer\r\n"
    assert content_sha256(in_body) != content_sha256(RAW)


def test_a_changed_header_other_than_trace_is_another_message() -> None:
    assert content_sha256(RAW.replace(b"Subject: Where", b"Subject: When")) != content_sha256(RAW)


def test_a_message_without_header_body_separator_is_hashed_whole() -> None:
    headers_only = b"From: ann@example.com\r\nSubject: hi\r\nReceived: by x; now\r\n"
    without_trace = headers_only.replace(b"Received: by x; now\r\n", b"")
    assert content_sha256(headers_only) == content_sha256(without_trace)
    assert content_sha256(b"just a line\r\n") != content_sha256(b"another line\r\n")


async def test_a_retransmission_through_other_relays_is_stored_once(database: Database) -> None:
    one, two = await file_emails([email(RAW), email(TRACE + RAW)])
    assert (one.duplicate, two.duplicate) == (False, True)
    assert two.message_id == one.message_id
    assert await Message.count() == 1


async def test_the_same_message_id_with_other_content_is_a_message_of_its_own(
    database: Database,
) -> None:
    other = make_email(message_id="<same@example.com>", sender="bob@example.org",
                       subject="Mail merge", body="Dear Bob")  # fmt: skip
    one, two = await file_emails([email(RAW), email(other)])
    assert not one.duplicate and not two.duplicate
    assert one.message_id != two.message_id
    assert await Message.count() == 2
    # Neither joins the other's thread for sharing a label: it is someone else's mail.
    assert one.conversation_id != two.conversation_id
    assert {m.shares_message_id async for m in Message.find()} == {True}


async def test_a_message_with_a_unique_message_id_is_not_marked_as_sharing_it(
    database: Database,
) -> None:
    filed = await file_email(email(RAW))
    message = await Message.get(filed.message_id)
    assert message is not None and not message.shares_message_id


async def test_a_reply_to_a_shared_message_id_still_joins_a_thread(database: Database) -> None:
    await file_email(email(RAW))
    await file_email(email(make_email(message_id="<same@example.com>", body="Other text")))
    reply = make_email(sender="maya@shop.example", to="ann@example.com",
                       message_id="<r@shop.example>", in_reply_to="<same@example.com>")  # fmt: skip
    filed = await file_email(email(reply))
    parents = await Message.find({"message_id_header": "same@example.com"}).to_list()
    assert filed.conversation_id in {m.conversation_id for m in parents}
    conversation = await Conversation.get(filed.conversation_id)
    assert conversation is not None and conversation.message_count == 2


async def test_two_deliveries_racing_on_two_connections_store_the_message_once(
    database: Database,
) -> None:
    a, b = PydanticObjectId(), PydanticObjectId()
    results = await asyncio.gather(
        file_emails([email(RAW).with_id(a)]), file_emails([email(TRACE + RAW).with_id(b)])
    )
    assert sorted(r.duplicate for [r] in results) == [False, True]
    assert await Message.count() == 1
    for acknowledged in (a, b):
        found = await filed_message(acknowledged)
        assert found is not None and found.id == results[0][0].message_id


async def test_every_250_of_a_message_sent_three_times_resolves_to_it(
    smtp: int, spool: Spool
) -> None:
    replies = [(await send(smtp, raw))[1] for raw in (RAW, TRACE + RAW, RAW)]
    first = await stored(replies[0])
    assert await spool.empty(within=20)
    for reply in replies:
        found = await filed_message(PydanticObjectId(queued_id(reply)))
        assert found is not None and found.id == first.id
    assert await Message.count() == 1


async def test_the_250_of_a_retransmission_names_the_stored_message_and_spools_nothing(
    smtp: int, spool: Spool
) -> None:
    first = await stored((await send(smtp, RAW))[1])
    assert await spool.empty(within=20)
    code, reply = await send(smtp, TRACE + RAW)
    assert (code, queued_id(reply)) == (250, str(first.id))
    assert await SpoolEntry.count() == 0 and spool.backlog == 0  # nothing written again
    assert await Message.count() == 1


async def test_the_same_message_id_with_other_content_gets_a_250_of_its_own(
    smtp: int, spool: Spool
) -> None:
    first = await stored((await send(smtp, RAW))[1])
    other = make_email(message_id="<same@example.com>", body="Another text")
    second = await stored((await send(smtp, other))[1])
    assert second.id != first.id
    assert await Message.count() == 2


async def test_a_retransmission_while_the_first_copy_waits_in_the_spool_resolves_to_it(
    smtp_without_filer: tuple[int, Spool],
) -> None:
    # The first copy is not filed yet: the second is spooled under an id of its own, which
    # becomes an alias of the first once both are filed.
    port, spool = smtp_without_filer
    first = queued_id((await send(port, RAW))[1])
    again = queued_id((await send(port, TRACE + RAW))[1])
    assert again != first and await SpoolEntry.count() == 2
    filer = Filer(spool, support=SUPPORT)
    while await filer.file_once():
        pass
    for acknowledged in (first, again):
        found = await filed_message(PydanticObjectId(acknowledged))
        assert found is not None and str(found.id) == first
    assert await Message.count() == 1


async def test_mail_archived_over_smtp_and_then_imported_from_a_mailbox_is_stored_once(
    smtp: int, spool: Spool, tmp_path: Path
) -> None:
    delivered = await stored((await send(smtp, RAW))[1])
    box = mailbox.mbox(tmp_path / "support.mbox")  # LF line ends, a Delivered-To on top
    box.add(b"Delivered-To: support@shop.example\n" + RAW.replace(b"\r\n", b"\n"))
    box.close()
    with closing(open_mailbox(MailboxKind.MBOX, tmp_path / "support.mbox")) as opened:
        report = await import_messages(raw_messages(opened), file_emails=file_emails,
                                       support=SUPPORT)  # fmt: skip
    assert (report.stored, report.duplicates) == (0, 1)
    assert [m.id for m in await Message.find_all().to_list()] == [delivered.id]
