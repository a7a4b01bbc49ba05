"""Accounts: the platform registers them (with their emails); everyone may look one up."""

from __future__ import annotations

from typing import Annotated

from aiohttp import web
from pydantic import AfterValidator, Field

from api import params, views
from api.auth import principal_of
from api.trail import audited
from store.accounts import account_summary, register_account
from store.documents import Account, utcnow

Email = Annotated[
    str,
    # No \s: Python's and JSON Schema's (ECMA) differ, and the schema must say what we check.
    Field(max_length=320, pattern=r"^[^@\x00-\x20\x7f-\x9f]+@[^@\x00-\x20\x7f-\x9f]+$"),
    AfterValidator(str.lower),
]


class AccountBody(params.BodyModel):
    emails: Annotated[list[Email], Field(max_length=100)]
    name: Annotated[str, Field(max_length=500)] | None = None


async def put_account(request: web.Request) -> web.Response:
    """Create or update an account; unlinked conversations of its emails become its own."""
    account_id = params.account_id(request)
    body = await params.body(request, AccountBody)
    existed = await Account.get(account_id) is not None
    await audited(request, "account.update", target={"account_id": account_id})
    await register_account(account_id=account_id, emails=body.emails, name=body.name)
    summary = await account_summary(account_id=account_id, now=utcnow())
    role = principal_of(request).role
    return web.json_response(views.account(summary, role=role), status=200 if existed else 201)


async def get_account(request: web.Request) -> web.Response:
    account_id = params.account_id(request)
    await audited(request, "account.read", target={"account_id": account_id})
    summary = await account_summary(account_id=account_id, now=utcnow())
    return web.json_response(views.account(summary, role=principal_of(request).role))
