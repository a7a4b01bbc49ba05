"""Holds: disputes and legal proceedings keep data past its deletion date, for their scope."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from beanie import PydanticObjectId
from pymongo import UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession

from store.audit import Subject
from store.database import Database
from store.documents import (
    Account,
    Conversation,
    Disclosure,
    Hold,
    HoldKind,
    active_holds_query,
    utcnow,
)
from store.errors import Conflict, NotFound


async def place_hold(
    database: Database,
    *,
    account_id: str | None,
    conversation_id: PydanticObjectId | None,
    kind: HoldKind,
    reason: str,
    case_ref: str | None,
    expires_at: datetime | None,
    created_by: str,
) -> Hold:
    """Place a hold in one transaction with a write to its scope's guard, so that it conflicts
    with any purge batch of that scope in flight (see ``Account.guard``)."""
    if (account_id is None) == (conversation_id is None):
        raise ValueError("a hold covers an account or a conversation")
    hold = Hold(
        account_id=account_id, conversation_id=conversation_id, kind=kind, reason=reason,
        case_ref=case_ref, expires_at=expires_at, created_by=created_by, created_at=utcnow(),
    )  # fmt: skip
    scope = Account if account_id is not None else Conversation
    scope_id = account_id if account_id is not None else conversation_id

    async def place(session: AsyncClientSession) -> None:
        guarded = await scope.get_pymongo_collection().update_one(
            {"_id": scope_id}, {"$inc": {"guard": 1}}, session=session
        )
        if guarded.matched_count == 0:
            raise NotFound(f"no {scope.__name__.lower()} {scope_id}")
        await Hold.get_pymongo_collection().insert_one(
            hold.model_dump(by_alias=True, exclude={"id"}) | {"_id": hold.id}, session=session
        )

    hold.id = PydanticObjectId()
    async with database.client.start_session() as session:
        await session.with_transaction(place)
    return hold


async def release_hold(
    *, hold_id: PydanticObjectId, released_by: str, reason: str | None, now: datetime
) -> Hold:
    result = await Hold.get_pymongo_collection().find_one_and_update(
        {"_id": hold_id, "released_at": None},
        {"$set": {"released_at": now, "released_by": released_by, "release_reason": reason}},
    )
    if result is None:
        if await Hold.get(hold_id) is None:
            raise NotFound(f"no hold {hold_id}")
        raise Conflict(f"hold {hold_id} was released already")
    hold = await Hold.get(hold_id)
    assert hold is not None
    return hold


async def list_holds(
    *, now: datetime, active_only: bool, account_id: str | None, limit: int
) -> list[Hold]:
    query: dict[str, object] = {}
    if active_only:
        query.update(active_holds_query(now))
    if account_id is not None:
        query["account_id"] = account_id
    return await Hold.find(query).sort("-created_at").limit(limit).to_list()


async def held_scopes(
    *,
    account_ids: list[str],
    conversation_ids: list[PydanticObjectId],
    now: datetime,
    session: object = None,
) -> tuple[set[str], set[PydanticObjectId]]:
    """Which of these accounts and conversations an active hold covers (read in ``session``)."""
    scope: list[dict[str, object]] = []
    if account_ids:
        scope.append({"account_id": {"$in": account_ids}})
    if conversation_ids:
        scope.append({"conversation_id": {"$in": conversation_ids}})
    if not scope:
        return set(), set()
    query = {"$and": [{"$or": scope}, active_holds_query(now)]}
    accounts: set[str] = set()
    conversations: set[PydanticObjectId] = set()
    async for hold in Hold.get_pymongo_collection().find(query, session=session):
        if hold.get("account_id"):
            accounts.add(hold["account_id"])
        if hold.get("conversation_id"):
            conversations.add(hold["conversation_id"])
    return accounts, conversations


async def held_now(now: datetime) -> tuple[list[str], list[PydanticObjectId]]:
    """The scopes of every active hold: a list as long as the holds, whatever they cover."""
    accounts: set[str] = set()
    conversations: set[PydanticObjectId] = set()
    async for hold in Hold.find(active_holds_query(now)):
        if hold.account_id:
            accounts.add(hold.account_id)
        if hold.conversation_id:
            conversations.add(hold.conversation_id)
    return sorted(accounts), sorted(conversations)


def unheld(
    query: dict[str, Any], accounts: list[str], conversations: list[PydanticObjectId]
) -> dict[str, Any]:
    """``query`` narrowed to what lies outside these held accounts and conversations."""
    query = dict(query)
    if accounts:
        query["account_id"] = {"$nin": accounts}
    if conversations:
        query["conversation_id"] = {"$nin": conversations}
    return query


# --- the legal trail's free text ------------------------------------------------------------

# The free text of the legal trail, which stays after the purge: who held or disclosed what,
# when, why. A reason or a case reference may name the customer ("chargeback by Hugo
# Holdquux <hugo@example.net>"): that goes with the customer.
TRAIL_TEXT = {Hold: ("reason", "case_ref", "release_reason"),
              Disclosure: ("case_ref", "authority", "legal_basis")}  # fmt: skip


def trail_naming(
    doc: dict[str, Any], fields: Sequence[str], subject: Subject, *, about: bool = False
) -> dict[str, str]:
    """The fields of ``doc`` whose text names ``subject``, redacted (``about``: the record is
    the subject's, a hold on its account or a disclosure of one)."""
    changed = {}
    for name in fields:
        text = doc.get(name)
        if isinstance(text, str) and (redacted := subject.redacted_in(text, about=about)) != text:
            changed[name] = redacted
    return changed


TrailRecord = tuple[Sequence[str], dict[str, Any], str | None]


async def trail_records() -> list[TrailRecord]:
    """Every hold and disclosure: its free-text fields, the record, and the account whose it
    is (a hold on an account, a disclosure of such a hold; None otherwise). Both collections
    are small (a few per case) and read whole: a reason names a customer in no indexed way."""
    holds = await Hold.get_pymongo_collection().find(
        {}, {**dict.fromkeys(TRAIL_TEXT[Hold], 1), "account_id": 1}).to_list()  # fmt: skip
    owner = {h["_id"]: h.get("account_id") for h in holds}
    disclosures = await Disclosure.get_pymongo_collection().find(
        {}, {**dict.fromkeys(TRAIL_TEXT[Disclosure], 1), "hold_id": 1}).to_list()  # fmt: skip
    found: list[TrailRecord] = [(TRAIL_TEXT[Hold], h, h.get("account_id")) for h in holds]
    found += [(TRAIL_TEXT[Disclosure], d, owner.get(d.get("hold_id"))) for d in disclosures]
    return found


async def redact_trail(subjects: Sequence[Subject]) -> int:
    """Redact, in every hold and disclosure, the subjects' addresses and ids, and the words of
    their names where the record is theirs or names them (``Subject.redacted_in``); returns
    how many records changed."""
    updates: dict[Any, list[UpdateOne]] = {Hold: [], Disclosure: []}
    for fields, doc, account in await trail_records():
        redacted: dict[str, str] = {}
        for subject in subjects:
            redacted |= trail_naming({**doc, **redacted}, fields, subject,
                                     about=account == subject.account_id)  # fmt: skip
        if redacted:
            model = Hold if fields == TRAIL_TEXT[Hold] else Disclosure
            updates[model].append(UpdateOne({"_id": doc["_id"]}, {"$set": redacted}))
    changed = 0
    for model, writes in updates.items():
        if writes:
            result = await model.get_pymongo_collection().bulk_write(writes, ordered=False)
            changed += result.modified_count
    return changed
