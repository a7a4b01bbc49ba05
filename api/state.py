"""The typed keys of everything the aiohttp app (and a request) carries, in one place."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from retention.rules import RetentionPolicy
from search.index import SearchIndex
from store.database import Database
from store.documents import Role

if TYPE_CHECKING:
    from api.auth import Access


@dataclass(frozen=True)
class ApiConfig:
    """What the API needs to know of the settings (built by ``service/``)."""

    max_body_bytes: int = 10 * 1024 * 1024
    audit_max_age: timedelta = timedelta(days=395)
    export_dir: Path = Path("./var/exports")
    # Where the app keeps its own search index when the service gives it none (tests).
    search_dir: Path = Path("./var/search")
    export_max_age: timedelta = timedelta(days=7)
    # The service passes the configured policy; this default serves tests of the bare app.
    retention: RetentionPolicy = field(
        default_factory=lambda: RetentionPolicy(
            grace=timedelta(days=180), max_age=timedelta(days=1095), secret_key=b"test-only"
        )
    )


DATABASE = web.AppKey("database", Database)
CONFIG = web.AppKey("config", ApiConfig)
SEARCH = web.AppKey("search", SearchIndex)
ACCESS = web.AppKey("access", dict[str, "Access"])
# OpenAPI path items of routes that other packages add to the app (the chat webhooks).
OPENAPI_PATHS = web.AppKey("openapi_paths", dict[str, dict[str, object]])


@dataclass(frozen=True)
class Principal:
    """Who is calling: the API key's name and role."""

    key_name: str
    role: Role


# Background work of the app (exports being built); awaited when the app shuts down.
TASKS = web.AppKey("tasks", set[asyncio.Task[object]])
# Set by the auth middleware on every authenticated request.
PRINCIPAL = web.RequestKey("principal", Principal)
