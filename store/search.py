"""Search: the words a message is indexed under (and, later, the query grammar)."""

from __future__ import annotations

import re
import unicodedata

_WORD = re.compile(r"\w+", re.UNICODE)

# A message is indexed under at most this many distinct words: it bounds the index entries
# of one document (a 10 MB log pasted into a chat would otherwise add a million keys).
MAX_TERMS_PER_MESSAGE = 2000
MAX_TERM_LENGTH = 64


def normalise(word: str) -> str:
    """Case- and accent-insensitive form of a word: ``Réfund`` and ``refund`` are one term."""
    decomposed = unicodedata.normalize("NFKD", word.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def words_of(text: str) -> list[str]:
    """The normalised words of ``text`` in order, as search will match them."""
    return [normalise(match) for match in _WORD.findall(text)]


def terms_of(*texts: str | None) -> list[str]:
    """The distinct index terms of a message's subject and body, in order of first use."""
    seen: dict[str, None] = {}
    for text in texts:
        for word in words_of(text or ""):
            if len(word) <= MAX_TERM_LENGTH:
                seen.setdefault(word, None)
                if len(seen) >= MAX_TERMS_PER_MESSAGE:
                    return list(seen)
    return list(seen)
