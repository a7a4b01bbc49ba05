"""The typed keys of what the web interface keeps on the app and on a request."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import jinja2
from aiohttp import web

from store.documents import Role
from web.throttle import SignInThrottle


@dataclass(frozen=True)
class WebConfig:
    """How long a session lives: ``idle`` since its last request, ``absolute`` since sign-in."""

    idle: timedelta = timedelta(minutes=30)
    absolute: timedelta = timedelta(hours=12)


@dataclass(frozen=True)
class Session:
    """A signed-in browser: the key it signed in with, its role, its CSRF token."""

    id_sha256: str
    key_id: str
    key_name: str
    role: Role
    csrf: str
    created_at: datetime
    last_seen_at: datetime


WEB_CONFIG = web.AppKey("web_config", WebConfig)
# Route ids ("GET /search") of the pages, with the roles each allows (None: signed out too).
WEB_ROUTES = web.AppKey("web_routes", dict[str, frozenset[Role] | None])
TEMPLATES = web.AppKey("web_templates", jinja2.Environment)
SIGNIN_THROTTLE = web.AppKey("web_signin_throttle", SignInThrottle)
SESSION = web.RequestKey("web_session", Session)
