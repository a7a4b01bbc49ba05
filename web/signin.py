"""Signing in with an API key (checked once, exchanged for a session) and out again."""

from __future__ import annotations

import secrets
from typing import Any

from aiohttp import web
from yarl import URL

from api.auth import AGENT_UP
from api.state import CONFIG, DATABASE, PRINCIPAL, Principal
from api.trail import audited
from store import audit, keys
from store.documents import utcnow
from web import sessions
from web.pages import current_session, render, see_other, session_of
from web.state import SESSION, SIGNIN_THROTTLE, WEB_CONFIG

# The sign-in form has no session yet: its CSRF token is a cookie of its own that the form
# repeats (a page of another site can make a browser post, but not read or set this cookie).
SIGNIN_COOKIE = "sa_signin"


def _cookie_options(request: web.Request) -> dict[str, Any]:
    return {"httponly": True, "samesite": "Strict", "secure": request.secure, "path": "/"}


def _next(request: web.Request, value: object) -> str:
    """Where to go after signing in: a path of this site only. Never ``//host`` nor
    ``/\\host``, and nothing a URL parser strips or reads as a separator (a tab, CR, LF or
    space: ``/<TAB>/host`` is ``//host`` to a browser); the path goes out percent-encoded."""
    target = value if isinstance(value, str) else ""
    if (
        not target.startswith("/")
        or target.startswith(("//", "/\\"))
        or len(target) > 2000
        or any(c == "\\" or c.isspace() or not c.isprintable() for c in target)
    ):
        return "/"
    url = URL(target)
    return "/" if url.is_absolute() or url.host else str(url)


async def home(request: web.Request) -> web.StreamResponse:
    if session_of(request).role in AGENT_UP:
        return see_other("/search")
    return render(request, "home.html", {"title": "Support Archive"})


async def signin_page(request: web.Request) -> web.Response:
    if await current_session(request) is not None:
        return see_other(_next(request, request.query.get("next")))
    return _signin_form(request, error=None, status=200)


def _signin_form(request: web.Request, *, error: str | None, status: int) -> web.Response:
    token = secrets.token_urlsafe(32)
    response = render(request, "signin.html", {
        "title": "Sign in", "error": error, "csrf": token,
        "next": _next(request, request.query.get("next")),
    }, status=status)  # fmt: skip
    response.set_cookie(SIGNIN_COOKIE, token, max_age=3600, **_cookie_options(request))
    return response


async def signin(request: web.Request) -> web.Response:
    """Check the key once; on success the browser holds only a session id (HttpOnly,
    SameSite=Strict, Secure over TLS), never the key."""
    form = await request.post()
    cookie = request.cookies.get(SIGNIN_COOKIE, "")
    posted = form.get("csrf")
    if (
        not cookie
        or not isinstance(posted, str)
        or not secrets.compare_digest(cookie.encode(), posted.encode())
    ):
        return render(request, "error.html", {"title": "Form refused", "message":
                      "This sign-in form did not come from this site, or it expired: "
                      "open the sign-in page again."}, status=403)  # fmt: skip
    throttle, client = request.app[SIGNIN_THROTTLE], request.remote or "?"
    token = form.get("key")
    token = token.strip() if isinstance(token, str) else ""
    if wait := throttle.wait(client):
        await _refused(request, token, outcome=429)
        response = _signin_form(
            request,
            status=429,
            error=(f"Too many failed sign-ins from this address: try again in {wait} seconds."),
        )
        response.headers["Retry-After"] = str(wait)
        return response
    key = await keys.key_for_token(token)
    if key is None:
        throttle.failed(client)
        await _refused(request, token, outcome=401)
        return _signin_form(request, error="This API key is not valid (or it was revoked).",
                            status=401)  # fmt: skip
    throttle.succeeded(client)
    session_id, session = await sessions.start(request.app[DATABASE], key=key, now=utcnow(),
                                               config=request.app[WEB_CONFIG])  # fmt: skip
    request[SESSION] = session
    request[PRINCIPAL] = Principal(key_name=session.key_name, role=session.role)
    await audited(request, "session.start")
    response = see_other(_next(request, form.get("next")))
    response.set_cookie(sessions.COOKIE, session_id, **_cookie_options(request))
    response.del_cookie(SIGNIN_COOKIE, path="/")
    return response


async def _refused(request: web.Request, token: str, *, outcome: int) -> None:
    """A refused sign-in, audited by the key's public prefix (``sa_`` and 8 characters, as
    ``keys list`` shows it) and the client: never the token's secret part."""
    prefix = token[:11] if token.startswith(keys.TOKEN_PREFIX) and len(token) > 11 else ""
    await audit.record(
        actor="anonymous", role=None, action="session.refused",
        target={"key_prefix": prefix} if prefix else None, client_address=request.remote,
        outcome=outcome, max_age=request.app[CONFIG].audit_max_age,
    )  # fmt: skip


async def signout(request: web.Request) -> web.Response:
    session = session_of(request)
    await audited(request, "session.end")
    await sessions.end(request.app[DATABASE], session)
    response = see_other("/signin")
    response.del_cookie(sessions.COOKIE, path="/")
    return response
