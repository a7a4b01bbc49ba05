"""Liveness and readiness probes."""

from __future__ import annotations

from aiohttp import web

from api.problems import unavailable
from api.state import DATABASE


async def healthz(request: web.Request) -> web.Response:
    """The process is up and its event loop answers."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """The process can do its job: the database answers."""
    if await request.app[DATABASE].ping(within=2.0):
        return web.json_response({"status": "ready", "database": "ok"})
    return unavailable("the database is not reachable")
