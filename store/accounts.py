"""Accounts and the link between conversations and the accounts they belong to."""

from __future__ import annotations

from collections.abc import Iterable

from beanie import PydanticObjectId
from pydantic import BaseModel, Field

from store.documents import Account, AccountStatus, Conversation, Message, utcnow


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
    await Message.get_pymongo_collection().update_many(
        {"conversation_id": {"$in": ids}, "account_id": None}, {"$set": {"account_id": account_id}}
    )
    result = await Conversation.get_pymongo_collection().update_many(
        {"_id": {"$in": ids}, "account_id": None}, {"$set": {"account_id": account_id}}
    )
    return result.modified_count
