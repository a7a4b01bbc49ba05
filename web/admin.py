"""The admins' pages: API keys (create, showing the token once; list; revoke) and the audit
log with its filters."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

from aiohttp import web
from beanie import PydanticObjectId
from pydantic import BaseModel, Field, ValidationError

from api import params
from api.audit_log import AuditCursor
from api.state import DATABASE
from api.trail import audited
from store import keys
from store.audit import audit_events
from store.documents import Role
from web import sessions
from web.pages import parse, render, see_other, values_of

AUDIT_PAGE = 50
KeyName = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][\w.@-]*$")]


class KeyForm(BaseModel):
    name: KeyName
    role: Role


class RevokeForm(BaseModel):
    name: Annotated[str, Field(min_length=1, max_length=200)]


async def keys_page(request: web.Request) -> web.Response:
    return await _keys(request, form={}, errors={})


async def _keys(
    request: web.Request,
    *,
    form: dict[str, str],
    errors: dict[str, str],
    created: tuple[str, str] | None = None,
    status: int = 200,
) -> web.Response:
    return render(request, "keys.html", {
        "title": "API keys", "keys": await keys.list_keys(), "roles": list(Role), "form": form,
        "errors": errors, "created": created, "revoked": request.query.get("revoked"),
    }, status=status)  # fmt: skip


async def create_key(request: web.Request) -> web.Response:
    """A new key; the page that answers is the only place its token is ever shown (it is not
    a redirect: the token never goes into a URL or the history)."""
    posted = await request.post()
    form, errors = parse(posted, KeyForm)
    if form is None:
        return await _keys(request, form=values_of(posted, KeyForm), errors=errors, status=422)
    key, token = await keys.create_key(name=form.name, role=form.role)
    await audited(request, "key.create", target={"key": form.name, "role": form.role.value})
    return await _keys(request, form={}, errors={}, created=(key.name, token), status=201)


async def revoke_key(request: web.Request) -> web.Response:
    """Revoke a key; the browsers signed in with it are signed out at once."""
    form, errors = parse(await request.post(), RevokeForm)
    if form is None:
        return await _keys(request, form={}, errors=errors, status=422)
    key = await keys.revoke_key(name=form.name)
    await audited(request, "key.revoke", target={"key": form.name})
    await sessions.end_sessions_of_key(request.app[DATABASE], key_id=str(key.id))
    return see_other(f"/keys?{urlencode({'revoked': key.name})}")


class AuditForm(BaseModel):
    actor: Annotated[str, Field(max_length=200)] | None = None
    action: Annotated[str, Field(max_length=100, pattern=r"^[a-z._]+$")] | None = None
    account_id: params.AccountId | None = None
    since: date | None = None
    until: date | None = None
    cursor: Annotated[str, Field(max_length=200)] | None = None


async def audit_page(request: web.Request) -> web.Response:
    form, errors = parse(request.query, AuditForm)
    context: dict[str, Any] = {"title": "Audit log", "form": values_of(request.query, AuditForm),
                               "errors": errors, "events": [], "next_url": None}  # fmt: skip
    if form is None:
        return render(request, "audit.html", context, status=400)
    try:
        after = _after(form.cursor)
    except ValidationError:
        context["errors"] = {"cursor": "not a page link of this log"}
        return render(request, "audit.html", context, status=400)
    page = await audit_events(
        actor=form.actor, action=form.action, account_id=form.account_id,
        since=_day(form.since), until=_day(form.until + timedelta(days=1) if form.until else None),
        limit=AUDIT_PAGE, after=after,
    )  # fmt: skip
    context["events"] = page.items
    if page.next_key is not None:
        values = form.model_dump(exclude={"cursor"}, exclude_none=True, mode="json")
        cursor = params.page_cursor(page.next_key)
        context["next_url"] = "/audit?" + urlencode(values | {"cursor": cursor})
    return render(request, "audit.html", context)


def _after(cursor: str | None) -> tuple[datetime, PydanticObjectId] | None:
    if not cursor:
        return None
    data = params.decode_cursor(cursor, AuditCursor)
    return data.t, PydanticObjectId(data.i)


def _day(day: date | None) -> datetime | None:
    return datetime.combine(day, time(0), tzinfo=UTC) if day else None
