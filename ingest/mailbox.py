"""Importing an existing support mailbox (mbox or Maildir) through the same path as SMTP."""

from __future__ import annotations

import asyncio
import logging
import mailbox
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from ingest.mime import SupportSide
from ingest.parsing import ParserLost, Parsers, ToParse
from store.documents import utcnow
from store.errors import is_transient
from store.messages import Filed, NewEmail

log = logging.getLogger("archive.import")

# Messages parsed and filed together: large enough that round trips stop mattering, small
# enough that a batch of large messages stays a few megabytes in memory.
IMPORT_BATCH = 200


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
    file_emails: Callable[[Sequence[NewEmail]], Awaitable[list[Filed]]],
    support: SupportSide,
    account_id: str | None = None,
    on_progress: Callable[[int], object] = lambda done: None,
    batch: int = IMPORT_BATCH,
    parsers: Parsers | None = None,
) -> ImportReport:
    """File every message, a batch at a time (a handful of round trips per batch, as the
    SMTP filer does); safe to run again (what is already stored is skipped). A batch that
    cannot be filed is filed one message at a time, so that the failing message stops the
    import with the ones before it stored.

    With ``parsers`` running worker processes, the next batch is parsed there while this one
    is filed: reading, parsing and filing overlap on two cores."""
    parsers = parsers or Parsers(0)
    report = ImportReport()
    chunks = _chunks(messages, batch)
    filing: list[NewEmail] = []
    while True:
        chunk = next(chunks, None)
        parsing = (
            asyncio.ensure_future(_parse(parsers, chunk, support=support)) if chunk else None
        )  # fmt: skip
        try:
            if filing:
                await _file_batch(filing, file_emails, report, on_progress)
        except BaseException:
            if parsing is not None:
                parsing.cancel()
                await asyncio.wait([parsing])
            raise
        if parsing is None:
            break
        parsed = await parsing
        filing = [e.for_account(account_id) for e in parsed] if account_id is not None else parsed
    log.info(
        "imported %d messages: %d stored, %d already there, %d kept raw with a parse error",
        report.total, report.stored, report.duplicates, report.unparsed,
    )  # fmt: skip
    return report


async def _parse(parsers: Parsers, chunk: list[bytes], *, support: SupportSide) -> list[NewEmail]:
    received_at = utcnow()
    try:
        return await parsers.parse_many([ToParse(raw, received_at) for raw in chunk],
                                        support=support, source="import")  # fmt: skip
    except ParserLost:
        raise ParserLost(
            "a parsing process died: run the import again (what is stored is skipped)"
        ) from None


def _chunks(messages: Iterator[bytes], size: int) -> Iterator[list[bytes]]:
    chunk: list[bytes] = []
    for raw in messages:
        chunk.append(raw)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


async def _file_batch(
    emails: list[NewEmail],
    file_emails: Callable[[Sequence[NewEmail]], Awaitable[list[Filed]]],
    report: ImportReport,
    on_progress: Callable[[int], object],
) -> None:
    try:
        filed = await file_emails(emails)
    except Exception as exc:
        if is_transient(exc):
            raise
        filed = []
        for email in emails:
            filed += await file_emails([email])
    for email, one in zip(emails, filed, strict=True):
        report.total += 1
        report.duplicates += one.duplicate
        report.stored += not one.duplicate
        report.unparsed += email.parse_error is not None and not one.duplicate
    on_progress(len(emails))
