"""The audit trail: who read, searched, exported, held or deleted what, when, from where.

An event keeps ids (``target``) and the request's parameters (``query``). Some parameters are
free text that can name a customer (a search for ``from:ann@example.com``, a participant): when
the account is purged, ``redact_account`` replaces those values with ``REDACTED`` and keeps the
rest of the event (who, what, when, outcome, ids). To find them without scanning 13 months of
events, each event stores the terms of its free text in ``mentions`` (indexed) when written.

Free text names people a purge cannot know of (a street, a surname, a word of their mail), so
it is not kept as long as the event: ``forget_free_text`` redacts every free-text value of the
events older than ``ARCHIVE_AUDIT_TEXT_MAX_AGE`` (30 days), keeping which parameters were used.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from beanie import PydanticObjectId
from pymongo import UpdateOne

from store.documents import AuditEvent, Role, utcnow
from store.paging import Page, keyset_page
from store.words import WORD, normalise, words_of

REDACTED = "[redacted]"
# Query parameters whose values are ids, codes, times or switches; every other parameter is
# free text (so a parameter added later is redactable by default).
STRUCTURED_PARAMETERS = frozenset(
    {
        "account_id",
        "channel",
        "since",
        "until",
        "has_attachments",
        "sort",
        "limit",
        "active",
        "status",
    }
)
_ADDRESS = re.compile(r"[^\s@<>()\[\]\"',;:]+@[^\s@<>()\[\]\"',;:]+")
_BATCH = 500


async def record(
    *,
    actor: str,
    role: Role | None,
    action: str,
    max_age: timedelta,
    target: Mapping[str, str] | None = None,
    query: Mapping[str, str] | None = None,
    client_address: str | None = None,
    outcome: int = 200,
    now: datetime | None = None,
) -> AuditEvent:
    """Write one audit event; it expires (TTL index) ``max_age`` after it happened."""
    at = now or utcnow()
    kept = {k: v[:500] for k, v in (query or {}).items()}
    event = AuditEvent(
        at=at,
        actor=actor,
        role=role,
        action=action,
        target=dict(target or {}),
        query=kept,
        client_address=client_address,
        outcome=outcome,
        expires_at=at + max_age,
        mentions=sorted(_mentions_of(kept)),
    )
    await event.insert()
    return event


async def audit_events(
    *,
    actor: str | None = None,
    action: str | None = None,
    account_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int,
    after: tuple[datetime, PydanticObjectId] | None = None,
) -> Page[AuditEvent]:
    """Audit events, newest first, filtered; ``after`` continues from a page's last event."""
    query: dict[str, object] = {}
    if actor is not None:
        query["actor"] = actor
    if action is not None:
        query["action"] = action
    if account_id is not None:
        query["target.account_id"] = account_id
    if since is not None or until is not None:
        query["at"] = {
            **({"$gte": since} if since else {}),
            **({"$lt": until} if until else {}),
        }
    return await keyset_page(AuditEvent, query, time_field="at", limit=limit, after=after)


# --- redaction ------------------------------------------------------------------------------


def mention_terms(text: str) -> set[str]:
    """What a free-text value may name someone by: its normalised words (names), its tokens
    lowercased with and without a ``operator:`` prefix (account ids), its addresses."""
    terms = set(words_of(text))
    for token in text.split():
        token = token.strip("()\"'").lstrip("-").lower()
        _, colon, value = token.partition(":")
        terms.update(t for t in (token, value if colon else "") if t)
    terms.update(a.lower().strip(".") for a in _ADDRESS.findall(text))
    return terms


def free_text(query: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in query.items() if k not in STRUCTURED_PARAMETERS and v != REDACTED}


def _mentions_of(query: Mapping[str, str]) -> set[str]:
    return {term for value in free_text(query).values() for term in mention_terms(value)}


class Subject:
    """What names one account in free text: its id, its emails, the words of its name."""

    def __init__(self, *, account_id: str, emails: Iterable[str], name: str | None) -> None:
        self.account_id = account_id
        exact = {account_id.lower(), *(e.strip().lower() for e in emails)}
        self.exact = {term for term in exact if term}
        # Each of them where it stands: not inside a longer address, id or word.
        either = "|".join(re.escape(t) for t in sorted(self.exact, key=len, reverse=True))
        self._exact_pattern = (re.compile(rf"(?<![\w.+-])(?:{either})(?![\w@-])", re.IGNORECASE)
                               if either else None)  # fmt: skip
        self.name_words = sorted(set(words_of(name or "")))

    def named_in(self, value: str) -> bool:
        terms = mention_terms(value)
        return bool(terms & self.exact) or (bool(self.name_words) and terms >= set(self.name_words))

    def redacted_in(self, text: str, *, about: bool = False) -> str:
        """``text`` with the subject's addresses and ids replaced by ``REDACTED`` wherever
        they stand (``customer=ann@x.org``, ``mailto:``, ``acct:42/orders``), and, if the
        text names the subject (by one of those, or by every word of its name), each word of
        its name too (two letters or more, any case or accent): the rule for the free text
        of the legal trail (hold reasons, case references, disclosures), which is kept after
        the purge. A text that names someone else who shares a first name is left alone;
        ``about``: the text is the subject's by where it stands (a hold on its account)."""
        found = False

        def exact(match: re.Match[str]) -> str:
            nonlocal found
            found = True
            return REDACTED

        if self._exact_pattern is not None:
            text = self._exact_pattern.sub(exact, text)
        names = set(self.name_words)
        if not names or not (about or found or set(words_of(text)) >= names):
            return text

        def word(match: re.Match[str]) -> str:
            value = match.group(0)
            return REDACTED if len(value) > 1 and normalise(value) in names else value

        return WORD.sub(word, text)


def naming_query(subject: Subject) -> dict[str, Any]:
    """The events whose free text may name the account, by the ``mentions`` index."""
    return naming_any([subject])


async def redact_account(*, account_id: str, emails: list[str], name: str | None) -> int:
    """Replace, in every audit event, the free-text values that name the account (its id, one
    of its emails, or every word of its name) with ``REDACTED``; who, what, when, outcome and
    the ids stay. Returns how many events changed. Idempotent."""
    return await redact_accounts([Subject(account_id=account_id, emails=emails, name=name)])


async def redact_accounts(subjects: list[Subject]) -> int:
    """``redact_account`` for many accounts at once (a purge forgets hundreds together): one
    walk of the events that may name any of them."""
    if not subjects:
        return 0
    collection = AuditEvent.get_pymongo_collection()
    changed: set[Any] = set()
    updates: list[UpdateOne] = []
    async for event in collection.find(naming_any(subjects), {"query": 1}):
        query = dict(event.get("query") or {})
        named = free_text(query)
        redacted = {k: REDACTED if k in named and any(s.named_in(v) for s in subjects) else v
                    for k, v in query.items()}  # fmt: skip
        if redacted == query:
            continue
        mentions = sorted(_mentions_of(redacted))
        updates.append(UpdateOne({"_id": event["_id"]},
                                 {"$set": {"query": redacted, "mentions": mentions}}))  # fmt: skip
        changed.add(event["_id"])
        if len(updates) >= _BATCH:
            await collection.bulk_write(updates, ordered=False)
            updates = []
    if updates:
        await collection.bulk_write(updates, ordered=False)
    return len(changed)


async def forget_free_text(*, before: datetime) -> int:
    """Redact every free-text value of the events that happened before ``before`` (the
    parameters stay, their values become ``REDACTED``); returns how many events changed. The
    ``free_text_at`` index holds only the events that still keep some: each run reads only
    those that aged out since the last."""
    collection = AuditEvent.get_pymongo_collection()
    aged = {"at": {"$lt": before}, "mentions.0": {"$exists": True}}
    done = 0
    while True:
        found = collection.find(aged, {"query": 1}).hint("free_text_at").limit(_BATCH)
        events = [e async for e in found]
        if not events:
            return done
        updates = [
            UpdateOne({"_id": e["_id"]}, {"$set": {"query": _without_free_text(e), "mentions": []}})
            for e in events
        ]
        done += (await collection.bulk_write(updates, ordered=False)).modified_count


def _without_free_text(event: Mapping[str, Any]) -> dict[str, str]:
    query = dict(event.get("query") or {})
    return {k: REDACTED if k in free_text(query) else v for k, v in query.items()}


async def index_audit_mentions() -> int:
    """Give events written before ``mentions`` existed the terms of their free text, so that
    ``redact_account`` finds them too. Idempotent, and cheap once done: the ``mentions`` index
    leads it to the events without the field only. Run at start."""
    collection = AuditEvent.get_pymongo_collection()
    updates: list[UpdateOne] = []
    done = 0
    async for event in collection.find({"mentions": {"$exists": False}}, {"query": 1}):
        mentions = sorted(_mentions_of(event.get("query") or {}))
        updates.append(UpdateOne({"_id": event["_id"]}, {"$set": {"mentions": mentions}}))
        if len(updates) >= _BATCH:
            done += (await collection.bulk_write(updates, ordered=False)).modified_count
            updates = []
    if updates:
        done += (await collection.bulk_write(updates, ordered=False)).modified_count
    return done


def naming_any(subjects: Iterable[Subject]) -> dict[str, Any]:
    """The events whose free text may name any of these accounts: one ``$in`` of their exact
    terms, and one ``$all`` per name."""
    subjects = list(subjects)
    exact = sorted({term for s in subjects for term in s.exact})
    clauses: list[dict[str, Any]] = [{"mentions": {"$in": exact}}]
    clauses += [{"mentions": {"$all": s.name_words}} for s in subjects if s.name_words]
    return {"$or": clauses}
