"""The agents' pages: search, a conversation (email thread or chat transcript), an account."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

from aiohttp import web
from markupsafe import Markup
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from api import params, views
from api import reading as api_reading
from api.search import fingerprint, position
from api.state import CONFIG, SEARCH
from api.trail import audited
from search.engine import Filters, Order, Position, QueryError, parse_query, search
from store import reading
from store.accounts import account_summary
from store.documents import Channel, Conversation, Role, utcnow
from store.errors import NotFound
from web.pages import parse, render, role_of, see_other, values_of

PAGE_SIZE = params.DEFAULT_LIMIT
# A message's HTML, shown only in a sandboxed frame: no script, no request anywhere (images
# only as data: URLs), no form, and not framed by any other site.
MESSAGE_HTML_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    "frame-ancestors 'self'; base-uri 'none'; form-action 'none'; sandbox"
)
CONVERSATIONS_SHOWN = 50


class SearchForm(BaseModel):
    model_config = ConfigDict(frozen=True)

    q: Annotated[str, Field(max_length=500)] = ""
    account_id: params.AccountId | None = None
    channel: Channel | None = None
    since: date | None = None
    until: date | None = None
    sort: Order | None = None
    cursor: Annotated[str, Field(max_length=500)] | None = None


def _sees_restricted(request: web.Request) -> bool:
    return role_of(request) is not Role.AGENT


async def search_page(request: web.Request) -> web.Response:
    """One field with the full query syntax, the filters and the sort; a first visit (no
    parameters) shows the form only, and searches (and audits) nothing."""
    context: dict[str, Any] = {"title": "Search", "form": values_of(request.query, SearchForm),
                               "errors": {}, "results": None}  # fmt: skip
    if not request.query:
        return render(request, "search.html", context)
    form, errors = parse(request.query, SearchForm)
    context["errors"] = errors
    if form is None:
        return render(request, "search.html", context, status=400)
    try:
        query = parse_query(form.q)
    except QueryError as exc:
        errors["q"] = f"{exc.reason} (at character {exc.position + 1})"
        return render(request, "search.html", context, status=400)
    order = form.sort or (Order.RELEVANCE if query.has_text else Order.NEWEST)
    tied = _fingerprint(form, order)
    try:
        after = position(form.cursor, tied) if form.cursor else None
    except ValidationError:
        errors["cursor"] = "this page link belongs to another search: search again"
        return render(request, "search.html", context, status=400)
    await audited(request, "search", query=_audit_query(form),
                  target={"account_id": form.account_id} if form.account_id else {})  # fmt: skip
    results = await search(index=request.app[SEARCH], query=query, filters=_filters(request, form),
                           order=order, limit=PAGE_SIZE, after=after)  # fmt: skip
    context["results"] = {
        "total": results.total,
        "order": order.value,
        "hits": [{"message": h.message, "snippet": Markup(h.snippet)} for h in results.hits],  # noqa: S704 - the store's snippet is escaped text with <mark> only
        "next_url": _next_url(form, order, tied, results.next),
        "first_url": _page_url(form, cursor=None) if form.cursor else None,
    }
    return render(request, "search.html", context)


def _filters(request: web.Request, form: SearchForm) -> Filters:
    return Filters(
        account_id=form.account_id,
        channel=form.channel,
        since=_day(form.since),
        until=_day(form.until + timedelta(days=1)) if form.until else None,  # the whole day
        hide_restricted=role_of(request) is Role.AGENT,
    )


def _day(day: date | None) -> datetime | None:
    return datetime.combine(day, time(0), tzinfo=UTC) if day else None


def _fingerprint(form: SearchForm, order: Order) -> str:
    return fingerprint(form.model_dump(exclude={"cursor"}, mode="json"), order)


def _next_url(form: SearchForm, order: Order, tied: str, n: Position | None) -> str | None:
    if n is None:
        return None
    cursor = params.encode_cursor(
        {"o": order.value, "k": n.key, "n": n.offset, "q": tied, "p": n.pinned,
         "s": n.snapshot.isoformat() if n.snapshot else None}
    )  # fmt: skip
    return _page_url(form, cursor=cursor)


def _page_url(form: SearchForm, *, cursor: str | None) -> str:
    values = form.model_dump(exclude={"cursor"}, exclude_none=True, mode="json")
    return "/search?" + urlencode(values | ({"cursor": cursor} if cursor else {}))


def _audit_query(form: SearchForm) -> dict[str, str]:
    # The API's parameter names, so that the purge redacts the same free text (q).
    return {k: str(v) for k, v in form.model_dump(exclude={"cursor"}, exclude_none=True,
                                                  mode="json").items()}  # fmt: skip


# --- reading --------------------------------------------------------------------------------


async def conversation_page(request: web.Request) -> web.Response:
    ident = params.object_id(request, "conversation_id", what="conversation")
    found = await reading.conversation_or_filing(
        conversation_id=ident, include_restricted=_sees_restricted(request)
    )
    if isinstance(found, reading.ConversationFiling):
        await audited(request, "conversation.read",
                      target={"account_id": "", "conversation_id": str(ident)})  # fmt: skip
        return render(request, "filing.html", {"title": "Being filed", "filing": found})
    conversation, messages = found
    await audited(request, "conversation.read",
                  target={"account_id": conversation.account_id or "",
                          "conversation_id": str(ident)})  # fmt: skip
    return render(request, "conversation.html", {
        "title": conversation.subject or f"Conversation {ident}",
        "conversation": conversation, "messages": messages,
        "html_of": request.query.get("html", ""),
    })  # fmt: skip


async def message_html(request: web.Request) -> web.Response:
    """A message's HTML part, for a sandboxed frame of the conversation page only."""
    ident = params.object_id(request, "message_id", what="message")
    message = await reading.message(message_id=ident,
                                    include_restricted=_sees_restricted(request))  # fmt: skip
    if message.html is None:
        raise NotFound(f"message {ident} has no HTML part")
    target = {"account_id": message.account_id or "", "message_id": str(ident)}
    await audited(request, "message.read", target=target)
    return web.Response(text=message.html, content_type="text/html", headers={
        "Content-Security-Policy": MESSAGE_HTML_CSP,
    })  # fmt: skip


async def message_raw(request: web.Request) -> web.Response:
    """The original ``.eml``, as the API serves it (and audits it)."""
    return await api_reading.get_raw(request)


async def attachment(request: web.Request) -> web.Response:
    return await api_reading.get_attachment(request)


# --- accounts -------------------------------------------------------------------------------


class AccountLookup(BaseModel):
    account_id: params.AccountId


async def account_lookup(request: web.Request) -> web.Response:
    form, errors = parse(request.query, AccountLookup)
    if form is None:
        return render(request, "account_lookup.html", {"title": "Open an account",
                      "errors": errors, "form": values_of(request.query, AccountLookup)},
                      status=400 if request.query else 200)  # fmt: skip
    return see_other(f"/accounts/{form.account_id}")


async def account_page(request: web.Request) -> web.Response:
    """Status, emails, counts, active holds and the purge deadline, as the role may see them
    (a deleted account's details are compliance's only)."""
    account_id = params.account_id(request)
    await audited(request, "account.read", target={"account_id": account_id})
    summary = await account_summary(account_id=account_id, now=utcnow())
    view = views.account(summary, role=role_of(request))
    conversations: list[Conversation] = []
    if "emails" in view:  # the role may see more than the status
        query: dict[str, Any] = {"account_id": account_id}
        if not _sees_restricted(request):
            query["restricted"] = {"$ne": True}
        conversations = (
            await Conversation.find(query)
            .sort("-last_message_at")
            .limit(CONVERSATIONS_SHOWN)
            .to_list()
        )
    oldest = summary.oldest_collected_at
    # Its own dates: what goes first at the maximum age, besides any deletion deadline.
    max_age = request.app[CONFIG].retention.max_age
    max_age_due = oldest + max_age if oldest is not None and "emails" in view else None
    return render(request, "account.html", {"title": f"Account {account_id}", "account": view,
                  "conversations": conversations, "shown": CONVERSATIONS_SHOWN,
                  "max_age_due": max_age_due})  # fmt: skip
