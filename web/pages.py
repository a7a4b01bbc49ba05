"""What every page goes through: its session and role, the CSRF token of a form that changes
something, the security headers, and errors as HTML pages (never problem+json)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp_jinja2
from aiohttp import web
from pydantic import BaseModel, ValidationError

from api.auth import ADMIN_ONLY, AGENT_UP, COMPLIANCE_UP
from api.state import CONFIG, DATABASE, PRINCIPAL, Principal
from store import audit
from store.accounts import ACCOUNT_ID_RULE
from store.documents import Role, utcnow
from store.errors import Conflict, NotFound, is_transient
from web import sessions
from web.state import SESSION, TEMPLATES, WEB_CONFIG, Session

log = logging.getLogger("archive.web")

PageHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]
M = TypeVar("M", bound=BaseModel)

# No inline script or style anywhere: everything the pages load is a file of this origin.
PAGE_CSP = "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
SECURITY_HEADERS = {
    "Content-Security-Policy": PAGE_CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@dataclass(frozen=True)
class NavItem:
    label: str
    href: str
    roles: frozenset[Role]


NAV = [
    NavItem("Search", "/search", AGENT_UP),
    NavItem("Holds", "/holds", COMPLIANCE_UP),
    NavItem("Forecast", "/retention/forecast", COMPLIANCE_UP),
    NavItem("Exports", "/exports", COMPLIANCE_UP),
    NavItem("Disclosures", "/disclosures", COMPLIANCE_UP),
    NavItem("Purge records", "/purge-records", COMPLIANCE_UP),
    NavItem("Verify purge", "/verify-purge", COMPLIANCE_UP),
    NavItem("API keys", "/keys", ADMIN_ONLY),
    NavItem("Audit log", "/audit", ADMIN_ONLY),
]


def secure(response: web.StreamResponse) -> web.StreamResponse:
    """The headers every web response carries; a response that set its own CSP (a message's
    HTML, an attachment) keeps it."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def guarded(handler: PageHandler, *, roles: frozenset[Role] | None, changes: bool) -> PageHandler:
    """``handler`` behind its checks: a live session whose role is in ``roles`` (None: a page
    for signed-out visitors too) and, when it ``changes`` something, the form's CSRF token."""

    @functools.wraps(handler)
    async def page(request: web.Request) -> web.StreamResponse:
        try:
            refused = await _refusal(request, roles=roles, changes=changes)
            response = refused or await handler(request)
        except Exception as exc:  # every error is a page of its own
            response = _error_response(request, exc)
        return secure(response)

    return page


async def _refusal(
    request: web.Request, *, roles: frozenset[Role] | None, changes: bool
) -> web.StreamResponse | None:
    session = await current_session(request)
    if session is not None:
        request[SESSION] = session
        request[PRINCIPAL] = Principal(key_name=session.key_name, role=session.role)
    if roles is None:
        return None
    if session is None:
        return _sign_in_first(request)
    if session.role not in roles:
        await _record_denial(request, session)
        return render(request, "error.html", {"title": "Not allowed",
                      "message": f"The {session.role} role may not see this page."},
                      status=403)  # fmt: skip
    if changes and not await _csrf_ok(request, session):
        return render(request, "error.html", {"title": "Form refused",
                      "message": "This form was not sent from a page of this site, or it is "
                                 "older than your session: reload the page and try again."},
                      status=403)  # fmt: skip
    return None


async def current_session(request: web.Request) -> Session | None:
    if SESSION in request:
        return request[SESSION]
    session_id = request.cookies.get(sessions.COOKIE)
    if not session_id:
        return None
    return await sessions.load(request.app[DATABASE], session_id, now=utcnow(),
                               config=request.app[WEB_CONFIG])  # fmt: skip


def _sign_in_first(request: web.Request) -> web.StreamResponse:
    if request.method in ("GET", "HEAD"):
        return see_other(f"/signin?next={quote(request.rel_url.path_qs, safe='')}")
    return render(request, "error.html", {"title": "Signed out",
                  "message": "Your session has ended: sign in again."}, status=401)  # fmt: skip


async def _record_denial(request: web.Request, session: Session) -> None:
    resource = request.match_info.route.resource
    route = f"{request.method} {resource.canonical if resource else request.path}"
    await audit.record(
        actor=session.key_name, role=session.role, action="denied", target={"route": route},
        client_address=request.remote, outcome=403, max_age=request.app[CONFIG].audit_max_age,
    )  # fmt: skip


async def _csrf_ok(request: web.Request, session: Session) -> bool:
    if request.content_type not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        return False
    form = await request.post()
    token = form.get("csrf")
    return sessions.csrf_matches(session, token if isinstance(token, str) else None)


def _error_response(request: web.Request, exc: Exception) -> web.StreamResponse:
    if isinstance(exc, web.HTTPException) and exc.status < 400:
        return web.Response(status=exc.status, headers=exc.headers)
    if isinstance(exc, NotFound):
        return _error(request, 404, "Not found", str(exc) or "There is nothing here.")
    if isinstance(exc, Conflict):
        return _error(request, 409, "Not possible now", str(exc))
    if isinstance(exc, ValidationError):
        detail = "; ".join(f"{e['loc'][0] if e['loc'] else 'input'}: {e['msg']}"
                           for e in exc.errors(include_url=False))  # fmt: skip
        return _error(request, 422, "Invalid input", detail)
    if isinstance(exc, web.HTTPException):
        return _error(request, exc.status, exc.reason, exc.text or exc.reason)
    if is_transient(exc):
        log.warning("%s %s: database unavailable: %s", request.method, request.path,
                    type(exc).__name__)  # fmt: skip
        response = _error(
            request,
            503,
            "Unavailable",
            "The archive's database is not answering: try again shortly.",
        )
        response.headers["Retry-After"] = "5"
        return response
    log.exception("%s %s failed", request.method, request.path)
    return _error(request, 500, "Error", "An internal error occurred; it has been logged.")


def _error(request: web.Request, status: int, title: str, message: str) -> web.Response:
    try:
        return render(request, "error.html", {"title": title, "message": message}, status=status)
    except Exception:  # the error page itself failed: say so in plain text
        log.exception("%s %s: the error page failed", request.method, request.path)
        return web.Response(status=status, text=f"{title}: {message}")


def see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def render(
    request: web.Request, template: str, context: Mapping[str, Any], *, status: int = 200
) -> web.Response:
    session = request.get(SESSION)
    nav = [n for n in NAV if session is not None and session.role in n.roles]
    base = {"session": session, "nav": nav, "path": request.path}
    return aiohttp_jinja2.render_template(
        template, request, base | dict(context), status=status, app_key=TEMPLATES
    )


def session_of(request: web.Request) -> Session:
    return request[SESSION]


def role_of(request: web.Request) -> Role:
    return request[SESSION].role


# --- forms ----------------------------------------------------------------------------------


def values_of(source: Mapping[str, Any], model: type[BaseModel]) -> dict[str, str]:
    """The fields of ``model`` that were filled in (stripped; an empty field is absent)."""
    values = {}
    for name in model.model_fields:
        value = source.get(name)
        if isinstance(value, str) and value.strip():
            values[name] = value.strip()
    return values


def parse(source: Mapping[str, Any], model: type[M]) -> tuple[M | None, dict[str, str]]:
    """The form as ``model``, or the message of each bad field (to show next to it)."""
    try:
        return model.model_validate(values_of(source, model)), {}
    except ValidationError as exc:
        errors: dict[str, str] = {}
        for error in exc.errors(include_url=False):
            field = str(error["loc"][0]) if error["loc"] else "form"
            errors.setdefault(field, _message(field, error["type"], error["msg"]))
        return None, errors


# What a field that does not match its pattern should hold (pydantic would print the regex).
FIELD_RULES = {
    "account_id": ACCOUNT_ID_RULE,
    "conversation_id": "a conversation id: 24 characters 0-9 and a-f",
    "hold_id": "a hold id: 24 characters 0-9 and a-f",
}


def _message(field: str, kind: str, text: str) -> str:
    if kind == "string_pattern_mismatch":
        return FIELD_RULES.get(field, "this value is not allowed here")
    # pydantic's "Value error, must be..." reads badly next to a field.
    return text.removeprefix("Value error, ")
