"""The maximum age counts from collection: for imported or late-forwarded mail, when the
company first received it (its earliest trustworthy Received, else its Date), not when the
archive did."""

from __future__ import annotations

import mailbox
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ingest.mailbox import MailboxKind, import_messages, open_mailbox, raw_messages
from ingest.mime import parse_email
from retention.rules import RetentionPolicy
from retention.sweep import sweep
from store.database import Database
from store.documents import Conversation, Message, utcnow
from store.messages import file_emails
from store.spool import Spool
from tests.mail import SUPPORT, make_email, send, stored

MAX_AGE = timedelta(days=1095)
POLICY = RetentionPolicy(grace=timedelta(days=180), max_age=MAX_AGE, secret_key=b"k" * 32,
                         blob_quiet_period=timedelta(0))  # fmt: skip
ARRIVED = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
FIRST_HOP = datetime(2023, 3, 14, 9, 15, 2, tzinfo=UTC)


def received(when: str, by: str = "mx1.shop.example") -> bytes:
    """A Received field folded over three lines, as Postfix writes it."""
    return (
        f"Received: from mail.example.com (mail.example.com [192.0.2.10])\r\n"
        f"\tby {by} (Postfix) with ESMTPS id 4Q9XkT2bQ1z9s\r\n"
        f"\tfor <support@shop.example>; {when}\r\n"
    ).encode()


MAIL_OF_2023 = (
    received("Tue, 14 Mar 2023 09:15:40 +0000", by="mx2.shop.example")
    + received("Tue, 14 Mar 2023 10:15:02 +0100")  # the first hop, in another zone
    + make_email(message_id="<2023@example.com>", date="Tue, 14 Mar 2023 09:14:58 +0000")
)


def collected(raw: bytes, arrived: datetime = ARRIVED) -> datetime:
    email = parse_email(raw, support=SUPPORT, received_at=arrived)
    return email.first_received_at


def test_the_earliest_received_field_is_when_the_company_first_received_it() -> None:
    assert collected(MAIL_OF_2023) == FIRST_HOP


def test_without_a_received_field_the_date_counts() -> None:
    raw = make_email(date="Tue, 14 Mar 2023 09:14:58 +0000")
    assert collected(raw) == datetime(2023, 3, 14, 9, 14, 58, tzinfo=UTC)


@pytest.mark.parametrize(
    "stamp",
    ["Mon, 1 Jan 1979 00:00:00 +0000", "not a date at all", "Fri, 1 Jan 2100 00:00:00 +0000"],
    ids=["before-1990", "unparsable", "future"],
)
def test_an_absurd_received_time_is_ignored(stamp: str) -> None:
    raw = received(stamp) + make_email(date="Tue, 14 Mar 2023 09:14:58 +0000")
    assert collected(raw) == datetime(2023, 3, 14, 9, 14, 58, tzinfo=UTC)


@pytest.mark.parametrize(
    "date", ["Fri, 1 Jan 2100 00:00:00 +0000", "Thu, 1 Jan 1970 00:00:00 +0000", "garbage"]
)
def test_without_a_plausible_time_the_arrival_counts(date: str) -> None:
    assert collected(make_email(date=date)) == ARRIVED


def test_a_relay_clock_a_little_ahead_never_makes_it_later_than_its_arrival() -> None:
    raw = received("Wed, 25 Nov 2026 09:03:00 +0000") + make_email(date="Tue, 1 Jan 2019 0:0 +0")
    # The relay's field is trusted over the sender's stale clock, and capped at the arrival.
    assert collected(raw) == ARRIVED


async def test_mail_forwarded_late_over_smtp_keeps_its_first_reception_and_its_arrival(
    smtp: int, spool: Spool
) -> None:
    message = await stored((await send(smtp, MAIL_OF_2023))[1])
    assert message.collected_at == FIRST_HOP
    assert message.archived_at is not None
    assert utcnow() - message.archived_at < timedelta(hours=1)


async def import_mbox(path: Path, raws: list[bytes]) -> None:
    box = mailbox.mbox(path)
    for raw in raws:
        box.add(raw)
    box.close()
    with closing(open_mailbox(MailboxKind.MBOX, path)) as opened:
        await import_messages(raw_messages(opened), file_emails=file_emails, support=SUPPORT)


async def test_imported_mail_of_2023_is_purged_3_years_after_2023_not_after_its_import(
    database: Database, tmp_path: Path
) -> None:
    await import_mbox(tmp_path / "2023.mbox", [MAIL_OF_2023])
    [message] = await Message.find_all().to_list()
    assert message.collected_at == FIRST_HOP
    assert message.archived_at is not None and message.archived_at > FIRST_HOP + MAX_AGE

    await sweep(database, now=FIRST_HOP + MAX_AGE - timedelta(minutes=1), policy=POLICY)
    assert await Message.get(message.id) is not None
    await sweep(database, now=FIRST_HOP + MAX_AGE + timedelta(minutes=1), policy=POLICY)
    assert await Message.get(message.id) is None


async def test_a_conversation_is_collected_when_its_earliest_message_was(
    database: Database, tmp_path: Path
) -> None:
    await import_mbox(tmp_path / "recent.mbox", [make_email(message_id="<q@example.com>")])
    old_reply = received("Tue, 14 Mar 2023 09:15:02 +0000") + make_email(
        message_id="<old-reply@example.com>", in_reply_to="<q@example.com>"
    )
    await import_mbox(tmp_path / "old.mbox", [old_reply])
    [conversation] = await Conversation.find_all().to_list()
    assert conversation.message_count == 2
    assert conversation.collected_at == FIRST_HOP
