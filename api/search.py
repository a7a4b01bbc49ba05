"""``GET /api/v1/search``: the query syntax and filters, BM25 or newest first, cursor pages."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Annotated

from aiohttp import web
from pydantic import BaseModel, Field

from api import params, views
from api.auth import principal_of
from api.problems import problem
from api.state import SEARCH
from api.trail import audited
from search.engine import MAX_OFFSET, Filters, Order, Position, QueryError, parse_query, search
from store.documents import Channel, Role


class SearchParams(params.QueryModel):
    q: Annotated[str, Field(max_length=500)] = ""
    account_id: params.AccountId | None = None
    channel: Channel | None = None
    participant: (
        Annotated[str, Field(max_length=320, pattern=r"^[^\x00-\x20\x7f-\x9f]+$")] | None
    ) = None
    since: params.IsoDatetime | None = None
    until: params.IsoDatetime | None = None
    has_attachments: bool | None = None
    sort: Order | None = None
    limit: params.Limit = params.DEFAULT_LIMIT
    cursor: Annotated[str, Field(max_length=500)] | None = None


class CursorData(BaseModel):
    o: Order
    k: Annotated[int, Field(ge=-(2**63), lt=2**63)] | None = None  # newest: the last sort key
    n: Annotated[int, Field(ge=0, le=MAX_OFFSET)] = 0  # relevance: the offset
    s: datetime | None = None  # relevance: the first page's time
    p: Annotated[str, Field(pattern=r"^[0-9a-f]{16}$")] | None = None  # its index snapshot
    q: Annotated[str, Field(max_length=64)] = ""  # a fingerprint of the query it belongs to


async def search_messages(request: web.Request) -> web.Response:
    p = params.query(request, SearchParams)
    try:
        query = parse_query(p.q)
    except QueryError as exc:
        error = {"field": "q", "message": exc.reason, "position": exc.position}
        return problem(400, str(exc), title="the query cannot be run as written", errors=[error])
    order = p.sort or (Order.RELEVANCE if query.has_text else Order.NEWEST)
    tied = _fingerprint(p, order)
    after = position(p.cursor, tied) if p.cursor else None
    filters = Filters(
        account_id=p.account_id,
        channel=p.channel,
        participant=p.participant.lower() if p.participant else None,
        since=p.since,
        until=p.until,
        has_attachments=p.has_attachments,
        hide_restricted=principal_of(request).role is Role.AGENT,
    )
    await audited(request, "search", query=_audit_query(p), target=_audit_target(p))
    results = await search(index=request.app[SEARCH], query=query, filters=filters,
                           order=order, limit=p.limit, after=after)  # fmt: skip
    next_cursor = None
    if results.next is not None:
        n = results.next
        next_cursor = params.encode_cursor(
            {"o": order.value, "k": n.key, "n": n.offset, "q": tied, "p": n.pinned,
             "s": n.snapshot.isoformat() if n.snapshot else None}
        )  # fmt: skip
    return web.json_response(
        {"hits": [views.hit(h) for h in results.hits], "total": results.total,
         "next_cursor": next_cursor}
    )  # fmt: skip


def _fingerprint(p: SearchParams, order: Order) -> str:
    return fingerprint(p.model_dump(exclude={"cursor", "limit"}, mode="json"), order)


def fingerprint(parts: dict[str, object], order: Order) -> str:
    """Ties a cursor to its query: a cursor used with other parameters is refused."""
    named = parts | {"sort": order.value}
    return hashlib.sha256(repr(sorted(named.items())).encode()).hexdigest()[:16]


def position(cursor: str, tied: str) -> Position:
    """The position a cursor names, if it belongs to the query whose fingerprint is ``tied``."""
    data = params.decode_cursor(cursor, CursorData)
    if data.q != tied:
        raise params.field_error("cursor", "this cursor belongs to another query")
    return Position(order=data.o, key=data.k, offset=data.n, snapshot=data.s, pinned=data.p)


def _audit_query(p: SearchParams) -> dict[str, str]:
    return {k: str(v) for k, v in p.model_dump(exclude={"cursor"}, exclude_none=True).items()}


def _audit_target(p: SearchParams) -> dict[str, str]:
    return {"account_id": p.account_id} if p.account_id else {}
