"""``add_web``: the web interface's pages, on the API's app, each with the roles it allows."""

from __future__ import annotations

import mimetypes
from collections.abc import Awaitable, Callable
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import NamedTuple

import aiohttp_jinja2
import jinja2
from aiohttp import web

from api.auth import ADMIN_ONLY, AGENT_UP, ANY_ROLE, COMPLIANCE_UP, add_route
from api.state import DATABASE
from store.documents import Role, iso
from web import admin, agents, compliance, sessions, signin
from web.pages import guarded, secure
from web.state import SIGNIN_THROTTLE, TEMPLATES, WEB_CONFIG, WEB_ROUTES, WebConfig
from web.throttle import SignInThrottle

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
STATIC = Path(str(resources.files("web") / "static"))
TEMPLATE_DIR = Path(str(resources.files("web") / "templates"))
# Why the API's auth middleware lets the pages through: they check a session, not a bearer key.
PAGE = "a web page: it checks its session's role itself (web.pages.guarded)"


class Page(NamedTuple):
    method: str
    path: str
    handler: Handler
    roles: frozenset[Role] | None  # None: open to signed-out visitors
    changes: bool = False  # a form that changes something: CSRF token required


PAGES = [
    Page("GET", "/", signin.home, ANY_ROLE),
    Page("GET", "/signin", signin.signin_page, None),
    Page("POST", "/signin", signin.signin, None),
    Page("POST", "/signout", signin.signout, ANY_ROLE, changes=True),
    Page("GET", "/search", agents.search_page, AGENT_UP),
    Page("GET", "/conversations/{conversation_id}", agents.conversation_page, AGENT_UP),
    Page("GET", "/messages/{message_id}/html", agents.message_html, AGENT_UP),
    Page("GET", "/messages/{message_id}/raw", agents.message_raw, AGENT_UP),
    Page("GET", "/messages/{message_id}/attachments/{n}", agents.attachment, AGENT_UP),
    Page("GET", "/accounts", agents.account_lookup, AGENT_UP),
    Page("GET", "/accounts/{account_id}", agents.account_page, AGENT_UP),
    Page("GET", "/holds", compliance.holds_page, COMPLIANCE_UP),
    Page("POST", "/holds", compliance.place_hold, COMPLIANCE_UP, changes=True),
    Page("POST", "/holds/{hold_id}/release", compliance.release_hold, COMPLIANCE_UP, True),
    Page("GET", "/retention/forecast", compliance.forecast_page, COMPLIANCE_UP),
    Page("GET", "/exports", compliance.exports_page, COMPLIANCE_UP),
    Page("POST", "/exports", compliance.start_export, COMPLIANCE_UP, changes=True),
    Page("GET", "/exports/{export_id}", compliance.export_page, COMPLIANCE_UP),
    Page("GET", "/exports/{export_id}/download", compliance.download_export, COMPLIANCE_UP),
    Page("GET", "/disclosures", compliance.disclosures_page, COMPLIANCE_UP),
    Page("GET", "/purge-records", compliance.purge_records_page, COMPLIANCE_UP),
    Page("GET", "/verify-purge", compliance.verify_purge_page, COMPLIANCE_UP),
    Page("GET", "/keys", admin.keys_page, ADMIN_ONLY),
    Page("POST", "/keys", admin.create_key, ADMIN_ONLY, changes=True),
    Page("POST", "/keys/revoke", admin.revoke_key, ADMIN_ONLY, changes=True),
    Page("GET", "/audit", admin.audit_page, ADMIN_ONLY),
]


def add_web(app: web.Application, *, config: WebConfig | None = None) -> None:
    """Serve the web interface at ``/`` on ``app`` (the API's). Idempotent: a second call
    changes nothing."""
    if WEB_ROUTES in app:
        return
    app[WEB_CONFIG] = config or WebConfig()
    app[WEB_ROUTES] = {}
    app[SIGNIN_THROTTLE] = SignInThrottle()
    _templates(app)
    for page in PAGES:
        handler = guarded(page.handler, roles=page.roles, changes=page.changes)
        add_route(app, page.method, page.path, handler, public_because=PAGE)
        app[WEB_ROUTES][f"{page.method} {page.path}"] = page.roles
    add_route(app, "GET", "/static/{name}", static_file,
              public_because="the web interface's own CSS and icon; no data")  # fmt: skip
    app[WEB_ROUTES]["GET /static/{name}"] = None
    app.on_startup.append(_create_indexes)


async def _create_indexes(app: web.Application) -> None:
    await sessions.create_indexes(app[DATABASE])


def _templates(app: web.Application) -> None:
    env = aiohttp_jinja2.setup(
        app, loader=jinja2.FileSystemLoader(TEMPLATE_DIR), autoescape=True,
        undefined=jinja2.StrictUndefined, app_key=TEMPLATES,
    )  # fmt: skip
    env.filters["when"] = when
    env.filters["iso"] = lambda value: iso(value) if isinstance(value, datetime) else value
    env.filters["size"] = size


def is_web_route(app: web.Application, route: web.AbstractRoute) -> bool:
    """Whether ``route`` is one of the web interface's (not part of the API's description)."""
    resource = route.resource
    return resource is not None and f"{route.method} {resource.canonical}" in app.get(
        WEB_ROUTES, {}
    )


def when(value: datetime | str | None) -> str:
    """A time as the pages show it: UTC to the minute."""
    if value is None or value == "":
        return "—"
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def size(value: int | None) -> str:
    if value is None:
        return "—"
    amount = float(value)
    for unit in ("bytes", "KB", "MB", "GB"):
        if amount < 1024 or unit == "GB":
            return f"{value} bytes" if unit == "bytes" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{value} bytes"


STATIC_FILES = frozenset(p.name for p in STATIC.iterdir() if p.is_file())


async def static_file(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name not in STATIC_FILES:
        return secure(web.Response(status=404, text="not found"))
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    response = web.FileResponse(STATIC / name, headers={"Content-Type": content_type})
    secure(response)
    response.headers["Cache-Control"] = "public, max-age=3600"
    return response
