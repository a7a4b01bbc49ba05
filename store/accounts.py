"""Accounts and the link between conversations and the accounts they belong to."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from beanie import PydanticObjectId
from pydantic import BaseModel, Field
from pymongo import UpdateMany

from store.documents import (
    Account,
    AccountStatus,
    Conversation,
    Hold,
    Message,
    active_holds_query,
    utcnow,
)
from store.errors import Conflict, NotFound
from store.paging import Key, Page, keyset_page
from store.subjects import address_hashes, person_id

# What an account id (the platform's own) may be: the API and the command line refuse anything
# else alike, so that an account made by one can always be named in the other's URLs.
ACCOUNT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127}$"
ACCOUNT_ID_RULE = "letters, digits and . _ : @ + - (at most 128, the first a letter or digit)"


def is_account_id(text: str) -> bool:
    return re.fullmatch(ACCOUNT_ID_PATTERN, text) is not None


class _IdOnly(BaseModel):
    id: PydanticObjectId = Field(alias="_id")


# How many messages one stamping round trip updates.
STAMP_SLICE = 5_000


def normalise_email(address: str) -> str:
    return address.strip().lower()


async def account_for_emails(emails: Iterable[str]) -> Account | None:
    """The account one of ``emails`` belongs to: a live account before a deleted one, and a
    purged one that had one of them (``store.subjects``) last."""
    wanted = sorted({normalise_email(e) for e in emails if e})
    if not wanted:
        return None
    query = {"$or": [{"emails": {"$in": wanted}},
                     {"purged_addresses": {"$in": address_hashes(wanted)}}]}  # fmt: skip
    return best_account(await Account.find(query).sort("+created_at").to_list(), wanted)


def best_account(candidates: Sequence[Account], emails: Iterable[str]) -> Account | None:
    """Of ``candidates`` (oldest first), the one mail from ``emails`` belongs to: a live
    account that has one of them, else a deleted one, else a purged one whose addresses'
    hashes include one (late mail of a purged customer: it goes with the next sweep)."""
    wanted = {normalise_email(e) for e in emails}
    hashed = set(address_hashes(wanted))
    having = [a for a in candidates if wanted.intersection(a.emails)]
    had = [
        a for a in candidates if a.purged_at is not None and hashed.intersection(a.purged_addresses)
    ]
    ranked = [a for a in having if a.status is AccountStatus.ACTIVE] or having or had
    return ranked[0] if ranked else None


async def list_accounts(
    *, status: AccountStatus | None, email: str | None, limit: int, after: Key | None
) -> Page[Account]:
    """Accounts, newest first, by status and by one of their addresses."""
    query: dict[str, Any] = {}
    if status is not None:
        query["status"] = status.value
    if email is not None:
        query["emails"] = normalise_email(email)
    return await keyset_page(Account, query, time_field="created_at", limit=limit, after=after)


async def ensure_account(*, account_id: str) -> None:
    """Make sure an account named by a trusted source (a webhook, an import) exists."""
    now = utcnow()
    await Account.get_pymongo_collection().update_one(
        {"_id": account_id},
        {
            "$setOnInsert": {
                "emails": [],
                "name": None,
                "status": AccountStatus.ACTIVE.value,
                "created_at": now,
                "updated_at": now,
            }
        },
        upsert=True,
    )


async def register_account(*, account_id: str, emails: Iterable[str], name: str | None) -> Account:
    """Create or update an account and link the unlinked conversations of its emails.

    Registering the id of a purged account starts a new life of the account: it is active
    again, with these emails, and nothing of its previous life comes back (content that linked
    to the purged account since keeps its deadline and is purged all the same)."""
    addresses = sorted({normalise_email(e) for e in emails})
    await _refuse_emails_of_another_account(account_id=account_id, emails=addresses)
    now = utcnow()
    collection = Account.get_pymongo_collection()
    reborn = await collection.update_one(
        {"_id": account_id, "purged_at": {"$type": "date"}},
        [{"$set": {
            "emails": addresses, "name": name, "updated_at": now,
            "status": AccountStatus.ACTIVE.value, "deleted_at": None, "purge_due_at": None,
            "erasure_requested_at": None, "purged_at": None, "life_started_at": now,
            "purged_addresses": [],
            "life": {"$add": [{"$ifNull": ["$life", 1]}, 1]},
            "links": {"$add": [{"$ifNull": ["$links", 0]}, 1]},
        }}],
    )  # fmt: skip
    if not reborn.matched_count:
        await collection.update_one(
            {"_id": account_id},
            {
                "$set": {"emails": addresses, "name": name, "updated_at": now},
                "$setOnInsert": {"status": AccountStatus.ACTIVE.value, "created_at": now},
            },
            upsert=True,
        )
    await link_unlinked_conversations(account_id=account_id, emails=addresses)
    account = await Account.get(account_id)
    assert account is not None
    return account


async def _refuse_emails_of_another_account(*, account_id: str, emails: list[str]) -> None:
    """An address names one live account: mail from it is linked to that account, so a second
    one would silently get nothing (a deleted account's addresses may start a new account)."""
    other = await Account.find_one(
        {
            "_id": {"$ne": account_id},
            "status": AccountStatus.ACTIVE.value,
            "emails": {"$in": emails},
        }
    )
    if other is not None:
        taken = sorted(set(other.emails) & set(emails))
        raise Conflict(
            f"{', '.join(taken)} already belongs to account {other.id!r}: remove it there first "
            "(PUT that account without it), or use that account"
        )


async def link_unlinked_conversations(*, account_id: str, emails: list[str]) -> int:
    """Give every unlinked conversation with one of ``emails`` as a customer to the account.

    Messages first, then conversations: a crash in between leaves the conversation unlinked,
    and running this again (the next registration) finishes the job.
    """
    if not emails:
        return 0
    conversations = Conversation.find({"account_id": None, "customer_emails": {"$in": emails}})
    ids = [c.id async for c in conversations.project(_IdOnly)]
    if not ids:
        return 0
    terms = (await link_terms([account_id]))[account_id]
    await Message.get_pymongo_collection().update_many(
        {"conversation_id": {"$in": ids}, "account_id": None},
        {"$set": {"account_id": account_id, **terms}},
    )
    result = await Conversation.get_pymongo_collection().update_many(
        {"_id": {"$in": ids}, "account_id": None},
        {"$set": {"account_id": account_id, "restricted": terms["restricted"]}},
    )
    return result.modified_count


def _restricted(account: Account | None) -> bool:
    return account is not None and account.status is AccountStatus.DELETED


async def is_deleted(account_id: str | None) -> bool:
    """Content of this account is to be hidden from agents (the account is deleted)."""
    return account_id is not None and _restricted(await Account.get(account_id))


async def link_terms(account_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """What content linked to each account now takes from it: hidden from agents and due at the
    account's deadline while the account is deleted (a purged one included).

    Call it before writing the content: for a deleted account it also marks the account as
    having content to purge by that deadline, so that a sweep finishing the account at the same
    moment does not conclude it is empty (``Account.links``).
    """
    wanted = sorted(set(account_ids))
    if not wanted:
        return {}
    deleted = await Account.find(
        {"_id": {"$in": wanted}, "status": AccountStatus.DELETED.value}
    ).to_list()
    for account in deleted:
        assert account.purge_due_at is not None
        await Account.get_pymongo_collection().update_one(
            {"_id": account.id}, _due_by(account.purge_due_at)
        )
    due = {a.id: a.purge_due_at for a in deleted}
    return {a: {"restricted": a in due, "purge_due_at": due.get(a)} for a in wanted}


def _due_by(due: datetime, fields: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """An update (pipeline) that makes the account due by ``due`` at the latest and bumps its
    ``links``, setting ``fields`` too. ($min would not do: an unset date is null, which sorts
    before every date.)"""
    current = "$next_purge_at"
    sooner = {"$cond": [{"$lt": [{"$ifNull": [current, due]}, due]}, current, due]}
    links = {"$add": [{"$ifNull": ["$links", 0]}, 1]}
    return [{"$set": {**(fields or {}), "next_purge_at": sooner, "links": links}}]


async def apply_link_terms(messages: Sequence[Message]) -> None:
    """Give new messages the terms of their accounts (see ``link_terms``) before they are
    inserted."""
    terms = await link_terms([m.account_id for m in messages if m.account_id])
    for message in messages:
        if message.account_id:
            message.restricted = terms[message.account_id]["restricted"]
            message.purge_due_at = terms[message.account_id]["purge_due_at"]


async def settle_links(messages: Sequence[Message]) -> None:
    """After new messages are written. Their conversation may have been linked to an account
    while they were on their way (a registration racing the insert): the unlinked ones take
    its account and terms. And a sweep may have concluded about their deleted account just
    before they landed: the account is made due by their deadline again."""
    unlinked = sorted({m.conversation_id for m in messages if m.account_id is None})
    if unlinked:
        linked = Conversation.get_pymongo_collection().find(
            {"_id": {"$in": unlinked}, "account_id": {"$type": "string"}}, {"account_id": 1}
        )
        async for conversation in linked:
            terms = (await link_terms([conversation["account_id"]]))[conversation["account_id"]]
            await Message.get_pymongo_collection().update_many(
                {"conversation_id": conversation["_id"], "account_id": None},
                {"$set": {"account_id": conversation["account_id"], **terms}},
            )
    due: dict[str, datetime] = {}
    for m in messages:
        if m.account_id and m.purge_due_at is not None:
            due[m.account_id] = min(m.purge_due_at, due.get(m.account_id, m.purge_due_at))
    for account_id, when in due.items():
        await Account.get_pymongo_collection().update_one({"_id": account_id}, _due_by(when))


@dataclass(frozen=True)
class _Stamp:
    """Content of ``account_id`` not yet due by ``due`` is to be due then. With ``version``,
    only while the account is still deleted at that version (a restore since wins)."""

    account_id: str
    due: datetime
    version: int | None = None


async def _stamp_content(account: Account, *, due: datetime, version: int | None = None) -> None:
    """The account's content not yet due by ``due`` is due then, and hidden from agents."""
    await _stamp_contents([_Stamp(account.id, due, version)])


async def _stamp_contents(stamps: list[_Stamp]) -> None:
    """Each stamp applied, in round trips per slice of messages rather than per account (the
    sweep stamps hundreds of accounts together); an account of 100,000 messages is stamped in
    slices that each stay well inside the database timeout."""
    messages = Message.get_pymongo_collection()
    while stamps := await _still_at_version(stamps):
        not_sooner = [
            {"account_id": s.account_id, "$or": [{"purge_due_at": None},
                                                 {"purge_due_at": {"$gt": s.due}}]}
            for s in stamps
        ]  # fmt: skip
        found = messages.find({"$or": not_sooner}, {"account_id": 1}).limit(STAMP_SLICE)
        ids: dict[str, list[Any]] = {}
        async for m in found:
            ids.setdefault(m["account_id"], []).append(m["_id"])
        if not ids:
            break
        due = {s.account_id: s.due for s in stamps}
        await messages.bulk_write([
            UpdateMany({"_id": {"$in": some}},
                       {"$set": {"purge_due_at": due[account], "restricted": True}})
            for account, some in ids.items()
        ], ordered=False)  # fmt: skip
    if stamps:
        await Conversation.get_pymongo_collection().update_many(
            {"account_id": {"$in": [s.account_id for s in stamps]}}, {"$set": {"restricted": True}}
        )


async def _still_at_version(stamps: list[_Stamp]) -> list[_Stamp]:
    """The stamps that still apply: without a version, or whose account is still deleted at
    it."""
    versioned = [s for s in stamps if s.version is not None]
    if not versioned:
        return stamps
    unchanged = [{"_id": s.account_id, "links": s.version, "status": AccountStatus.DELETED.value}
                 for s in versioned]  # fmt: skip
    found = Account.get_pymongo_collection().find({"$or": unchanged}, {"links": 1})
    current = {(a["_id"], a.get("links")) async for a in found}
    return [s for s in stamps if s.version is None or (s.account_id, s.version) in current]


async def stamp_deleted_content(account: Account) -> None:
    """Content of a deleted account that missed its deadline (it was linked while the account
    was being deleted) gets it now; the sweep calls this before purging the account, with the
    account as it read it: nothing is stamped once the account changed since."""
    await stamp_deleted_contents([account])


async def stamp_deleted_contents(accounts: Iterable[Account]) -> None:
    """``stamp_deleted_content`` for many accounts at once."""
    await _stamp_contents([
        _Stamp(a.id, a.purge_due_at, a.links) for a in accounts
        if a.status is AccountStatus.DELETED and a.purge_due_at is not None
    ])  # fmt: skip


async def mark_deleted(*, account_id: str, deleted_at: datetime, grace: timedelta) -> Account:
    """The account is deleted at ``deleted_at``: its content is purged by ``deleted_at + grace``
    and, until then, hidden from agents. Idempotent: a repeat keeps the first deadline."""
    account = await _get(account_id)
    if account.status is not AccountStatus.DELETED:
        # A deletion cannot reach back into an earlier life of the account.
        deleted_at = max(deleted_at, account.life_started_at or deleted_at)
        due = deleted_at + grace
        await Account.get_pymongo_collection().update_one(
            {"_id": account_id, "status": AccountStatus.ACTIVE.value},
            _due_by(due, {"status": AccountStatus.DELETED.value, "deleted_at": deleted_at,
                          "purge_due_at": due, "updated_at": utcnow()}),
        )  # fmt: skip
    await stamp_deleted_content(await _get(account_id))
    return await _get(account_id)


async def request_erasure(*, account_id: str, now: datetime) -> Account:
    """The customer asked for erasure: everything of the account is due now (holds apply),
    again each time it is asked (whatever linked to a purged account since goes too)."""
    account = await _get(account_id)
    await Account.get_pymongo_collection().update_one(
        {"_id": account_id},
        _due_by(now, {"status": AccountStatus.DELETED.value,
                      "deleted_at": account.deleted_at or now, "erasure_requested_at": now,
                      "purge_due_at": now, "updated_at": now}),
    )  # fmt: skip
    account = await _get(account_id)
    await _stamp_content(account, due=now)
    return account


@dataclass(frozen=True)
class PersonErasure:
    """What an erasure of a person (by address) set due: the accounts that had one of the
    addresses, and the one their unlinked content was filed under (``person``)."""

    person: str
    accounts: list[str]


async def erase_person(
    *, emails: Iterable[str], names: Iterable[str], now: datetime
) -> PersonErasure:
    """Erasure for a data subject the archive may know only by address (never registered, or
    purged before): every account that has, or had, one of ``emails`` is erased (again), and
    the unlinked conversations of the addresses are filed under an account of their own
    (``store.subjects.person_id``: the same addresses give the same id), erased too. Holds
    apply as to any erasure; each purge gets its record, and ``verify-purge --account`` of
    the person's id is its certificate."""
    addresses = sorted({normalise_email(e) for e in emails if e.strip()})
    if not addresses:
        raise ValueError("an erasure of a person needs at least one address")
    person = person_id(addresses)
    having = Account.find(
        {
            "$or": [
                {"emails": {"$in": addresses}},
                # A purged account's: one that lives again had its hashes cleared.
                {
                    "purged_addresses": {"$in": address_hashes(addresses)},
                    "purged_at": {"$type": "date"},
                },
            ]
        }
    )
    accounts = sorted({a.id async for a in having} - {person})  # fmt: skip
    for account_id in accounts:
        await request_erasure(account_id=account_id, now=now)
    name = " ".join(n.strip() for n in names if n.strip()) or None
    await register_account(account_id=person, emails=addresses, name=name)
    await Account.get_pymongo_collection().update_one({"_id": person}, {"$set": {"person": True}})
    await request_erasure(account_id=person, now=now)
    return PersonErasure(person=person, accounts=accounts)


async def restore(*, account_id: str) -> Account:
    """Cancel a deletion (before the purge): the content of the account's current life is its
    own again, and visible. What linked to an earlier, purged life keeps its deadline."""
    account = await _get(account_id)
    if account.purged_at is not None:
        raise NotFound(f"account {account_id!r} was purged; there is nothing to restore")
    if account.person:
        # Restored, it would hold the person's addresses as a live account, and the platform
        # could no longer register the customer's own account with them.
        raise Conflict(
            f"account {account_id!r} holds the content of an erasure by address; "
            "an erasure of a person is not undone"
        )
    await Account.get_pymongo_collection().update_one(
        {"_id": account_id},
        {
            "$set": {"status": AccountStatus.ACTIVE.value, "deleted_at": None,
                     "purge_due_at": None, "erasure_requested_at": None,
                     "updated_at": utcnow()},
            "$inc": {"links": 1},
        },
    )  # fmt: skip
    this_life: dict[str, Any] = {"$ne": None}
    if account.life_started_at is not None:
        this_life = {"$gte": account.life_started_at}
    await Message.get_pymongo_collection().update_many(
        {"account_id": account_id, "purge_due_at": this_life},
        {"$set": {"purge_due_at": None, "restricted": False}},
    )
    await Conversation.get_pymongo_collection().update_many(
        {"account_id": account_id}, {"$set": {"restricted": False}}
    )
    await Account.get_pymongo_collection().update_one(
        {"_id": account_id}, {"$set": {"next_purge_at": await earliest_deadline(account_id)}}
    )
    return await _get(account_id)


async def earliest_deadline(account_id: str) -> datetime | None:
    """The earliest deadline among the account's stored content (None: nothing is due)."""
    return (await earliest_deadlines([account_id])).get(account_id)


async def earliest_deadlines(account_ids: list[str]) -> dict[str, datetime]:
    """The earliest deadline among each account's stored content, in one aggregation (an
    account of which nothing is due is left out)."""
    found = await Message.get_pymongo_collection().aggregate([
        {"$match": {"account_id": {"$in": account_ids}, "purge_due_at": {"$type": "date"}}},
        {"$sort": {"account_id": 1, "purge_due_at": 1}},
        {"$group": {"_id": "$account_id", "due": {"$first": "$purge_due_at"}}},
    ])  # fmt: skip
    return {g["_id"]: g["due"] async for g in found}


async def _get(account_id: str) -> Account:
    account = await Account.get(account_id)
    if account is None:
        raise NotFound(f"no account {account_id!r}")
    return account


@dataclass(frozen=True)
class AccountSummary:
    account: Account
    conversations: int
    messages: int
    active_holds: list[Hold]
    # When the company first had the oldest of its messages (the maximum age counts from it).
    oldest_collected_at: datetime | None = None


async def account_summary(*, account_id: str, now: datetime) -> AccountSummary:
    account = await _get(account_id)
    conversation_ids = [
        c.id async for c in Conversation.find({"account_id": account_id}).project(_IdOnly)
    ]
    scope = {"$or": [{"account_id": account_id}, {"conversation_id": {"$in": conversation_ids}}]}
    holds = await Hold.find({"$and": [scope, active_holds_query(now)]}).to_list()
    oldest = await (await Message.get_pymongo_collection().aggregate([
        {"$match": {"account_id": account_id}},
        {"$group": {"_id": None, "at": {"$min": "$collected_at"}}},
    ])).to_list()  # fmt: skip
    return AccountSummary(
        account=account,
        conversations=len(conversation_ids),
        messages=await Message.find({"account_id": account_id}).count(),
        active_holds=holds,
        oldest_collected_at=oldest[0]["at"] if oldest else None,
    )
