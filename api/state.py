"""The typed keys of everything the aiohttp app (and a request) carries, in one place."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from aiohttp import web

from store.database import Database
from store.documents import Role

if TYPE_CHECKING:
    from api.auth import Access


@dataclass(frozen=True)
class ApiConfig:
    """What the API needs to know of the settings (built by ``service/``)."""

    max_body_bytes: int = 10 * 1024 * 1024
    audit_max_age: timedelta = timedelta(days=395)
    retention_grace: timedelta = timedelta(days=180)


DATABASE = web.AppKey("database", Database)
CONFIG = web.AppKey("config", ApiConfig)
ACCESS = web.AppKey("access", dict[str, "Access"])
# OpenAPI path items of routes that other packages add to the app (the chat webhooks).
OPENAPI_PATHS = web.AppKey("openapi_paths", dict[str, dict[str, object]])


@dataclass(frozen=True)
class Principal:
    """Who is calling: the API key's name and role."""

    key_name: str
    role: Role


# Set by the auth middleware on every authenticated request.
PRINCIPAL = web.RequestKey("principal", Principal)
