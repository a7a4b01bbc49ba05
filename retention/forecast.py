"""What is due when, and what holds keep: the forecast (``purge --dry-run``), how late the
sweep is (the lateness metric), and the queries for what is due that the sweep acts on."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
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
    due_at: datetime
    account_id: str | None
    messages: int
    held_messages: int
    blocked_by: list[str]  # hold ids


async def forecast(
    *, now: datetime, policy: RetentionPolicy, limit: int = 1000
) -> list[ForecastItem]:
    """What will be purged when, and what holds block: accounts with content under a deletion
    deadline (deleted ones, and what linked to a purged one since), then the content past (or
    next to pass) the maximum age."""
    items = []
    accounts = Account.find({"next_purge_at": {"$type": "date"}}).sort("+next_purge_at")
    async for account in accounts.limit(limit):
        items.append(await _account_item(account, now=now))
    items += await _max_age_items(now=now, policy=policy)
    return sorted(items, key=lambda item: item.due_at)


async def _account_item(account: Account, *, now: datetime) -> ForecastItem:
    assert account.next_purge_at is not None
    due = {"account_id": account.id, "purge_due_at": {"$type": "date"}}
    held_accounts, held_conversations = await held_scopes(
        account_ids=[account.id], conversation_ids=await conversation_ids([account.id]), now=now
    )
    blocked = await _blocking_hold_ids(account.id, held_conversations, now=now)
    total = await Message.find(due).count()
    if held_accounts:
        held = total
    elif held_conversations:
        held = await Message.find(
            {**due, "conversation_id": {"$in": sorted(held_conversations)}}
        ).count()
    else:
        held = 0
    return ForecastItem(rule_for(account), account.next_purge_at, account.id, total, held, blocked)


async def _blocking_hold_ids(
    account_id: str, conversations: set[PydanticObjectId], *, now: datetime
) -> list[str]:
    scope = [{"account_id": account_id}, {"conversation_id": {"$in": sorted(conversations)}}]
    query = {"$and": [{"$or": scope}, active_holds_query(now)]}
    return [str(h.id) async for h in Hold.find(query)]


async def _max_age_items(*, now: datetime, policy: RetentionPolicy) -> list[ForecastItem]:
    cutoff = max_age_cutoff(now=now, max_age=policy.max_age)
    due = await Message.find({"collected_at": {"$lt": cutoff}}).count()
    items = []
    if due:
        items.append(ForecastItem(PurgeRule.MAX_AGE, now, None, due, 0, []))
    oldest = (
        await Message.find({"collected_at": {"$gte": cutoff}}).sort("+collected_at").first_or_none()
    )
    if oldest is not None:
        next_due = oldest.collected_at + policy.max_age
        count = (
            await Message.find(
                {"collected_at": {"$lt": oldest.collected_at + timedelta(days=1)}}
            ).count()
            - due
        )
        items.append(ForecastItem(PurgeRule.MAX_AGE, next_due, None, count, 0, []))
    return items


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
