"""``GET /api/v1/audit``: the audit trail, for admins, newest first, filtered."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from aiohttp import web
from beanie import PydanticObjectId
from pydantic import BaseModel, Field

from api import params, views
from store.audit import audit_events


class AuditParams(params.QueryModel):
    actor: Annotated[str, Field(max_length=200)] | None = None
    action: Annotated[str, Field(max_length=100, pattern=r"^[a-z._]+$")] | None = None
    account_id: params.AccountId | None = None
    since: params.IsoDatetime | None = None
    until: params.IsoDatetime | None = None
    limit: params.Limit = params.DEFAULT_LIMIT
    cursor: Annotated[str, Field(max_length=200)] | None = None


class AuditCursor(BaseModel):
    t: datetime
    i: params.ObjectIdText


async def get_audit(request: web.Request) -> web.Response:
    p = params.query(request, AuditParams)
    after = None
    if p.cursor:
        cursor = params.decode_cursor(p.cursor, AuditCursor)
        after = (cursor.t, PydanticObjectId(cursor.i))
    page = await audit_events(
        actor=p.actor, action=p.action, account_id=p.account_id,
        since=p.since, until=p.until, limit=p.limit, after=after,
    )  # fmt: skip
    next_cursor = None
    if page.next_key is not None:
        at, ident = page.next_key
        next_cursor = params.encode_cursor({"t": at.isoformat(), "i": str(ident)})
    return web.json_response(
        {"events": [views.audit_event(e) for e in page.items], "next_cursor": next_cursor}
    )
