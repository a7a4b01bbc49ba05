"""Who may call what: every route declares its roles (or why it is public) when it is added,
and one middleware enforces that. A route without a declaration is refused, never open."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler

from api.state import ACCESS, CONFIG, PRINCIPAL, Principal
from store import audit, keys
from store.documents import Role

log = logging.getLogger("archive.api")

AGENT_UP = frozenset({Role.AGENT, Role.COMPLIANCE, Role.ADMIN})
COMPLIANCE_UP = frozenset({Role.COMPLIANCE, Role.ADMIN})
PLATFORM_UP = frozenset({Role.PLATFORM, Role.ADMIN})
ADMIN_ONLY = frozenset({Role.ADMIN})
ANY_ROLE = frozenset(Role)


@dataclass(frozen=True)
class Access:
    roles: frozenset[Role]
    public_because: str | None = None

    @property
    def public(self) -> bool:
        return self.public_because is not None


def add_route(
    app: web.Application,
    method: str,
    path: str,
    handler: Handler,
    *,
    roles: Iterable[Role] = (),
    public_because: str | None = None,
) -> None:
    """Add a route with who may call it: ``roles``, or ``public_because`` (say why)."""
    allowed = frozenset(roles)
    if bool(allowed) == bool(public_because):
        raise ValueError(f"{method} {path}: give either roles or a reason to be public")
    route = app.router.add_route(method, path, handler)
    app[ACCESS][_route_id(route)] = Access(allowed, public_because)


def _route_id(route: web.AbstractRoute) -> str:
    resource = route.resource
    return f"{route.method} {resource.canonical if resource is not None else '?'}"


def access_of(app: web.Application, route: web.AbstractRoute) -> Access | None:
    return app[ACCESS].get(_route_id(route))


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    route = request.match_info.route
    if route.resource is None:  # no route matched: let the router answer 404/405
        return await handler(request)
    access = access_of(request.app, route)
    if access is None:
        log.error("%s declares no access; refused", _route_id(route))
        raise web.HTTPForbidden(text="this route declares no access")
    if access.public:
        return await handler(request)
    principal = await _authenticate(request)
    if principal.role not in access.roles:
        await audit.record(
            actor=principal.key_name, role=principal.role, action="denied",
            target={"route": _route_id(route)}, client_address=request.remote, outcome=403,
            max_age=request.app[CONFIG].audit_max_age,
        )  # fmt: skip
        raise web.HTTPForbidden(text=f"the {principal.role} role may not do this")
    request[PRINCIPAL] = principal
    return await handler(request)


async def _authenticate(request: web.Request) -> Principal:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    key = await keys.key_for_token(token.strip()) if scheme.lower() == "bearer" else None
    if key is None:
        raise web.HTTPUnauthorized(
            text="a valid API key is needed: Authorization: Bearer <key>",
            headers={"WWW-Authenticate": 'Bearer realm="support-archive"'},
        )
    return Principal(key_name=key.name, role=key.role)


def principal_of(request: web.Request) -> Principal:
    return request[PRINCIPAL]
