"""Email over SMTP: a real aiosmtpd server on a socket, real clients, a real mongod."""

from __future__ import annotations

import asyncio
import logging
import smtplib
import ssl
from datetime import timedelta
from pathlib import Path

import aiosmtplib
import pytest
import trustme
from beanie import PydanticObjectId

from store.accounts import register_account
from store.blobs import read_blob
from store.database import open_database
from store.documents import Account, Blob, Conversation, Direction, Message, SpoolEntry
from store.embedded import EmbeddedMongo
from store.reading import filed_message
from store.spool import Spool
from tests.mail import MAX_BYTES, make_email, queued_id, running, send, stored


async def test_a_plain_message_is_stored_byte_identical_and_the_250_names_it(smtp: int) -> None:
    raw = make_email()
    code, reply = await send(smtp, raw)
    assert code == 250
    assert reply.startswith("2.0.0 Ok: queued as ")
    message = await stored(reply)
    assert message.raw is not None
    assert await read_blob(message.raw.sha256) == raw
    assert message.subject == "Where is my order?"
    assert message.text.strip() == "Hello, my order 1234 has not arrived."
    assert message.message_id_header == "order-1234@example.com"
    assert message.sender is not None and message.sender.email == "ann@example.com"
    assert message.envelope is not None
    assert message.envelope.mail_from == "ann@example.com"
    assert message.envelope.rcpt_tos == ["support@shop.example"]
    assert message.envelope.client_address == "127.0.0.1"


async def test_the_stdlib_smtp_client_is_served_too(smtp: int) -> None:
    def deliver() -> tuple[int, bytes]:
        with smtplib.SMTP("127.0.0.1", smtp) as client:
            client.ehlo("mx.shop.example")
            client.mail("ann@example.com")
            client.rcpt("support@shop.example")
            return client.data(make_email())

    code, reply = await asyncio.to_thread(deliver)
    assert code == 250
    assert (await stored(reply.decode())).envelope.helo == "mx.shop.example"  # type: ignore[union-attr]


async def test_multipart_alternative_keeps_both_text_and_html(smtp: int) -> None:
    raw = make_email(body="Plain words.", html="<p>Rich <b>words</b>.</p>")
    message = await stored((await send(smtp, raw))[1])
    assert message.text.strip() == "Plain words."
    assert message.html is not None and "<b>words</b>" in message.html
    assert message.attachments == []


async def test_an_html_only_message_gets_its_text_from_the_html(smtp: int) -> None:
    raw = (
        b"From: ann@example.com\r\nTo: support@shop.example\r\nSubject: html\r\n"
        b"Message-ID: <html-only@example.com>\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/html; charset=utf-8\r\n\r\n"
        b"<html><style>p {color: red}</style><body><p>First line</p><p>Second &amp; last</p>"
        b"</body></html>\r\n"
    )
    message = await stored((await send(smtp, raw))[1])
    assert message.text == "First line\nSecond & last"
    assert "color" not in message.text


async def test_attachments_are_blobs_and_the_same_bytes_are_stored_once(smtp: int) -> None:
    pdf = b"%PDF-1.4 fake invoice " * 50
    first = make_email(attachments=[("invoice.pdf", "application/pdf", pdf)])
    second = make_email(
        message_id="<other@example.com>", attachments=[("copy.pdf", "application/pdf", pdf)]
    )
    one = await stored((await send(smtp, first))[1])
    two = await stored((await send(smtp, second))[1])

    [attachment] = one.attachments
    assert (attachment.filename, attachment.content_type) == ("invoice.pdf", "application/pdf")
    assert attachment.size == len(pdf)
    assert one.has_attachments
    assert await read_blob(attachment.sha256) == pdf
    assert two.attachments[0].sha256 == attachment.sha256
    assert await Blob.find(Blob.id == attachment.sha256).count() == 1


async def test_inline_images_are_attachments_marked_inline(smtp: int) -> None:
    raw = (
        b"From: ann@example.com\r\nTo: support@shop.example\r\nSubject: screenshot\r\n"
        b"Message-ID: <inline@example.com>\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/related; boundary="REL"\r\n\r\n'
        b"--REL\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
        b'<p>See <img src="cid:shot1@example.com"></p>\r\n'
        b"--REL\r\nContent-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n"
        b"Content-ID: <shot1@example.com>\r\n\r\niVBORw0KGgoAAAANSUhEUg==\r\n"
        b"--REL--\r\n"
    )
    message = await stored((await send(smtp, raw))[1])
    [image] = message.attachments
    assert image.inline
    assert image.content_id == "shot1@example.com"
    assert image.content_type == "image/png"
    assert message.text == "See"


async def test_a_non_utf8_charset_is_decoded(smtp: int) -> None:
    raw = (
        b"From: ann@example.com\r\nTo: support@shop.example\r\nSubject: charset\r\n"
        b"Message-ID: <latin1@example.com>\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        b"Je n'ai pas re\xe7u ma commande, d\xe9j\xe0 pay\xe9e.\r\n"
    )
    message = await stored((await send(smtp, raw))[1])
    assert message.text.strip() == "Je n'ai pas reçu ma commande, déjà payée."


async def test_rfc2047_encoded_headers_are_decoded(smtp: int) -> None:
    raw = (
        b"From: =?UTF-8?B?SsO8cmdlbiBNw7xsbGVy?= <jurgen@example.de>\r\n"
        b"To: support@shop.example\r\nSubject: =?ISO-8859-1?Q?R=FCckerstattung_f=FCr?= 1234\r\n"
        b"Message-ID: <rfc2047@example.de>\r\n\r\nHallo\r\n"
    )
    message = await stored((await send(smtp, raw, sender="jurgen@example.de"))[1])
    assert message.subject == "Rückerstattung für 1234"
    assert message.sender is not None and message.sender.name == "Jürgen Müller"


async def test_a_reply_joins_the_thread_of_its_parent(smtp: int) -> None:
    question = await stored((await send(smtp, make_email(message_id="<q1@example.com>")))[1])
    answer_raw = make_email(
        sender="Maya <maya@shop.example>",
        to="ann@example.com",
        subject="Re: Where is my order?",
        body="It ships today.",
        message_id="<a1@shop.example>",
        in_reply_to="<q1@example.com>",
        references="<q1@example.com>",
    )
    answer = await stored((await send(smtp, answer_raw, sender="maya@shop.example"))[1])
    unrelated = await stored((await send(smtp, make_email(message_id="<new@example.com>")))[1])

    assert answer.conversation_id == question.conversation_id
    assert unrelated.conversation_id != question.conversation_id
    assert answer.direction is Direction.OUTBOUND
    assert question.direction is Direction.INBOUND
    conversation = await Conversation.get(question.conversation_id)
    assert conversation is not None and conversation.message_count == 2


async def test_a_reply_found_only_through_references_joins_the_thread(smtp: int) -> None:
    root = await stored((await send(smtp, make_email(message_id="<root@example.com>")))[1])
    reply = make_email(
        message_id="<r2@example.com>",
        in_reply_to="<missing-middle@example.com>",
        references="<root@example.com> <missing-middle@example.com>",
    )
    assert (await stored((await send(smtp, reply))[1])).conversation_id == root.conversation_id


async def test_a_retransmission_is_acknowledged_again_and_stored_once(
    smtp: int, spool: Spool
) -> None:
    raw = make_email()
    first = await stored((await send(smtp, raw))[1])
    code, reply = await send(smtp, raw)
    assert code == 250
    assert await spool.empty(within=20)
    assert [m.id for m in await Message.find_all().to_list()] == [first.id]
    assert await Conversation.count() == 1
    # The second 250 named its own id: it resolves to the message stored the first time.
    again = await filed_message(PydanticObjectId(queued_id(reply)))
    assert again is not None and again.id == first.id


async def test_a_retransmission_without_message_id_is_stored_once(smtp: int, spool: Spool) -> None:
    raw = make_email(message_id=None)
    first = await stored((await send(smtp, raw))[1])
    assert (await send(smtp, raw))[0] == 250
    assert await spool.empty(within=20)
    assert [m.id for m in await Message.find_all().to_list()] == [first.id]


async def test_a_burst_of_concurrent_deliveries_is_stored_once_each(
    smtp: int, spool: Spool
) -> None:
    # Deliveries that arrive together are spooled by shared writes and filed in batches.
    raws = [make_email(message_id=f"<burst-{n}@example.com>") for n in range(80)]
    gate = asyncio.Semaphore(40)  # under the per-client connection limit

    async def deliver(raw: bytes) -> int:
        async with gate:
            return (await send(smtp, raw))[0]

    codes = await asyncio.gather(*(deliver(raw) for raw in raws + raws[:20]))
    assert set(codes) == {250}
    assert await spool.empty(within=30)
    assert await SpoolEntry.count() == 0
    assert await Message.count() == 80
    assert sorted(m.message_id_header or "" for m in await Message.find_all().to_list()) == sorted(
        f"burst-{n}@example.com" for n in range(80)
    )


async def test_an_oversized_message_is_refused_with_552_and_nothing_is_stored(smtp: int) -> None:
    raw = make_email(body="x" * (MAX_BYTES + 10))
    code, reply = await send(smtp, raw)
    assert code == 552
    assert reply.startswith("5.3.4")
    assert await SpoolEntry.count() == 0
    assert await Message.count() == 0


async def test_size_is_announced_and_a_declared_oversize_is_refused_before_data(smtp: int) -> None:
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=smtp, start_tls=False) as client:
        await client.ehlo()
        assert client.supports_extension("size")
        assert client.esmtp_extensions["size"] == str(MAX_BYTES)
        response = await client.execute_command(
            f"MAIL FROM:<ann@example.com> SIZE={MAX_BYTES + 1}".encode()
        )
    assert response.code == 552
    assert response.message.startswith("5.3.4")


async def test_starttls_is_offered_and_works_with_a_test_certificate(spool: Spool) -> None:
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    authority.configure_trust(client_context)

    async with running(spool, tls=server_context) as port:
        client = aiosmtplib.SMTP(
            hostname="127.0.0.1", port=port, start_tls=False, tls_context=client_context
        )
        async with client:
            await client.ehlo()
            assert client.supports_extension("starttls")
            await client.starttls()
            _, reply = await client.sendmail(
                "ann@example.com", ["support@shop.example"], make_email()
            )
    message = await stored(reply)
    assert message.envelope is not None and message.envelope.tls


async def test_mail_from_a_known_customer_is_linked_to_the_account(smtp: int) -> None:
    await register_account(account_id="acct-ann", emails=["Ann@Example.com"], name="Ann")
    message = await stored((await send(smtp, make_email()))[1])
    assert message.account_id == "acct-ann"
    conversation = await Conversation.get(message.conversation_id)
    assert conversation is not None and conversation.account_id == "acct-ann"


async def test_an_agent_reply_is_linked_by_its_recipient(smtp: int) -> None:
    await register_account(account_id="acct-bob", emails=["bob@example.org"], name=None)
    raw = make_email(sender="maya@shop.example", to="Bob <bob@example.org>", message_id="<o@s>")
    message = await stored((await send(smtp, raw, sender="maya@shop.example"))[1])
    assert message.direction is Direction.OUTBOUND
    assert message.account_id == "acct-bob"


async def test_unlinked_mail_is_linked_when_its_account_is_registered(smtp: int) -> None:
    message = await stored((await send(smtp, make_email()))[1])
    assert message.account_id is None
    await register_account(account_id="acct-late", emails=["ann@example.com"], name=None)
    relinked = await Message.get(message.id)
    conversation = await Conversation.get(message.conversation_id)
    assert relinked is not None and relinked.account_id == "acct-late"
    assert conversation is not None and conversation.account_id == "acct-late"
    assert await Account.count() == 1


@pytest.mark.slow
async def test_with_the_database_stopped_mid_session_mail_gets_451_then_is_stored_on_retry(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    mongo = EmbeddedMongo(tmp_path)
    restarted = EmbeddedMongo(tmp_path, port=mongo.port)  # same data, same port
    await mongo.start()
    try:
        async with (
            open_database(mongo.uri, name="faults", timeout=timedelta(seconds=2)),
            running(Spool()) as port,
            aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False) as client,
        ):
            _, reply = await client.sendmail("ann@example.com", ["s@shop.example"], make_email())
            assert reply.startswith("2.0.0")

            await mongo.stop()
            retry = make_email(message_id="<while-down@example.com>")
            with pytest.raises(aiosmtplib.SMTPDataError) as refused:
                await client.sendmail("ann@example.com", ["s@shop.example"], retry)
            assert refused.value.code == 451
            assert refused.value.message.startswith("4.3.0")
            # Answered as a known temporary failure, not by the last-resort exception handler.
            assert "database unavailable" in caplog.text
            assert not [r for r in caplog.records if r.levelno >= logging.ERROR]

            await restarted.start()
            _, reply = await client.sendmail("ann@example.com", ["s@shop.example"], retry)
            assert reply.startswith("2.0.0")
            assert (await stored(reply)).message_id_header == "while-down@example.com"
            assert await Message.count() == 2
    finally:
        await restarted.stop()
        await mongo.stop()


@pytest.mark.slow
async def test_a_message_larger_than_a_mongodb_document_is_kept_whole(spool: Spool) -> None:
    body = ("Log line of a very chatty device, repeated. " * 24 + "\n") * 20_000  # ~21 MB
    raw = make_email(body=body, message_id="<huge@example.com>")
    assert len(raw) > 16 * 1024 * 1024
    async with running(spool, max_message_bytes=26_214_400) as port:
        code, reply = await send(port, raw)
        assert code == 250
        message = await stored(reply)
    assert message.raw is not None
    assert await read_blob(message.raw.sha256) == raw
    assert message.body_truncated
    assert message.text.startswith("Log line of a very chatty device")
