"""Accounts and the link between conversations and the accounts they belong to."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from beanie import PydanticObjectId
from pydantic import BaseModel, Field

from store.documents import Account, AccountStatus, Conversation, Hold, Message, utcnow
from store.errors import NotFound
from store.holds import active_holds_query
from store.retention import deletion_deadline


class _IdOnly(BaseModel):
    id: PydanticObjectId = Field(alias="_id")


def normalise_email(address: str) -> str:
    return address.strip().lower()


async def account_for_emails(emails: Iterable[str]) -> Account | None:
    """The account one of ``emails`` belongs to: a live account before a deleted one."""
    wanted = sorted({normalise_email(e) for e in emails if e})
    if not wanted:
        return None
    candidates = await Account.find({"emails": {"$in": wanted}}).sort("+created_at").to_list()
    live = [a for a in candidates if a.status is AccountStatus.ACTIVE]
    ranked = live or candidates
    return ranked[0] if ranked else None


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
    """Create or update an account and link the unlinked conversations of its emails."""
    addresses = sorted({normalise_email(e) for e in emails})
    now = utcnow()
    collection = Account.get_pymongo_collection()
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
    account = await Account.get(account_id)
    link = {"account_id": account_id, "restricted": _restricted(account)}
    await Message.get_pymongo_collection().update_many(
        {"conversation_id": {"$in": ids}, "account_id": None}, {"$set": link}
    )
    result = await Conversation.get_pymongo_collection().update_many(
        {"_id": {"$in": ids}, "account_id": None}, {"$set": link}
    )
    return result.modified_count


def _restricted(account: Account | None) -> bool:
    return account is not None and account.status is AccountStatus.DELETED


async def is_deleted(account_id: str | None) -> bool:
    """Content of this account is to be hidden from agents (the account is deleted)."""
    return account_id is not None and _restricted(await Account.get(account_id))


async def mark_deleted(*, account_id: str, deleted_at: datetime, grace: timedelta) -> Account:
    """The account is deleted at ``deleted_at``: its content is purged by ``deleted_at + grace``
    and, until then, hidden from agents. Idempotent: a repeat keeps the first deadline."""
    account = await _get(account_id)
    if account.status is not AccountStatus.DELETED:
        await Account.get_pymongo_collection().update_one(
            {"_id": account_id, "status": AccountStatus.ACTIVE.value},
            {"$set": {
                "status": AccountStatus.DELETED.value, "deleted_at": deleted_at,
                "purge_due_at": deletion_deadline(deleted_at=deleted_at, grace=grace),
                "updated_at": utcnow(),
            }},
        )  # fmt: skip
    await _set_restricted(account_id, True)
    return await _get(account_id)


async def request_erasure(*, account_id: str, now: datetime) -> Account:
    """The customer asked for erasure: everything of the account is due now (holds apply)."""
    account = await _get(account_id)
    await Account.get_pymongo_collection().update_one(
        {"_id": account_id},
        {"$set": {
            "status": AccountStatus.DELETED.value, "deleted_at": account.deleted_at or now,
            "erasure_requested_at": now, "purge_due_at": now, "updated_at": now,
        }},
    )  # fmt: skip
    await _set_restricted(account_id, True)
    return await _get(account_id)


async def restore(*, account_id: str) -> Account:
    """Cancel a deletion (before the purge): the content is the account's again, and visible."""
    account = await _get(account_id)
    if account.purged_at is not None:
        raise NotFound(f"account {account_id!r} was purged; there is nothing to restore")
    await Account.get_pymongo_collection().update_one(
        {"_id": account_id},
        {"$set": {
            "status": AccountStatus.ACTIVE.value, "deleted_at": None, "purge_due_at": None,
            "erasure_requested_at": None, "updated_at": utcnow(),
        }},
    )  # fmt: skip
    await _set_restricted(account_id, False)
    return await _get(account_id)


async def _set_restricted(account_id: str, restricted: bool) -> None:
    change = {"$set": {"restricted": restricted}}
    await Conversation.get_pymongo_collection().update_many({"account_id": account_id}, change)
    await Message.get_pymongo_collection().update_many({"account_id": account_id}, change)


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


async def account_summary(*, account_id: str, now: datetime) -> AccountSummary:
    account = await _get(account_id)
    conversation_ids = [
        c.id async for c in Conversation.find({"account_id": account_id}).project(_IdOnly)
    ]
    scope = {"$or": [{"account_id": account_id}, {"conversation_id": {"$in": conversation_ids}}]}
    holds = await Hold.find({"$and": [scope, active_holds_query(now)]}).to_list()
    return AccountSummary(
        account=account,
        conversations=len(conversation_ids),
        messages=await Message.find({"account_id": account_id}).count(),
        active_holds=holds,
    )
