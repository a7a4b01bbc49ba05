"""Accounts: the platform registers them (with their emails); everyone may look one up."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from aiohttp import web
from pydantic import BaseModel, Field

from api import params, views
from api.auth import principal_of
from api.trail import audited
from store.accounts import account_summary, register_account
from store.accounts import list_accounts as store_list_accounts
from store.documents import Account, AccountStatus, utcnow


class AccountBody(params.BodyModel):
    emails: Annotated[list[params.Email], Field(max_length=100)]
    name: Annotated[str, Field(max_length=500)] | None = None


async def put_account(request: web.Request) -> web.Response:
    """Create or update an account; unlinked conversations of its emails become its own. The
    id of a purged account starts a new life (201, ``new_life``): nothing of the old comes
    back."""
    account_id = params.account_id(request)
    body = await params.body(request, AccountBody)
    before = await Account.get(account_id)
    await audited(request, "account.update", target={"account_id": account_id})
    after = await register_account(account_id=account_id, emails=body.emails, name=body.name)
    new_life = before is not None and after.life != before.life
    summary = await account_summary(account_id=account_id, now=utcnow())
    view = views.account(summary, role=principal_of(request).role) | {"new_life": new_life}
    return web.json_response(view, status=200 if before is not None and not new_life else 201)


class AccountsParams(params.QueryModel):
    status: AccountStatus | None = None
    email: Annotated[str, Field(min_length=1, max_length=320)] | None = None
    limit: params.Limit = params.DEFAULT_LIMIT
    cursor: Annotated[str, Field(max_length=400)] | None = None


class AccountCursor(BaseModel):
    t: datetime
    i: params.AccountId


async def list_accounts(request: web.Request) -> web.Response:
    """Accounts, newest first, by status or address. Agents and the platform see a deleted
    account's status only, and finding one by address is not theirs to do: to them, an
    address names active accounts only."""
    p = params.query(request, AccountsParams)
    after = None
    if p.cursor:
        cursor = params.decode_cursor(p.cursor, AccountCursor)
        after = (cursor.t, cursor.i)
    role = principal_of(request).role
    query = {k: v for k, v in (("status", p.status), ("email", p.email)) if v is not None}
    await audited(request, "account.list", query=query)
    status = p.status
    if p.email is not None and role not in views.COMPLIANCE_VIEW:
        if status is AccountStatus.DELETED:
            return web.json_response({"accounts": [], "next_cursor": None})
        status = AccountStatus.ACTIVE
    page = await store_list_accounts(status=status, email=p.email, limit=p.limit, after=after)
    return web.json_response({
        "accounts": [views.listed_account(a, role=role) for a in page.items],
        "next_cursor": params.page_cursor(page.next_key),
    })  # fmt: skip


async def get_account(request: web.Request) -> web.Response:
    account_id = params.account_id(request)
    await audited(request, "account.read", target={"account_id": account_id})
    summary = await account_summary(account_id=account_id, now=utcnow())
    return web.json_response(views.account(summary, role=principal_of(request).role))
