"""Importing an existing support mailbox (mbox or Maildir) through the same path as SMTP."""

from __future__ import annotations

import logging
import mailbox
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from ingest.mime import SupportSide, parse_email
from store.documents import utcnow
from store.messages import Filed, NewEmail

log = logging.getLogger("archive.import")


class MailboxKind(StrEnum):
    MBOX = "mbox"
    MAILDIR = "maildir"


@dataclass
class ImportReport:
    total: int = 0
    stored: int = 0
    duplicates: int = 0
    unparsed: int = 0  # stored raw, with the parse error noted


def open_mailbox(kind: MailboxKind, path: Path) -> mailbox.Mailbox[mailbox.Message]:
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if kind is MailboxKind.MAILDIR:
        if not (path / "cur").is_dir() and not (path / "new").is_dir():
            raise ValueError(f"{path} is not a Maildir (no cur/ or new/ inside)")
        return mailbox.Maildir(path, factory=None, create=False)
    if not path.is_file():
        raise ValueError(f"{path} is not an mbox file")
    return mailbox.mbox(path, factory=None, create=False)


def raw_messages(box: mailbox.Mailbox[mailbox.Message]) -> Iterator[bytes]:
    """The bytes of each message as the mailbox holds them (an mbox's From_ line excluded)."""
    for key in box.iterkeys():
        yield box.get_bytes(key)


async def import_messages(
    messages: Iterator[bytes],
    *,
    file_email: Callable[[NewEmail], Awaitable[Filed]],
    support: SupportSide,
    account_id: str | None = None,
    on_progress: Callable[[], object] = lambda: None,
) -> ImportReport:
    """File every message; safe to run again (what is already stored is skipped)."""
    report = ImportReport()
    for raw in messages:
        email = parse_email(raw, support=support, received_at=utcnow(), source="import")
        if account_id is not None:
            email = email.for_account(account_id)
        filed = await file_email(email)
        report.total += 1
        report.duplicates += filed.duplicate
        report.stored += not filed.duplicate
        report.unparsed += email.parse_error is not None and not filed.duplicate
        on_progress()
    log.info(
        "imported %d messages: %d stored, %d already there, %d kept raw with a parse error",
        report.total, report.stored, report.duplicates, report.unparsed,
    )  # fmt: skip
    return report
