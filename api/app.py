"""The aiohttp application factory."""

from __future__ import annotations

from aiohttp import web

from api import health, metrics
from api.problems import problem_middleware
from api.state import CONFIG, DATABASE, ApiConfig
from store.database import Database


def create_app(*, database: Database, config: ApiConfig | None = None) -> web.Application:
    """The API app. Problem middleware is innermost so metrics see the final status."""
    config = config or ApiConfig()
    app = web.Application(
        middlewares=[metrics.metrics_middleware, problem_middleware],
        client_max_size=config.max_body_bytes,
    )
    app[DATABASE] = database
    app[CONFIG] = config
    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/readyz", health.readyz)
    app.router.add_get("/metrics", metrics.metrics)
    return app
