"""The term arrays of earlier versions (before tantivy), compact, as a peer for bench/search.py.

What ``store/search.py`` did up to 6f8c20a (``git show 6f8c20a:store/search.py``): each message
carries ``search_terms``, its distinct normalised words (at most 2,000), under two multikey
indexes, (terms, sent_at desc) and (account, terms, sent_at desc). A query is ``$all`` of its
words with the rarest first (counted, up to 2,000 keys a word), ``$nin`` of its exclusions;
newest first is index order, with phrases checked on the candidates as they stream; relevance
is tf-idf over the 500 newest matches. Only the first page is kept here (no cursors).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel

from search.query import MAX_TERM_LENGTH
from store.words import words_of

MAX_TERMS_PER_MESSAGE = 2000
RELEVANCE_WINDOW = 500
SCAN_BUDGET = 5000
RARITY_CAP = 2000
# Not the old names: open_database drops those as retired indexes.
GLOBAL_INDEX = "bench_terms_newest"
ACCOUNT_INDEX = "bench_account_terms_newest"
INDEXES = [
    IndexModel([("search_terms", ASCENDING), ("sent_at", DESCENDING)], name=GLOBAL_INDEX),
    IndexModel(
        [("account_id", ASCENDING), ("search_terms", ASCENDING), ("sent_at", DESCENDING)],
        name=ACCOUNT_INDEX,
    ),
]
NEWEST_FIRST = [("sent_at", DESCENDING), ("_id", DESCENDING)]
_TOKEN = re.compile(r'(-?)"([^"]*)"?|(-?)(\S+)')


def terms_of(*texts: str | None) -> list[str]:
    """The distinct index terms of a message's subject and body, in order of first use."""
    terms = dict.fromkeys(
        word for text in texts for word in words_of(text or "") if len(word) <= MAX_TERM_LENGTH
    )
    return list(terms)[:MAX_TERMS_PER_MESSAGE]


@dataclass(frozen=True)
class TextQuery:
    """``refund "order 1234" -invoice``: words, "phrases" and -exclusions."""

    words: tuple[str, ...] = ()
    phrases: tuple[tuple[str, ...], ...] = ()
    excluded: tuple[str, ...] = ()

    @property
    def required(self) -> list[str]:
        terms = set(self.words) | {w for p in self.phrases for w in p}
        return sorted(terms, key=lambda t: (-len(t), t))


def parse(q: str) -> TextQuery:
    """The old grammar (no operators, no OR): words, quoted phrases, -exclusions."""
    words: list[str] = []
    phrases: list[tuple[str, ...]] = []
    excluded: list[str] = []
    for match in _TOKEN.finditer(q):
        negative = bool(match[1] or match[3])
        parts = tuple(words_of(match[2] if match[2] is not None else match[4]))
        if len(parts) == 1:
            (excluded if negative else words).append(parts[0])
        elif parts and not negative:
            phrases.append(parts)
    return TextQuery(tuple(dict.fromkeys(words)), tuple(dict.fromkeys(phrases)),
                     tuple(dict.fromkeys(excluded)))  # fmt: skip


async def search(
    collection: Any,
    text: TextQuery,
    *,
    account_id: str | None,
    participant: str | None,
    since: datetime | None,
    newest: bool,
    limit: int,
    fields: dict[str, int],
) -> list[dict[str, Any]]:
    """The first page of hits (raw documents with ``fields``), as the old search ran it."""
    query: dict[str, Any] = {"restricted": {"$ne": True}}
    terms: dict[str, Any] = {}
    if text.required:
        terms["$all"] = await rarest_first(collection, text.required, account_id)
    if text.excluded:
        terms["$nin"] = list(text.excluded)
    if terms:
        query["search_terms"] = terms
    if account_id is not None:
        query["account_id"] = account_id
    if participant is not None:
        query["participants"] = participant
    if since is not None:
        query["sent_at"] = {"$gte": since}
    wanted = {**fields, "subject": 1, "text": 1, "sent_at": 1}
    if newest or not text.required:
        return await _newest(collection, text, query, limit=limit, fields=wanted)
    return await _by_relevance(collection, text, query, limit=limit, fields=wanted)


async def rarest_first(collection: Any, terms: list[str], account_id: str | None) -> list[str]:
    """MongoDB bounds the index scan of ``$all`` by its first term: put the rarest there."""
    if len(terms) < 2:
        return terms
    scope = {} if account_id is None else {"account_id": account_id}
    index = GLOBAL_INDEX if account_id is None else ACCOUNT_INDEX
    counts = {}
    for term in terms:
        query = {**scope, "search_terms": term}
        counts[term] = await collection.count_documents(query, limit=RARITY_CAP, hint=index)
    return sorted(terms, key=lambda t: (counts[t], -len(t), t))


async def _newest(
    collection: Any, text: TextQuery, query: dict[str, Any], *, limit: int, fields: dict[str, int]
) -> list[dict[str, Any]]:
    found = []
    cursor = collection.find(query, fields).sort(NEWEST_FIRST).limit(SCAN_BUDGET)
    async for doc in cursor:
        if _has_phrases(text, doc):
            found.append(doc)
            if len(found) == limit:
                break
    await cursor.close()
    return found


async def _by_relevance(
    collection: Any, text: TextQuery, query: dict[str, Any], *, limit: int, fields: dict[str, int]
) -> list[dict[str, Any]]:
    # What arrived after the search began stays out (the old cursors relied on it).
    now = datetime.now(UTC)
    arrived = {"$or": [{"archived_at": {"$lte": now}},
                       {"archived_at": None, "collected_at": {"$lte": now}}]}  # fmt: skip
    cursor = collection.find({"$and": [query, arrived]}, fields)
    cursor = cursor.sort(NEWEST_FIRST).limit(RELEVANCE_WINDOW)
    window = [doc async for doc in cursor if _has_phrases(text, doc)]
    return [doc for _, doc in _rank(text, window)[:limit]]


def _rank(text: TextQuery, window: list[dict[str, Any]]) -> list[tuple[float, dict[str, Any]]]:
    """tf-idf over the window, subject words counting double; ties stay newest first."""
    counted = [
        (doc, Counter(words_of(doc.get("subject") or "") * 2
                      + words_of((doc.get("text") or "")[:20_000])))
        for doc in window
    ]  # fmt: skip
    frequency = {t: sum(1 for _, counts in counted if counts[t]) for t in text.required}
    scored = [
        (sum((1 + math.log(counts[t])) * math.log(1 + len(counted) / frequency[t])
             for t in text.required if counts[t]), doc)
        for doc, counts in counted
    ]  # fmt: skip
    scored.sort(key=lambda pair: -pair[0])
    return scored


def _has_phrases(text: TextQuery, doc: dict[str, Any]) -> bool:
    if not text.phrases:
        return True
    # A separator that is no word, so that no phrase spans the subject and the body.
    words = [*words_of(doc.get("subject") or ""), "\x00", *words_of(doc.get("text") or "")]
    return all(_contains(words, p) for p in text.phrases)


def _contains(words: list[str], phrase: tuple[str, ...]) -> bool:
    n = len(phrase)
    return any(
        words[i] == phrase[0] and tuple(words[i : i + n]) == phrase
        for i in range(len(words) - n + 1)
    )
