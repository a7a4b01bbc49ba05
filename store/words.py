"""How text splits into words: one definition for the search index, the query syntax and the
audit trail's redaction, so that a word redacted is a word search would have matched."""

from __future__ import annotations

import functools
import re
import unicodedata

WORD = re.compile(r"\w+", re.UNICODE)


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
        return WORD.findall(text.lower())
    return [normalise(match) for match in WORD.findall(text)]
