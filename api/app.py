"""The aiohttp application factory: every route, with who may call it."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from api import (
    accounts,
    audit_log,
    exports,
    health,
    metrics,
    openapi,
    reading,
    retention,
    search,
)
from api.auth import (
    ADMIN_ONLY,
    AGENT_UP,
    ANY_ROLE,
    COMPLIANCE_UP,
    PLATFORM_UP,
    add_route,
    auth_middleware,
)
from api.problems import problem_middleware
from api.state import ACCESS, CONFIG, DATABASE, OPENAPI_PATHS, SEARCH, ApiConfig
from search.index import SearchIndex, following
from store.database import Database

V1 = "/api/v1"


def create_app(
    *, database: Database, config: ApiConfig | None = None, index: SearchIndex | None = None
) -> web.Application:
    """The API app. Middlewares, outermost first: metrics see the final status, problems turn
    every error into problem+json, auth refuses before any handler runs.

    Without ``index`` (tests of the app alone) the app keeps its own index while it runs;
    ``serve`` passes the one its scheduler also uses."""
    config = config or ApiConfig()
    app = web.Application(
        middlewares=[metrics.metrics_middleware, problem_middleware, auth_middleware],
        client_max_size=config.max_body_bytes,
    )
    app[DATABASE] = database
    app[CONFIG] = config
    app[ACCESS] = {}
    app.on_response_prepare.append(_not_cached)
    if index is None:
        own = index = SearchIndex(config.search_dir, database.db.name)
        app.cleanup_ctx.append(lambda _: _following(own))
    app[SEARCH] = index
    app[OPENAPI_PATHS] = {}
    probe = "a probe for load balancers and monitoring; it shows no personal data"
    add_route(app, "GET", "/healthz", health.healthz, public_because=probe)
    add_route(app, "GET", "/readyz", health.readyz, public_because=probe)
    add_route(app, "GET", "/metrics", metrics.metrics, public_because=probe)
    add_route(
        app, "GET", f"{V1}/openapi.json", openapi.get_openapi,
        public_because="the API's description; it shows no data",
    )  # fmt: skip

    add_route(app, "PUT", f"{V1}/accounts/{{account_id}}", accounts.put_account, roles=PLATFORM_UP)
    add_route(app, "GET", f"{V1}/accounts/{{account_id}}", accounts.get_account, roles=ANY_ROLE)
    add_route(app, "GET", f"{V1}/accounts", accounts.list_accounts,
              roles=PLATFORM_UP | COMPLIANCE_UP)  # fmt: skip
    add_route(app, "GET", f"{V1}/search", search.search_messages, roles=AGENT_UP)
    conversation = f"{V1}/conversations/{{conversation_id}}"
    add_route(app, "GET", conversation, reading.get_conversation, roles=AGENT_UP)
    message = f"{V1}/messages/{{message_id}}"
    add_route(app, "GET", message, reading.get_message, roles=AGENT_UP)
    add_route(app, "GET", f"{message}/raw", reading.get_raw, roles=AGENT_UP)
    add_route(app, "GET", f"{message}/attachments/{{n}}", reading.get_attachment, roles=AGENT_UP)
    add_route(app, "GET", f"{V1}/audit", audit_log.get_audit, roles=ADMIN_ONLY)

    deletion = f"{V1}/accounts/{{account_id}}/deletion"
    add_route(app, "POST", deletion, retention.delete_account, roles=PLATFORM_UP)
    add_route(app, "DELETE", deletion, retention.restore_account, roles=PLATFORM_UP)
    erasure = f"{V1}/accounts/{{account_id}}/erasure"
    add_route(app, "POST", erasure, retention.erase_account, roles=COMPLIANCE_UP)
    add_route(app, "POST", f"{V1}/erasures", retention.erase_person, roles=COMPLIANCE_UP)
    add_route(app, "POST", f"{V1}/holds", retention.create_hold, roles=COMPLIANCE_UP)
    add_route(app, "GET", f"{V1}/holds", retention.list_holds, roles=COMPLIANCE_UP)
    release = f"{V1}/holds/{{hold_id}}/release"
    add_route(app, "POST", release, retention.release_hold, roles=COMPLIANCE_UP)
    forecast = f"{V1}/retention/forecast"
    add_route(app, "GET", forecast, retention.get_forecast, roles=COMPLIANCE_UP)
    records = f"{V1}/purge-records"
    add_route(app, "GET", records, retention.get_purge_records, roles=COMPLIANCE_UP)

    app.cleanup_ctx.append(exports.background_tasks)
    add_route(app, "POST", f"{V1}/exports", exports.create_export, roles=COMPLIANCE_UP)
    add_route(app, "GET", f"{V1}/exports", exports.list_exports, roles=COMPLIANCE_UP)
    export = f"{V1}/exports/{{export_id}}"
    add_route(app, "GET", export, exports.get_export, roles=COMPLIANCE_UP)
    add_route(app, "GET", f"{export}/download", exports.download_export, roles=COMPLIANCE_UP)
    add_route(app, "GET", f"{V1}/disclosures", exports.list_disclosures, roles=COMPLIANCE_UP)
    return app


async def _following(index: SearchIndex) -> AsyncIterator[None]:
    async with following(index):
        yield


async def _not_cached(request: web.Request, response: web.StreamResponse) -> None:
    """No browser or proxy keeps an answer of the API or of a webhook: they carry personal
    data (the web pages set the same; only static files are cacheable)."""
    if request.path.startswith(("/api/", "/webhooks/")):
        response.headers.setdefault("Cache-Control", "no-store")
