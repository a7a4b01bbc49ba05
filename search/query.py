"""The search grammar: what an agent types, parsed into a tree the search engine runs.

``refund "order 1234" -invoice (kettle OR toaster) from:ann@example.com after:2024-01-01``

- words must all match (in the subject, the body, attachment names or attachment text);
- ``"a phrase"`` matches its words together and in order;
- ``-word``, ``-"a phrase"`` and ``-(...)`` exclude;
- ``OR`` (upper case) between two terms matches either; it binds tighter than the implicit
  AND, as in Gmail: ``a b OR c`` is ``a (b OR c)``; parentheses group;
- operators: ``from:``, ``to:``, ``subject:`` (words or a quoted phrase in that field),
  ``account:``, ``channel:email|chat``, ``has:attachment``, ``is:internal``, ``before:`` and
  ``after:`` (a date, ``2024-03-01``, or a time with its zone, ``2024-03-01T12:00:00Z``;
  ``before:`` excludes its moment, ``after:`` includes it).

A word that is not a known operator followed by a colon (``http://x``, ``note:``) is text.
Anything that cannot be run as written raises ``QueryError`` with the position (0-based, in
characters) of the offending part. Nothing here knows the engine: ``search.index`` turns
the tree into engine queries, and no user input becomes a field name there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import StrEnum

from store.words import words_of

MAX_TERM_LENGTH = 64
MAX_QUERY_TERMS = 32
MAX_DEPTH = 8


class QueryError(ValueError):
    """The query cannot be run as written: ``str()`` says why and where."""

    def __init__(self, reason: str, position: int) -> None:
        super().__init__(f"{reason} (at position {position})")
        self.reason = reason
        self.position = position


class TextField(StrEnum):
    """Where words are looked for. ``ANY`` is the default: subject, body and attachments."""

    ANY = "any"
    FROM = "from"
    TO = "to"
    SUBJECT = "subject"


# --- the tree -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Words:
    """Words in a field; more than one must appear together, in order (a phrase)."""

    field: TextField
    words: tuple[str, ...]


@dataclass(frozen=True)
class Account:
    account_id: str


@dataclass(frozen=True)
class ChannelIs:
    channel: str  # "email" or "chat"


@dataclass(frozen=True)
class Flag:
    name: str  # "has_attachments" or "internal"


@dataclass(frozen=True)
class Sent:
    """``after <= sent_at < before``; either side may be open."""

    after: datetime | None = None
    before: datetime | None = None


@dataclass(frozen=True)
class Not:
    node: Node


@dataclass(frozen=True)
class All:
    nodes: tuple[Node, ...]


@dataclass(frozen=True)
class Any:
    nodes: tuple[Node, ...]


Node = Words | Account | ChannelIs | Flag | Sent | Not | All | Any


@dataclass(frozen=True)
class Query:
    """A parsed query: its tree (None when empty: filters only) and the words to highlight."""

    tree: Node | None
    highlighted: frozenset[str]

    @property
    def empty(self) -> bool:
        return self.tree is None

    @property
    def has_text(self) -> bool:
        """Whether some words rank the results (else newest first is the natural order)."""
        return bool(self.highlighted)


# --- tokens ---------------------------------------------------------------------------------

OPERATORS = frozenset(
    {"from", "to", "subject", "account", "channel", "has", "is", "before", "after"}
)
_TOKEN = re.compile(
    r"""(?P<space>\s+)
      | (?P<open>\()
      | (?P<close>\))
      | (?P<quote>"[^"]*"?)
      | (?P<word>[^\s()"]+)""",
    re.VERBOSE,
)
_OPERATOR = re.compile(r"^(-?)([a-z]+):(.*)$", re.DOTALL)


@dataclass(frozen=True)
class _Token:
    kind: str  # open, close, quote, word, or, end
    text: str
    at: int
    negated: bool = False
    operator: str | None = None
    value: str = ""  # an operator's value; a quote's inside
    # An operator whose value is a quoted phrase (``subject:"a b"``) is one token.


def _tokens(q: str) -> list[_Token]:
    tokens: list[_Token] = []
    # ``-"a phrase"`` and ``from:"Ann Smith"``: a prefix waiting for the quote right after it.
    pending: tuple[str | None, int, bool] | None = None
    for m in _TOKEN.finditer(q):
        kind, text, at = m.lastgroup or "", m[0], m.start()
        if pending is not None:
            name, start, negated = pending
            pending = None
            tokens.append(_quote_token(text, start, negated, name, q))
            continue
        if kind == "space":
            continue
        if kind == "quote":
            tokens.append(_quote_token(text, at, False, None, q))
        elif kind == "word":
            token = _word_token(text, at)
            if _next_is_quote(q, m.end()) and (token.text == "-" or (
                    token.operator is not None and token.value == "")):  # fmt: skip
                pending = (token.operator, at, token.negated or token.text == "-")
                continue
            tokens.append(token)
        else:
            tokens.append(_Token(kind, text, at))
    tokens.append(_Token("end", "", len(q)))
    return tokens


def _next_is_quote(q: str, at: int) -> bool:
    return at < len(q) and q[at] == '"'


def _quote_token(text: str, at: int, negated: bool, operator: str | None, q: str) -> _Token:
    if len(text) < 2 or not text.endswith('"'):
        quote_at = q.index('"', at)
        raise QueryError("a quote is not closed", quote_at)
    return _Token("quote", text, at, negated=negated, operator=operator, value=text[1:-1])


def _word_token(text: str, at: int) -> _Token:
    if text == "OR":
        return _Token("or", text, at)
    found = _OPERATOR.match(text)
    if found and found[2] in OPERATORS:
        return _Token("word", text, at, negated=bool(found[1]), operator=found[2], value=found[3])
    if text.startswith("-") and len(text) > 1:
        return _Token("word", text, at, negated=True, value=text[1:])
    return _Token("word", text, at, value=text)


# --- the parser -----------------------------------------------------------------------------


class _Parser:
    """Recursive descent over the tokens: query := clause*, clause := unary (OR unary)*,
    unary := '-'? atom, atom := '(' query ')' | operator | phrase | word."""

    def __init__(self, q: str) -> None:
        self.q = q
        self.tokens = _tokens(q)
        self.i = 0
        self.highlighted: set[str] = set()
        self.terms = 0
        self.negating = 0  # inside -( ... ): nothing there is highlighted

    @property
    def token(self) -> _Token:
        return self.tokens[self.i]

    def parse(self) -> Query:
        tree = self.sequence(depth=0)
        if self.token.kind == "close":
            raise QueryError("')' without a matching '('", self.token.at)
        if tree is None and self.q.strip():
            raise QueryError("the query has no word to search for", 0)
        return Query(tree, frozenset(self.highlighted))

    def sequence(self, *, depth: int) -> Node | None:
        nodes: list[Node] = []
        while self.token.kind not in {"end", "close"}:
            node = self.clause(depth=depth)
            if node is not None:
                nodes.append(node)
        return _all(nodes)

    def clause(self, *, depth: int) -> Node | None:
        if self.token.kind == "or":
            raise QueryError("'OR' needs a term on each side", self.token.at)
        nodes = [self.unary(depth=depth)]
        while self.token.kind == "or":
            at = self.token.at
            self.i += 1
            if self.token.kind in {"end", "close", "or"}:
                raise QueryError("'OR' needs a term on each side", at)
            nodes.append(self.unary(depth=depth))
        kept = [n for n in nodes if n is not None]
        if len(kept) < len(nodes) and len(nodes) > 1:
            # "!!! OR refund": a side without words would match everything or nothing.
            raise QueryError("'OR' needs a term on each side", self.token.at)
        return kept[0] if len(kept) == 1 else (Any(tuple(kept)) if kept else None)

    def unary(self, *, depth: int) -> Node | None:
        token = self.token
        if token.kind == "open" or (token.kind == "word" and token.text == "-" and
                                    self.tokens[self.i + 1].kind == "open"):  # fmt: skip
            return self.group(depth=depth)
        self.i += 1
        if token.kind == "quote" and token.operator is not None:
            return _negate(self.operator(token, phrase=True), token.negated)
        if token.kind == "quote":
            node = self.words(TextField.ANY, token.value, token.at, highlight=not token.negated)
            return _negate(node, token.negated)
        if token.operator is not None:
            return _negate(self.operator(token, phrase=False), token.negated)
        node = self.words(TextField.ANY, token.value, token.at, highlight=not token.negated)
        return _negate(node, token.negated)

    def group(self, *, depth: int) -> Node | None:
        negated = self.token.kind == "word"  # the lone '-' before '('
        if negated:
            self.i += 1
        opened = self.token.at
        if depth + 1 > MAX_DEPTH:
            raise QueryError(f"parentheses nest at most {MAX_DEPTH} deep", opened)
        self.i += 1
        self.negating += negated
        inner = self.sequence(depth=depth + 1)
        self.negating -= negated
        if self.token.kind != "close":
            raise QueryError("'(' is not closed", opened)
        self.i += 1
        if inner is None:
            raise QueryError("empty parentheses", opened)
        return _negate(inner, negated)

    def words(self, field: TextField, text: str, at: int, *, highlight: bool = True) -> Node | None:
        found = words_of(text)
        if not found:
            return None
        for word in found:
            if len(word) > MAX_TERM_LENGTH:
                raise QueryError(f"words are at most {MAX_TERM_LENGTH} characters", at)
        self.terms += len(found)
        if self.terms > MAX_QUERY_TERMS:
            raise QueryError(f"at most {MAX_QUERY_TERMS} words per query", at)
        if highlight and not self.negating and field in {TextField.ANY, TextField.SUBJECT}:
            self.highlighted.update(found)
        return Words(field, tuple(found))

    def operator(self, token: _Token, *, phrase: bool) -> Node:
        name, value, at = token.operator or "", token.value, token.at
        if not value.strip():
            raise QueryError(f"'{name}:' needs a value", at)
        if name in {"from", "to", "subject"}:
            node = self.words(TextField(name), value, at, highlight=not token.negated)
            if node is None:
                raise QueryError(f"'{name}:' needs a word", at)
            return node
        if phrase:
            raise QueryError(f"'{name}:' takes a single value, not a quoted phrase", at)
        return _filter(name, value, at)


def _filter(name: str, value: str, at: int) -> Node:
    if name == "account":
        if len(value) > 128:
            raise QueryError("an account id is at most 128 characters", at)
        return Account(value)
    if name == "channel":
        if value.lower() not in {"email", "chat"}:
            raise QueryError("'channel:' is email or chat", at)
        return ChannelIs(value.lower())
    if name == "has":
        if value.lower() not in {"attachment", "attachments"}:
            raise QueryError("'has:' knows only has:attachment", at)
        return Flag("has_attachments")
    if name == "is":
        if value.lower() != "internal":
            raise QueryError("'is:' knows only is:internal", at)
        return Flag("internal")
    moment = _moment(value, at + len(name) + 1)
    return Sent(before=moment) if name == "before" else Sent(after=moment)


def _moment(value: str, at: int) -> datetime:
    """``2024-03-01`` (midnight UTC) or an ISO 8601 time with its zone."""
    try:
        if len(value) == 10:
            return datetime.combine(date.fromisoformat(value), datetime.min.time(), UTC)
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise QueryError("a date is YYYY-MM-DD or an ISO 8601 time with its zone", at) from None
    if moment.tzinfo is None:
        raise QueryError("a time needs its zone (Z or +hh:mm)", at)
    return moment.astimezone(UTC)


def _negate(node: Node | None, negated: bool) -> Node | None:
    if node is None or not negated:
        return node
    return Not(node)


def _all(nodes: list[Node]) -> Node | None:
    if not nodes:
        return None
    return nodes[0] if len(nodes) == 1 else All(tuple(nodes))


def parse_query(q: str) -> Query:
    """The tree of ``q``, or ``QueryError`` naming what is wrong and where."""
    return _Parser(q).parse()
