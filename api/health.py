"""Liveness and readiness probes."""

from __future__ import annotations

from aiohttp import web

from api.problems import unavailable
from api.state import DATABASE, SEARCH


async def healthz(request: web.Request) -> web.Response:
    """The process is up and its event loop answers."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """The process can do its job: the database answers. The search index's state is said
    too (``ready``; ``catching up`` while it rebuilds or follows from far behind; ``degraded``
    while it cannot be written, with why); the process still takes mail and webhooks
    meanwhile (Chatwoot never retries a call), so it is ready all the same."""
    if await request.app[DATABASE].ping(within=2.0):
        index = request.app[SEARCH]
        search = "ready" if index.ready else "catching up"
        body = {"status": "ready", "database": "ok", "search": search}
        if index.degraded is not None:
            body |= {"search": "degraded", "search_problem": index.degraded}
        return web.json_response(body)
    return unavailable("the database is not reachable")
