"""What is due when, and what holds keep: the forecast (``purge --dry-run``), how late the
sweep is (the lateness metric), and the queries for what is due that the sweep acts on."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from beanie import PydanticObjectId

from retention.holds import held_now, held_scopes, unheld
from retention.rules import RetentionPolicy, max_age_cutoff, rule_for
from store.documents import (
    Account,
    Conversation,
    Hold,
    Message,
    PurgeRule,
    active_holds_query,
)


@dataclass(frozen=True)
class ForecastItem:
    rule: PurgeRule
    due_at: datetime  # the first of its messages is due then (past: due now)
    account_id: str | None
    messages: int
    held_messages: int
    blocked_by: list[str]  # hold ids


async def forecast(
    *, now: datetime, policy: RetentionPolicy, limit: int = 1000
) -> list[ForecastItem]:
    """What will be purged when, and what holds keep, with every stored message in exactly
    one row: a deleted account's content under its deadline (one row per account, at most
    ``limit``), and everything else by the month its maximum age ends in (before, only the
    next day's content had a row: most messages had no date anywhere)."""
    held = await held_now(now)
    items = await _deletion_items(held, now=now, limit=limit)
    items += await _max_age_items(held, policy=policy)
    return sorted(items, key=lambda item: item.due_at)


def _held_count(held: tuple[list[str], list[PydanticObjectId]]) -> dict[str, Any]:
    """An aggregation's count of the messages an active hold covers."""
    accounts, conversations = held
    covered = {"$or": [{"$in": ["$account_id", accounts]},
                       {"$in": ["$conversation_id", conversations]}]}  # fmt: skip
    return {"$sum": {"$cond": [covered, 1, 0]}}


async def _deletion_items(
    held: tuple[list[str], list[PydanticObjectId]], *, now: datetime, limit: int
) -> list[ForecastItem]:
    """One row per account with content under a deletion deadline (``purge_due_at``)."""
    found = await Message.get_pymongo_collection().aggregate([
        {"$match": {"purge_due_at": {"$type": "date"}}},
        {"$group": {"_id": "$account_id", "due_at": {"$min": "$purge_due_at"},
                    "messages": {"$sum": 1}, "held": _held_count(held)}},
        {"$sort": {"due_at": 1}},
        {"$limit": limit},
    ], hint="account_purge_due")  # fmt: skip
    groups = [g async for g in found]
    accounts = {a.id: a async for a in Account.find({"_id": {"$in": [g["_id"] for g in groups]}})}
    blocking = await _blocking_holds([g["_id"] for g in groups if g["held"]], held, now=now)
    items = []
    for g in groups:
        account = accounts.get(g["_id"])
        rule = rule_for(account) if account is not None else PurgeRule.ACCOUNT_DELETION
        items.append(ForecastItem(rule, _aware(g["due_at"]), g["_id"], g["messages"], g["held"],
                                  blocking.get(g["_id"], [])))  # fmt: skip
    return items


async def _blocking_holds(
    account_ids: list[str], held: tuple[list[str], list[PydanticObjectId]], *, now: datetime
) -> dict[str, list[str]]:
    """The ids of the active holds over each of these accounts or its conversations."""
    _, conversations = held
    owner = {c["_id"]: c.get("account_id") async for c in Conversation.get_pymongo_collection()
             .find({"_id": {"$in": conversations}}, {"account_id": 1})}  # fmt: skip
    blocking: dict[str, list[str]] = {}
    scope = [{"account_id": {"$in": account_ids}}, {"conversation_id": {"$in": conversations}}]
    async for hold in Hold.find({"$and": [{"$or": scope}, active_holds_query(now)]}):
        account = hold.account_id or owner.get(hold.conversation_id)
        if account in account_ids:
            blocking.setdefault(account, []).append(str(hold.id))
    return blocking


async def _max_age_items(
    held: tuple[list[str], list[PydanticObjectId]], *, policy: RetentionPolicy
) -> list[ForecastItem]:
    """Everything not under a deletion deadline, by the month its maximum age ends in: the
    row's date is its first message's."""
    found = await Message.get_pymongo_collection().aggregate([
        {"$match": {"purge_due_at": None}},
        {"$group": {"_id": {"$dateTrunc": {"date": "$collected_at", "unit": "month"}},
                    "first": {"$min": "$collected_at"}, "messages": {"$sum": 1},
                    "held": _held_count(held)}},
    ])  # fmt: skip
    items = []
    async for g in found:
        due_at = _aware(g["first"]) + policy.max_age
        items.append(ForecastItem(PurgeRule.MAX_AGE, due_at, None, g["messages"], g["held"], []))
    return items


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def due_now(now: datetime) -> dict[str, Any]:
    """The query for the accounts with something due by ``now``."""
    # $type lets the planner use the partial next_purge_at index: a bare $lte does not imply
    # its filter, and every sweep read and sorted every account of the archive.
    return {"next_purge_at": {"$lte": now, "$type": "date"}}


async def conversation_ids(account_ids: list[str]) -> list[PydanticObjectId]:
    found = Conversation.get_pymongo_collection().find(
        {"account_id": {"$in": account_ids}}, {"_id": 1}
    )
    return [c["_id"] async for c in found]


# How many of the earliest due accounts with purgeable content the lateness metric looks at.
LATENESS_ACCOUNTS = 20


async def lateness(*, now: datetime, policy: RetentionPolicy) -> float:
    """Seconds the most overdue purgeable item is past the moment it became purgeable (its
    deadline, or the end of a hold that kept it past it); 0 when nothing is overdue. Held
    content is not overdue."""
    worst = 0.0
    # Held accounts keep their passed deadline: they are left out (however many, they would
    # hide a late one), and an account whose due content is all in held conversations does
    # not count towards the earliest few looked at.
    held_accounts, _ = await held_now(now)
    due = Account.find(due_now(now) | {"_id": {"$nin": held_accounts}})
    looked_at = 0
    async for account in due.sort("+next_purge_at"):
        since = await _account_purgeable_since(account.id, now=now)
        if since is not None:
            worst = max(worst, (now - since).total_seconds())
            looked_at += 1
            if looked_at == LATENESS_ACCOUNTS:
                break
    since = await _max_age_purgeable_since(now=now, policy=policy)
    if since is not None:
        worst = max(worst, (now - since).total_seconds())
    return worst


async def _account_purgeable_since(account_id: str, *, now: datetime) -> datetime | None:
    conversations = await conversation_ids([account_id])
    held_accounts, held_conversations = await held_scopes(
        account_ids=[account_id], conversation_ids=conversations, now=now
    )
    if held_accounts:
        return None
    oldest = await Message.get_pymongo_collection().find_one(
        {"account_id": account_id, "purge_due_at": {"$lte": now},
         "conversation_id": {"$nin": sorted(held_conversations)}},
        {"purge_due_at": 1, "conversation_id": 1}, sort=[("purge_due_at", 1)],
    )  # fmt: skip
    if oldest is None:
        return None
    ended = await _last_hold_end(account_id, oldest["conversation_id"], now=now)
    due: datetime = oldest["purge_due_at"]
    return max(due, ended) if ended else due


async def _max_age_purgeable_since(*, now: datetime, policy: RetentionPolicy) -> datetime | None:
    cutoff = max_age_cutoff(now=now, max_age=policy.max_age)
    held_accounts, held_conversations = await held_now(now)
    oldest = await Message.get_pymongo_collection().find_one(
        unheld({"collected_at": {"$lt": cutoff}}, held_accounts, held_conversations),
        {"collected_at": 1, "account_id": 1, "conversation_id": 1},
        sort=[("collected_at", 1), ("_id", 1)],
    )
    if oldest is None:
        return None
    due: datetime = oldest["collected_at"] + policy.max_age
    ended = await _last_hold_end(oldest.get("account_id"), oldest["conversation_id"], now=now)
    return max(due, ended) if ended else due


async def _last_hold_end(
    account_id: str | None, conversation_id: PydanticObjectId, *, now: datetime
) -> datetime | None:
    """When the last hold over this content ended (released or expired), if one did."""
    scope: list[dict[str, Any]] = [{"conversation_id": conversation_id}]
    if account_id:
        scope.append({"account_id": account_id})
    ended = {"$or": [{"released_at": {"$lte": now}}, {"expires_at": {"$lte": now}}]}
    ends = [
        min(t for t in (h.released_at, h.expires_at) if t is not None)
        async for h in Hold.find({"$and": [{"$or": scope}, ended]})
    ]
    return max(ends, default=None)
