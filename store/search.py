"""Full-text search over subjects and bodies: index terms, the query grammar, ranking, snippets.

The index is ``Message.search_terms`` (normalised distinct words) under two multikey indexes,
``(search_terms, sent_at)`` and ``(account_id, search_terms, sent_at)``, so that global and
account-scoped queries both read only matching entries, already in newest-first order.
(MongoDB's ``$text`` allows one text index per collection and cannot do both; see issue 5.)
"""

from __future__ import annotations

import functools
import html
import math
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from beanie import PydanticObjectId

from store.documents import Channel, Message, utcnow
from store.paging import before, newest_first

_WORD = re.compile(r"\w+", re.UNICODE)
_TOKEN = re.compile(r'(-?)"([^"]*)"?|(-?)(\S+)')

# A message is indexed under at most this many distinct words: it bounds the index entries
# of one document (a 10 MB log pasted into a chat would otherwise add a million keys).
MAX_TERMS_PER_MESSAGE = 2000
MAX_TERM_LENGTH = 64
MAX_QUERY_TERMS = 16
# Relevance ranks the most recent matches; beyond them, results are newest-first anyway.
RELEVANCE_WINDOW = 500
# With phrases to check, at most this many candidates are read for one page; the cursor then
# continues where the scan stopped.
SCAN_BUDGET = 5000
SNIPPET_CHARS = 200


@functools.lru_cache(maxsize=65536)
def normalise(word: str) -> str:
    """Case- and accent-insensitive form of a word: ``Réfund`` and ``refund`` are one term."""
    if word.isascii():
        return word.lower()
    decomposed = unicodedata.normalize("NFKD", word.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def words_of(text: str) -> list[str]:
    """The normalised words of ``text`` in order, as search matches them."""
    if text.isascii():  # the common case, about 20 times faster: no word needs decomposing
        return _WORD.findall(text.lower())
    return [normalise(match) for match in _WORD.findall(text)]


def terms_of(*texts: str | None) -> list[str]:
    """The distinct index terms of a message's subject and body, in order of first use."""
    terms = dict.fromkeys(
        word for text in texts for word in words_of(text or "") if len(word) <= MAX_TERM_LENGTH
    )
    return list(terms)[:MAX_TERMS_PER_MESSAGE]


# --- the query grammar ----------------------------------------------------------------------


class QueryError(ValueError):
    """The query cannot be run as written (the message says why)."""


@dataclass(frozen=True)
class TextQuery:
    """``refund "order 1234" -invoice``: words, "phrases" and -exclusions (words or phrases)."""

    words: tuple[str, ...] = ()
    phrases: tuple[tuple[str, ...], ...] = ()
    excluded: tuple[str, ...] = ()
    excluded_phrases: tuple[tuple[str, ...], ...] = ()

    @property
    def required(self) -> list[str]:
        """Every term a match must contain, longest (likely rarest) first; ``search`` puts the
        rarest first by counting (see ``rarest_first``)."""
        terms = set(self.words) | {w for p in self.phrases for w in p}
        return sorted(terms, key=lambda t: (-len(t), t))

    @property
    def empty(self) -> bool:
        return not (self.words or self.phrases or self.excluded or self.excluded_phrases)

    @property
    def highlighted(self) -> frozenset[str]:
        return frozenset(self.required)


def parse_query(q: str) -> TextQuery:
    words: list[str] = []
    phrases: list[tuple[str, ...]] = []
    excluded: list[str] = []
    excluded_phrases: list[tuple[str, ...]] = []
    for match in _TOKEN.finditer(q):
        negative = bool(match[1] or match[3])
        quoted = match[2] is not None
        parts = tuple(words_of(match[2] if quoted else match[4]))
        if not parts:
            continue
        if len(parts) == 1:
            (excluded if negative else words).append(parts[0])
        else:
            (excluded_phrases if negative else phrases).append(parts)
    query = TextQuery(
        tuple(dict.fromkeys(words)),
        tuple(dict.fromkeys(phrases)),
        tuple(dict.fromkeys(excluded)),
        tuple(dict.fromkeys(excluded_phrases)),
    )
    if len(query.required) + len(query.excluded) > MAX_QUERY_TERMS:
        raise QueryError(f"at most {MAX_QUERY_TERMS} words per query")
    if any(len(t) > MAX_TERM_LENGTH for t in (*query.required, *query.excluded)):
        raise QueryError(f"words are at most {MAX_TERM_LENGTH} characters")
    return query


# --- running a search -----------------------------------------------------------------------


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
    """Where a page ends. Newest: the last hit's key. Relevance: the window's upper bound (the
    newest candidate when the search began, so later arrivals do not shift pages) and the
    offset in the ranked window."""

    order: Order
    key: tuple[datetime, PydanticObjectId] | None = None
    offset: int = 0
    # Relevance: only messages collected up to the first page's time are ranked, so arrivals
    # cannot shift the offsets of later pages.
    snapshot: datetime | None = None


@dataclass(frozen=True)
class Hit:
    message: Message
    snippet: str
    score: float = 0.0


@dataclass
class Results:
    hits: list[Hit] = field(default_factory=list)
    next: Position | None = None


def mongo_filter(text: TextQuery, filters: Filters) -> dict[str, Any]:
    """The MongoDB query for the index part of a search. Every value is a plain string,
    datetime or bool taken from parsed input: nothing a client sends becomes an operator."""
    query: dict[str, Any] = {}
    terms: dict[str, Any] = {}
    if text.required:
        terms["$all"] = text.required
    if text.excluded:
        terms["$nin"] = list(text.excluded)
    if terms:
        query["search_terms"] = terms
    if filters.account_id is not None:
        query["account_id"] = filters.account_id
    if filters.channel is not None:
        query["channel"] = filters.channel.value
    if filters.participant is not None:
        query["participants"] = filters.participant
    if filters.since is not None or filters.until is not None:
        span: dict[str, datetime] = {}
        if filters.since is not None:
            span["$gte"] = filters.since
        if filters.until is not None:
            span["$lt"] = filters.until
        query["sent_at"] = span
    if filters.has_attachments is not None:
        query["has_attachments"] = filters.has_attachments
    if filters.hide_restricted:
        query["restricted"] = {"$ne": True}
    return query


async def search(
    *, text: TextQuery, filters: Filters, order: Order, limit: int, after: Position | None
) -> Results:
    base = mongo_filter(text, filters)
    if len(text.required) > 1:
        base["search_terms"]["$all"] = await rarest_first(text.required, filters.account_id)
    if order is Order.NEWEST or not text.required:
        return await _newest(text, base, limit=limit, after=after)
    return await _by_relevance(text, base, limit=limit, after=after)


# Counting a term's messages stops here: beyond it, a term is common, and which of two common
# terms bounds the scan matters little (both match often).
RARITY_CAP = 2000


async def rarest_first(terms: list[str], account_id: str | None) -> list[str]:
    """``terms`` with the one in fewest messages first (in scope), for MongoDB bounds the
    index scan of ``$all`` by its first term: "refund 8812" reads the few messages with 8812,
    not every message with "refund". Each count reads at most RARITY_CAP index keys."""
    collection = Message.get_pymongo_collection()
    scope = {} if account_id is None else {"account_id": account_id}
    index = "account_terms_newest" if account_id is not None else "terms_newest"
    counts = {
        term: await collection.count_documents(
            {**scope, "search_terms": term}, limit=RARITY_CAP, hint=index
        )
        for term in terms
    }
    return sorted(terms, key=lambda t: (counts[t], -len(t), t))


# What ranking, phrase checks, snippets and hits need; the rest of a message stays in the
# database. Candidates stay plain dicts: only the page's hits become ``Message`` models.
_CANDIDATE_FIELDS = {
    name: 1
    for name in ("conversation_id", "account_id", "channel", "direction", "dedup_key",
                 "subject", "author", "sent_at", "text")
}  # fmt: skip


@dataclass(frozen=True)
class _Candidate:
    doc: dict[str, Any]

    @property
    def key(self) -> tuple[datetime, PydanticObjectId]:
        return (self.doc["sent_at"], self.doc["_id"])

    @property
    def subject(self) -> str:
        return str(self.doc.get("subject") or "")

    @property
    def text(self) -> str:
        return str(self.doc.get("text") or "")

    def hit(self, text: TextQuery, score: float = 0.0) -> Hit:
        message = Message.model_validate(self.doc)
        return Hit(message, snippet(message, text), score)


def _candidates(query: dict[str, Any], *, limit: int) -> Any:
    cursor = Message.get_pymongo_collection().find(query, _CANDIDATE_FIELDS)
    return cursor.sort(newest_first("sent_at")).limit(limit)


async def _newest(
    text: TextQuery, base: dict[str, Any], *, limit: int, after: Position | None
) -> Results:
    """Newest first, keyset-paginated; phrases are checked on the candidates as they stream."""
    query = (
        base
        if after is None or after.key is None
        else {"$and": [base, before("sent_at", after.key)]}
    )
    results = Results()
    matched: list[_Candidate] = []
    scanned = 0
    last: _Candidate | None = None
    async for doc in _candidates(query, limit=SCAN_BUDGET):
        scanned += 1
        last = _Candidate(doc)
        if not _matches_phrases(text, last):
            continue
        if len(matched) == limit:
            results.next = Position(Order.NEWEST, matched[-1].key)
            break
        matched.append(last)
    else:
        if scanned == SCAN_BUDGET and last is not None:  # more may match beyond the budget
            results.next = Position(Order.NEWEST, last.key)
    results.hits = [c.hit(text) for c in matched]
    return results


async def _by_relevance(
    text: TextQuery, base: dict[str, Any], *, limit: int, after: Position | None
) -> Results:
    upper = after.key if after is not None else None
    snapshot = after.snapshot if after is not None and after.snapshot else utcnow()
    # What arrived after the first page stays out of the later ones: by arrival time (a
    # message's collected_at may be older than its arrival: imported mail, chat backfill).
    arrived = {"$or": [{"archived_at": {"$lte": snapshot}},
                       {"archived_at": None, "collected_at": {"$lte": snapshot}}]}  # fmt: skip
    query = {"$and": [base, arrived]}
    if upper is not None:
        query["$and"].append(_at_or_before(upper))
    window = [
        candidate
        async for doc in _candidates(query, limit=RELEVANCE_WINDOW)
        if _matches_phrases(text, candidate := _Candidate(doc))
    ]
    if not window:
        return Results()
    upper = upper or window[0].key
    ranked = _rank(text, window)
    offset = after.offset if after is not None else 0
    page = ranked[offset : offset + limit]
    results = Results(hits=[c.hit(text, score) for score, c in page])
    if offset + limit < len(ranked):
        results.next = Position(Order.RELEVANCE, upper, offset + limit, snapshot)
    return results


def _at_or_before(key: tuple[datetime, PydanticObjectId]) -> dict[str, Any]:
    at, ident = key
    return {"$or": [{"sent_at": {"$lt": at}}, {"sent_at": at, "_id": {"$lte": ident}}]}


def _rank(text: TextQuery, window: list[_Candidate]) -> list[tuple[float, _Candidate]]:
    """tf-idf over the window, subject words counting double."""
    documents = [(c, Counter(words_of(c.subject) * 2 + words_of(c.text[:20_000]))) for c in window]
    terms = text.required
    frequency = {t: sum(1 for _, counts in documents if counts[t]) for t in terms}
    scored = []
    for candidate, counts in documents:
        score = sum(
            (1 + math.log(counts[t])) * math.log(1 + len(documents) / frequency[t])
            for t in terms
            if counts[t]
        )
        scored.append((round(score, 6), candidate))
    # Window order is newest first, and sort is stable: ties stay newest first.
    scored.sort(key=lambda pair: -pair[0])
    return scored


def _matches_phrases(text: TextQuery, candidate: _Candidate) -> bool:
    if not text.phrases and not text.excluded_phrases:
        return True
    # A separator that is no word, so that no phrase spans the subject and the body.
    words = [*words_of(candidate.subject), "\x00", *words_of(candidate.text)]
    return all(_contains(words, p) for p in text.phrases) and not any(
        _contains(words, p) for p in text.excluded_phrases
    )


def _contains(words: list[str], phrase: tuple[str, ...]) -> bool:
    n = len(phrase)
    first = phrase[0]
    return any(
        words[i] == first and tuple(words[i : i + n]) == phrase for i in range(len(words) - n + 1)
    )


# --- snippets -------------------------------------------------------------------------------


def snippet(message: Message, text: TextQuery, *, width: int = SNIPPET_CHARS) -> str:
    """HTML-escaped text around the first match, matches wrapped in ``<mark>``: safe to show
    in a page as it is. Without a match in the body, the start of the body."""
    body = message.text or message.subject or ""
    wanted = text.highlighted
    first = next((m for m in _WORD.finditer(body) if normalise(m[0]) in wanted), None)
    start = max(0, first.start() - width // 3) if first else 0
    if start:
        space = body.rfind(" ", 0, start)
        start = space + 1 if space >= start - 20 else start
    end = min(len(body), start + width)
    piece = body[start:end]
    out = ["…" if start else ""]
    position = 0
    for match in _WORD.finditer(piece):
        if normalise(match[0]) in wanted:
            out.append(html.escape(piece[position : match.start()]))
            out.append(f"<mark>{html.escape(match[0])}</mark>")
            position = match.end()
    out.append(html.escape(piece[position:]))
    out.append("…" if end < len(body) else "")
    return " ".join("".join(out).split())
