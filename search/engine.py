"""Running a search: the parsed query and the filters through the engine, hits read back from
MongoDB, snippets.

The engine (``search.index``) ranks by BM25 over every match, or orders newest first.
MongoDB has the last word: a hit is shown only if its message is still there and, for an
agent, not restricted, whatever the index says at that moment.
"""

from __future__ import annotations

import asyncio
import functools
import html
import re
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, ParamSpec, TypeVar

import tantivy
from beanie import PydanticObjectId

from search import index as engine
from search.index import SearchIndex
from search.query import Query, QueryError, parse_query
from store.documents import Author, Channel, Message, utcnow
from store.words import WORD, normalise

__all__ = [
    "HIT_FIELDS", "Filters", "Hit", "Order", "Position", "Query", "QueryError", "Results",
    "Summary", "parse_query", "search", "snippet", "spans",
]  # fmt: skip

P = ParamSpec("P")
R = TypeVar("R")

SNIPPET_CHARS = 200
# A relevance cursor reads its later pages from the index snapshot of its first page, kept
# this long (and at most this many): pages neither shift nor repeat as messages arrive.
SNAPSHOT_SECONDS = 600.0
MAX_SNAPSHOTS = 256
MAX_OFFSET = 10_000


class Order(StrEnum):
    RELEVANCE = "relevance"
    NEWEST = "newest"


@dataclass(frozen=True)
class Filters:
    account_id: str | None = None
    channel: Channel | None = None
    participant: str | None = None  # lowercased address
    since: datetime | None = None
    until: datetime | None = None
    has_attachments: bool | None = None
    hide_restricted: bool = True  # content of deleted accounts (agents may not see it)


@dataclass(frozen=True)
class Position:
    """Where a page ends. Newest: the last hit's sort key. Relevance: the offset into the
    ranking, the first page's time (what arrived later stays out) and its index snapshot."""

    order: Order
    key: int | None = None
    offset: int = 0
    snapshot: datetime | None = None
    pinned: str | None = None


@dataclass(frozen=True, slots=True)
class Summary:
    """What a hit shows of its message. Built from a projection without validating a whole
    ``Message`` (that was a third of an account-scoped search)."""

    id: PydanticObjectId
    conversation_id: PydanticObjectId
    account_id: str | None
    channel: Channel
    subject: str | None
    author: Author
    sent_at: datetime

    @classmethod
    def of(cls, doc: Mapping[str, Any]) -> Summary:
        return cls(id=doc["_id"], conversation_id=doc["conversation_id"],
                   account_id=doc.get("account_id"), channel=Channel(doc["channel"]),
                   subject=doc.get("subject"), author=Author.model_validate(doc["author"]),
                   sent_at=doc["sent_at"])  # fmt: skip


@dataclass(frozen=True)
class Hit:
    message: Summary
    snippet: str


@dataclass
class Results:
    hits: list[Hit] = field(default_factory=list)
    next: Position | None = None
    total: int = 0


# What hits and snippets need; the rest of a message (HTML, history) stays in the database.
HIT_FIELDS = {
    name: 1
    for name in ("conversation_id", "account_id", "channel", "subject", "author", "sent_at",
                 "text", "restricted")
}  # fmt: skip


@dataclass
class Snapshots:
    """Index searchers pinned for the later pages of relevance searches."""

    pinned: dict[str, tuple[float, tantivy.Searcher]] = field(default_factory=dict)

    def pin(self, searcher: tantivy.Searcher) -> str:
        now = time.monotonic()
        while self.pinned:  # oldest first, as pinned: drop what expired or is over the cap
            oldest, (at, _) = next(iter(self.pinned.items()))
            if now - at <= SNAPSHOT_SECONDS and len(self.pinned) < MAX_SNAPSHOTS:
                break
            del self.pinned[oldest]
        token = secrets.token_hex(8)
        self.pinned[token] = (now, searcher)
        return token

    def get(self, token: str | None) -> tantivy.Searcher | None:
        found = self.pinned.get(token or "")
        if found is None or time.monotonic() - found[0] > SNAPSHOT_SECONDS:
            return None
        return found[1]


SNAPSHOTS = Snapshots()


def _filters(filters: Filters) -> tuple[list[tantivy.Query], list[tantivy.Query]]:
    must: list[tantivy.Query] = []
    must_not: list[tantivy.Query] = []
    if filters.account_id is not None:
        must.append(engine.term("account", filters.account_id))
    if filters.channel is not None:
        must.append(engine.term("channel", filters.channel.value))
    if filters.participant is not None:
        must.append(engine.term("participant", filters.participant))
    if filters.since is not None or filters.until is not None:
        must.append(engine.sent_between(filters.since, filters.until))
    if filters.has_attachments is not None:
        (must if filters.has_attachments else must_not).append(engine.term("attached", True))
    if filters.hide_restricted:
        # Purpose limitation inside the engine: no query can reach a deleted account's content.
        must_not.append(engine.term("restricted", True))
    return must, must_not


async def search(
    *,
    index: SearchIndex,
    query: Query,
    filters: Filters,
    order: Order,
    limit: int,
    after: Position | None,
) -> Results:
    must, must_not = _filters(filters)
    if query.tree is not None:
        must.insert(0, engine.Compiler().compile(query.tree))
    if order is Order.NEWEST:
        return await _newest(index, must, must_not, query, filters, limit=limit, after=after)
    return await _by_relevance(index, must, must_not, query, filters, limit=limit, after=after)


async def _newest(
    index: SearchIndex,
    must: list[tantivy.Query],
    must_not: list[tantivy.Query],
    query: Query,
    filters: Filters,
    *,
    limit: int,
    after: Position | None,
) -> Results:
    """Newest first, keyset pages: a page continues below the last key shown, so arrivals
    (newer or backdated) never repeat or hide a hit."""
    total_query = engine.all_of(must, must_not)
    paged = total_query
    if after is not None and after.key is not None:
        paged = engine.all_of([*must, engine.key_below(after.key)], must_not)
    searcher = index.searcher()
    page, total = await _run(filters, _page_and_total, searcher, paged, total_query,
                             limit=limit, newest=True)  # fmt: skip
    results = Results(total=total, hits=await _hits(page.ids, query, filters))
    if page.total > limit:
        results.next = Position(Order.NEWEST, key=page.keys[-1])
    return results


async def _by_relevance(
    index: SearchIndex,
    must: list[tantivy.Query],
    must_not: list[tantivy.Query],
    query: Query,
    filters: Filters,
    *,
    limit: int,
    after: Position | None,
) -> Results:
    snapshot = after.snapshot if after is not None and after.snapshot else utcnow()
    searcher = SNAPSHOTS.get(after.pinned) if after is not None else None
    pinned = after.pinned if searcher is not None and after is not None else None
    bounded = engine.all_of(must, must_not)
    if searcher is None:
        searcher = index.searcher()
        pinned = SNAPSHOTS.pin(searcher)
        if after is not None:
            # A later page whose snapshot is gone (expired, another process): the current
            # index, without what arrived after the first page.
            bounded = engine.all_of([*must, engine.arrived_by(snapshot)], must_not)
    offset = after.offset if after is not None else 0
    page = await _run(filters, engine.run_search, searcher, bounded, limit=limit,
                      offset=offset, newest=False)  # fmt: skip
    results = Results(total=page.total, hits=await _hits(page.ids, query, filters))
    if offset + limit < min(page.total, MAX_OFFSET):
        results.next = Position(Order.RELEVANCE, offset=offset + limit, snapshot=snapshot,
                                pinned=pinned)  # fmt: skip
    return results


async def _run(filters: Filters, work: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
    """The engine's part of a search. Within one account it is small (a quarter of a
    millisecond at 1M messages), less than a thread's hand-off costs, so it runs in the event
    loop; across accounts (up to tens of milliseconds) in a thread, leaving the loop free."""
    if filters.account_id is not None:
        return work(*args, **kwargs)
    return await asyncio.to_thread(work, *args, **kwargs)


def _page_and_total(
    searcher: tantivy.Searcher,
    paged: tantivy.Query,
    total_query: tantivy.Query,
    *,
    limit: int,
    newest: bool,
) -> tuple[engine.Page, int]:
    page = engine.run_search(searcher, paged, limit=limit, offset=0, newest=newest)
    if paged is total_query:
        return page, page.total
    return page, engine.matches(searcher.search(total_query, 1, count=True))


async def _hits(ids: list[str], query: Query, filters: Filters) -> list[Hit]:
    """The page's messages, read back from MongoDB in the engine's order; what is gone, or
    restricted for an agent, is left out (the index may lag behind by a moment)."""
    if not ids:
        return []
    wanted = [PydanticObjectId(i) for i in ids]
    found = {
        doc["_id"]: doc
        async for doc in Message.get_pymongo_collection().find({"_id": {"$in": wanted}},
                                                               HIT_FIELDS)
    }  # fmt: skip
    hits = []
    for ident in wanted:
        doc = found.get(ident)
        if doc is None or (filters.hide_restricted and doc.get("restricted")):
            continue
        body = doc.get("text") or doc.get("subject") or ""
        hits.append(Hit(Summary.of(doc), snippet(body, query.highlighted)))
    return hits


# --- snippets -------------------------------------------------------------------------------


def snippet(body: str, wanted: frozenset[str], *, width: int = SNIPPET_CHARS) -> str:
    """HTML-escaped text around the first match, matches wrapped in ``<mark>``: safe to show
    in a page as it is. Without a match in the body, the start of the body."""
    first = next(spans(body, wanted), None)
    start = max(0, first[0] - width // 3) if first else 0
    if start:
        space = body.rfind(" ", 0, start)
        start = space + 1 if space >= start - 20 else start
    end = min(len(body), start + width)
    piece = body[start:end]
    out = ["…" if start else ""]
    position = 0
    for begins, ends in spans(piece, wanted):
        out.append(html.escape(piece[position:begins]))
        out.append(f"<mark>{html.escape(piece[begins:ends])}</mark>")
        position = ends
    out.append(html.escape(piece[position:]))
    out.append("…" if end < len(body) else "")
    return " ".join("".join(out).split())


def spans(text: str, wanted: frozenset[str]) -> Iterator[tuple[int, int]]:
    """Where the words of ``text`` that the search matched are, as (start, end): the words
    whose normal form is wanted. ASCII text (the common case) is matched by one regular
    expression over its lowercase form, about ten times faster than normalising each word."""
    if not text.isascii():
        yield from (m.span() for m in WORD.finditer(text) if normalise(m[0]) in wanted)
        return
    pattern = _ascii_pattern(wanted)
    if pattern is not None:
        yield from (m.span() for m in pattern.finditer(text.lower()))


@functools.lru_cache(maxsize=256)
def _ascii_pattern(wanted: frozenset[str]) -> re.Pattern[str] | None:
    """Whole words only: no word character on either side, as ``WORD`` splits them."""
    terms = sorted((w for w in wanted if w.isascii()), key=len, reverse=True)
    if not terms:
        return None
    return re.compile(r"(?<!\w)(?:" + "|".join(map(re.escape, terms)) + r")(?!\w)")
