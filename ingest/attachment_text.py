"""The searchable text of attachments: plain-text files as they are, PDFs through pypdf.

Bounded per message (the raw blob keeps everything): a hostile or huge attachment costs at
most ``MAX_PAGES`` pages and ``MAX_BYTES`` of text, and one that does not read adds nothing.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import replace

from pypdf import PdfReader

from store.blobs import NewAttachment
from store.chat import ChatBatch

MAX_BYTES = 256 * 1024  # of UTF-8 text per message, all attachments together
MAX_PAGES = 50
_TEXT_TYPES = ("text/plain", "text/csv", "text/markdown")
_TEXT_SUFFIXES = (".txt", ".csv", ".log", ".md")

# pypdf reports damaged files through logging; its messages may quote the file's contents.
logging.getLogger("pypdf").setLevel(logging.CRITICAL)


def kind_of(content_type: str | None, filename: str | None) -> str | None:
    """``"pdf"``, ``"text"``, or None for attachments whose text is not indexed."""
    kind = (content_type or "").split(";")[0].strip().lower()
    name = (filename or "").lower()
    if kind == "application/pdf" or name.endswith(".pdf"):
        return "pdf"
    if kind in _TEXT_TYPES or name.endswith(_TEXT_SUFFIXES):
        return "text"
    return None


def searchable_text(attachments: Iterable[NewAttachment]) -> str:
    """What search indexes of the attachments' contents (PDF and plain text, bounded)."""
    return text_of((a.content_type, a.filename, a.data) for a in attachments)


# Extracts the searchable text of each message's attachments (in the parsing processes, in
# serve: ``Parsers.attachment_texts``).
Extract = Callable[[Sequence[Sequence[NewAttachment]]], Awaitable[list[str]]]


async def extracted_here(attachments: Sequence[Sequence[NewAttachment]]) -> list[str]:
    """``Extract`` in this process (tools and tests; serve extracts in its parsing processes)."""
    return [searchable_text(each) for each in attachments]


async def with_attachment_text(
    batches: Sequence[ChatBatch], extract: Extract = extracted_here
) -> list[ChatBatch]:
    """``batches`` with the searchable text of each message's attachments (once they are
    fetched: a link has no contents yet). Only the attachments whose text is indexed go to
    ``extract``: an image's megabytes are not copied to a parsing process for nothing."""
    texts = iter(await extract([indexed for b in batches for m in b.messages
                                if (indexed := _indexed(m.attachments))]))  # fmt: skip
    return [
        replace(b, messages=[
            replace(m, attachment_text=next(texts)) if _indexed(m.attachments) else m
            for m in b.messages
        ])
        for b in batches
    ]  # fmt: skip


def _indexed(attachments: Sequence[NewAttachment]) -> list[NewAttachment]:
    return [a for a in attachments if kind_of(a.content_type, a.filename) is not None]


def text_of(attachments: Iterable[tuple[str | None, str | None, bytes]]) -> str:
    """The text of ``(content_type, filename, data)`` attachments, at most MAX_BYTES."""
    parts: list[str] = []
    budget = MAX_BYTES
    for content_type, filename, data in attachments:
        if budget <= 0:
            break
        kind = kind_of(content_type, filename)
        if kind == "text":
            text = data[: budget * 2].decode("utf-8", "replace")
        elif kind == "pdf":
            text = _pdf_text(data, budget)
        else:
            continue
        piece = _cut(text, budget)
        budget -= len(piece.encode("utf-8", "surrogatepass")) + 1
        parts.append(piece)
    return "\n".join(p for p in parts if p)


def _pdf_text(data: bytes, budget: int) -> str:
    pages: list[str] = []
    size = 0
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        for page in reader.pages[:MAX_PAGES]:
            text = page.extract_text() or ""
            pages.append(text)
            size += len(text)
            if size >= budget:
                break
    except Exception:
        return "\n".join(pages)
    return "\n".join(pages)


def _cut(text: str, limit: int) -> str:
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= limit:
        return text.encode("utf-8", "replace").decode("utf-8")
    return data[:limit].decode("utf-8", "ignore")
