"""Writing the audit trail from a request: who (the key), what, and from where."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from api.auth import principal_of
from api.state import CONFIG
from store import audit


async def audited(
    request: web.Request,
    action: str,
    *,
    target: Mapping[str, str] | None = None,
    query: Mapping[str, str] | None = None,
) -> None:
    """Record that the caller did ``action``: called before personal data is returned."""
    principal = principal_of(request)
    await audit.record(
        actor=principal.key_name,
        role=principal.role,
        action=action,
        target=target,
        query=query,
        client_address=request.remote,
        max_age=request.app[CONFIG].audit_max_age,
    )
