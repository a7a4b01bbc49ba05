"""Importing an existing mailbox (mbox, Maildir) through the SMTP path, in process and by CLI."""

from __future__ import annotations

import asyncio
import mailbox
import os
import sys
import uuid
from contextlib import closing
from pathlib import Path

import pytest

from ingest.mailbox import (
    IMPORT_BATCH,
    ImportReport,
    MailboxKind,
    import_messages,
    open_mailbox,
    raw_messages,
)
from ingest.mime import SupportSide
from ingest.parsing import Parsers
from store.blobs import read_blob
from store.database import Database, open_database
from store.documents import Account, Conversation, Direction, Message
from store.embedded import EmbeddedMongo
from store.messages import file_emails
from tests.mail import make_email

THREAD = [
    make_email(message_id="<m1@example.com>"),
    make_email(
        sender="maya@shop.example", to="ann@example.com", message_id="<m2@shop.example>",
        in_reply_to="<m1@example.com>", references="<m1@example.com>", body="On its way.",
    ),
    make_email(message_id="<m3@example.com>", subject="Another question"),
]  # fmt: skip


def write_mbox(path: Path) -> Path:
    box = mailbox.mbox(path)
    for raw in THREAD:
        box.add(raw)
    box.close()
    return path


def write_maildir(path: Path) -> Path:
    box = mailbox.Maildir(path)
    for raw in THREAD:
        box.add(raw)
    return path


async def run_import(
    path: Path,
    kind: MailboxKind,
    account_id: str | None = None,
    *,
    parsers: Parsers | None = None,
    batch: int = IMPORT_BATCH,
) -> ImportReport:
    with closing(open_mailbox(kind, path)) as box:
        return await import_messages(
            raw_messages(box),
            file_emails=file_emails,
            support=SupportSide.parse(["@shop.example"]),
            account_id=account_id,
            parsers=parsers,
            batch=batch,
        )


async def test_an_mbox_is_imported_threaded_and_byte_exact(
    database: Database, tmp_path: Path
) -> None:
    report = await run_import(write_mbox(tmp_path / "support.mbox"), MailboxKind.MBOX)
    assert (report.total, report.stored, report.duplicates) == (3, 3, 0)
    first = await Message.find_one(Message.message_id_header == "m1@example.com")
    reply = await Message.find_one(Message.message_id_header == "m2@shop.example")
    assert first is not None and reply is not None
    assert reply.conversation_id == first.conversation_id
    assert await Conversation.count() == 2
    assert first.raw is not None
    assert await read_blob(first.raw.sha256) == THREAD[0]
    assert first.source == "import"


async def test_an_import_parsed_in_a_worker_process_while_filing_threads_across_batches(
    database: Database, tmp_path: Path
) -> None:
    # One message per batch: the reply is parsed in the worker while its question is filed,
    # and still finds it (batches are filed in order).
    parsers = Parsers(1)
    try:
        report = await run_import(write_mbox(tmp_path / "support.mbox"), MailboxKind.MBOX,
                                  "acct-9", parsers=parsers, batch=1)  # fmt: skip
    finally:
        parsers.close()
    assert parsers.started == 1
    assert (report.total, report.stored, report.duplicates) == (3, 3, 0)
    first = await Message.find_one(Message.message_id_header == "m1@example.com")
    reply = await Message.find_one(Message.message_id_header == "m2@shop.example")
    assert first is not None and reply is not None
    assert reply.conversation_id == first.conversation_id
    assert reply.direction is Direction.OUTBOUND
    assert {m.account_id async for m in Message.find()} == {"acct-9"}
    assert first.raw is not None and await read_blob(first.raw.sha256) == THREAD[0]


async def test_a_maildir_imported_twice_is_stored_once(database: Database, tmp_path: Path) -> None:
    path = write_maildir(tmp_path / "Maildir")
    await run_import(path, MailboxKind.MAILDIR)
    again = await run_import(path, MailboxKind.MAILDIR)
    assert (again.stored, again.duplicates) == (0, 3)
    assert await Message.count() == 3


async def test_an_import_for_one_account_links_every_new_conversation(
    database: Database, tmp_path: Path
) -> None:
    await run_import(write_maildir(tmp_path / "Maildir"), MailboxKind.MAILDIR, "acct-7")
    assert {m.account_id async for m in Message.find()} == {"acct-7"}
    assert await Account.get("acct-7") is not None


def test_a_directory_that_is_not_a_maildir_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a Maildir"):
        open_mailbox(MailboxKind.MAILDIR, tmp_path)


@pytest.mark.slow
async def test_the_import_command_reports_what_it_did(mongo: EmbeddedMongo, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARCHIVE_")}
    env |= {
        "ARCHIVE_MONGODB_URI": mongo.uri,
        "ARCHIVE_DB_NAME": f"test_{uuid.uuid4().hex[:12]}",
        "ARCHIVE_DATA_DIR": str(tmp_path),
        "ARCHIVE_SUPPORT_ADDRESSES": "@shop.example",
    }
    mbox = write_mbox(tmp_path / "support.mbox")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service.cli", "import", "mbox", str(mbox),
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    assert "3 messages read: 3 stored, 0 already in the archive" in out.decode()


@pytest.mark.slow
async def test_the_import_command_files_mail_with_the_shared_config_as_smtp_does(
    mongo: EmbeddedMongo, tmp_path: Path
) -> None:
    config = tmp_path / "support-archive.env"
    config.write_text("ARCHIVE_SUPPORT_ADDRESSES=@shop.example\n")
    db_name = f"test_{uuid.uuid4().hex[:12]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARCHIVE_")}
    env |= {"ARCHIVE_MONGODB_URI": mongo.uri, "ARCHIVE_DB_NAME": db_name,
            "ARCHIVE_DATA_DIR": str(tmp_path), "ARCHIVE_CONFIG": str(config)}  # fmt: skip
    mbox = write_mbox(tmp_path / "support.mbox")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service.cli", "import", "mbox", str(mbox),
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    async with open_database(mongo.uri, name=db_name):
        reply = await Message.find_one(Message.message_id_header == "m2@shop.example")
    assert reply is not None and reply.direction is Direction.OUTBOUND
