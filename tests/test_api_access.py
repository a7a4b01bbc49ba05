"""Who may call what: every route against every role, and routes that forgot to say."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from api.auth import access_of
from exports.builder import Scope, build_export, start_export
from store.documents import Role, utcnow
from store.keys import revoke_key
from tests.conftest import Api
from tests.factories import email

A, P, C, D = Role.AGENT, Role.PLATFORM, Role.COMPLIANCE, Role.ADMIN

# (method, path, roles that may) — a message id, "{m}", is filled in by the test.
MATRIX = [
    ("GET", "/api/v1/search?q=refund", {A, C, D}),
    ("GET", "/api/v1/messages/{m}", {A, C, D}),
    ("GET", "/api/v1/messages/{m}/raw", {A, C, D}),
    ("GET", "/api/v1/messages/{m}/attachments/0", {A, C, D}),
    ("GET", "/api/v1/conversations/{c}", {A, C, D}),
    ("GET", "/api/v1/accounts/acct-1", {A, P, C, D}),
    ("PUT", "/api/v1/accounts/acct-1", {P, D}),
    ("GET", "/api/v1/accounts", {P, C, D}),
    ("GET", "/api/v1/exports", {C, D}),
    ("GET", "/api/v1/audit", {D}),
    ("GET", "/api/v1/holds", {C, D}),
    ("GET", "/api/v1/retention/forecast", {C, D}),
    ("GET", "/api/v1/purge-records?account_id=acct-1", {C, D}),
    ("POST", "/api/v1/holds", {C, D}),
    ("POST", "/api/v1/holds/{h}/release", {C, D}),
    ("POST", "/api/v1/accounts/acct-1/erasure", {C, D}),
    ("POST", "/api/v1/erasures", {C, D}),
    ("POST", "/api/v1/accounts/acct-1/deletion", {P, D}),
    ("DELETE", "/api/v1/accounts/acct-1/deletion", {P, D}),
    ("POST", "/api/v1/exports", {C, D}),
    ("GET", "/api/v1/disclosures", {C, D}),
    ("GET", "/api/v1/exports/{e}", {C, D}),
    ("GET", "/api/v1/exports/{e}/download", {C, D}),
]


@pytest.fixture
async def ids(api: Api, tmp_path: Path) -> dict[str, str]:
    message = await email(account_id="acct-1", attachments=[("a.txt", "text/plain", b"attached")])
    export = await start_export(
        scope=Scope(account_id="acct-1"), account_id="acct-1", hold_id=None, created_by="t",
        now=utcnow(), max_age=timedelta(days=1),
    )  # fmt: skip
    await build_export(export, Scope(account_id="acct-1"), directory=tmp_path, now=utcnow())
    ids = {"m": str(message.id), "c": str(message.conversation_id), "e": str(export.id)}
    return ids | {"h": "{h}"}


BODIES = {
    "PUT": {"emails": ["ann@example.com"]},
    "/api/v1/holds": {"account_id": "acct-1", "kind": "dispute", "reason": "chargeback"},
    "/api/v1/exports": {"account_id": "acct-1"},
    "/api/v1/erasures": {"emails": ["someone@example.net"]},
}


async def call(api: Api, method: str, path: str, role: Role | None, token: str | None = None):  # type: ignore[no-untyped-def]
    headers = {"Authorization": f"Bearer {token}"} if token else api.headers(role)
    if "{h}" in path:  # a fresh hold to release, placed by an admin
        placed = await api.post("/api/v1/holds", json=BODIES["/api/v1/holds"])
        path = path.replace("{h}", (await placed.json())["id"])
    body = BODIES.get(method) or BODIES.get(path)
    return await api.http.request(method, path, headers=headers, json=body)


@pytest.mark.parametrize(
    ("method", "path", "allowed"), MATRIX, ids=[f"{m} {p}" for m, p, _ in MATRIX]
)
async def test_every_route_answers_each_role_as_declared(
    api: Api, ids: dict[str, str], method: str, path: str, allowed: set[Role]
) -> None:
    url = path.format(**ids)
    for role in Role:
        response = await call(api, method, url, role)
        expected = "2xx" if role in allowed else "403"
        got = "2xx" if 200 <= response.status < 300 else str(response.status)
        assert got == expected, f"{role} on {method} {url}: {response.status}"
    for token in (None, "sa_wrong_token", "not-even-a-token"):
        response = await call(api, method, url, None, token)
        assert response.status == 401
        assert response.content_type == "application/problem+json"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_the_matrix_covers_every_api_route(api: Api) -> None:
    declared = {
        (
            m,
            p.split("?")[0]
            .replace("{m}", "{message_id}")
            .replace("{c}", "{conversation_id}")
            .replace("{h}", "{hold_id}")
            .replace("{e}", "{export_id}")
            .replace("acct-1", "{account_id}")
            .replace("/0", "/{n}"),
        )
        for m, p, _ in MATRIX
    }
    routes = {
        (route.method, route.resource.canonical)
        for route in api.http.app.router.routes()
        if route.resource is not None and route.resource.canonical.startswith("/api/v1")
        and route.method != "HEAD"
    }  # fmt: skip
    routes.discard(("GET", "/api/v1/openapi.json"))
    assert routes == declared


async def test_every_route_declares_who_may_call_it(api: Api) -> None:
    for route in api.http.app.router.routes():
        if route.method == "HEAD":
            continue
        access = access_of(api.http.app, route)
        assert access is not None, f"{route.method} {route.resource} declares no access"
        assert access.roles or access.public_because


async def test_a_revoked_key_is_refused(api: Api) -> None:
    assert (await api.get("/api/v1/audit", Role.ADMIN)).status == 200
    await revoke_key(name="admin-key")
    assert (await api.get("/api/v1/audit", Role.ADMIN)).status == 401


async def test_public_routes_need_no_key(api: Api) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/api/v1/openapi.json"):
        assert (await api.get(path, None)).status == 200, path


async def test_a_wrong_role_is_recorded_in_the_audit_trail(api: Api) -> None:
    assert (await api.get("/api/v1/audit", Role.AGENT)).status == 403
    events = (await (await api.get("/api/v1/audit?action=denied")).json())["events"]
    assert [(e["actor"], e["outcome"]) for e in events] == [("agent-key", 403)]


async def test_keys_are_stored_as_hashes_only(api: Api) -> None:
    from store.documents import ApiKey

    stored = json.dumps(await ApiKey.get_pymongo_collection().find().to_list(), default=str)
    for token in api.tokens.values():
        assert token not in stored
        assert token[12:] not in stored  # not even the secret part
