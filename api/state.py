"""The typed keys of everything the aiohttp app carries, declared in one place."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from store.database import Database


@dataclass(frozen=True)
class ApiConfig:
    """What the API needs to know of the settings (built by ``service/``)."""

    max_body_bytes: int = 10 * 1024 * 1024


DATABASE = web.AppKey("database", Database)
CONFIG = web.AppKey("config", ApiConfig)
