"""What each role sees of an account: once deleted, agents and the platform see its status
only; a hold's reason and case reference are for compliance and admin."""

from __future__ import annotations

import json

import pytest

from store.documents import Role
from tests.conftest import Api
from tests.factories import email

STATUS_ONLY = {"id", "status", "deleted_at", "purge_due_at", "purged_at"}
SECRETS = ("ann@example.com", "Ann Customer", "Operation Nightjar", "PJ-2026-0042")


async def an_account_under_investigation(api: Api, *, deleted: bool) -> None:
    body = {"emails": ["ann@example.com"], "name": "Ann Customer"}
    assert (await api.put("/api/v1/accounts/acct-7", Role.PLATFORM, json=body)).status == 201
    await email(account_id="acct-7")
    hold = {"account_id": "acct-7", "kind": "criminal_investigation",
            "reason": "Operation Nightjar", "case_ref": "PJ-2026-0042"}  # fmt: skip
    assert (await api.post("/api/v1/holds", Role.COMPLIANCE, json=hold)).status == 201
    if deleted:
        response = await api.post("/api/v1/accounts/acct-7/deletion", Role.PLATFORM)
        assert response.status == 200


@pytest.mark.parametrize("role", [Role.AGENT, Role.PLATFORM])
async def test_a_deleted_account_shows_agents_and_the_platform_its_status_only(
    api: Api, role: Role
) -> None:
    await an_account_under_investigation(api, deleted=True)
    response = await api.get("/api/v1/accounts/acct-7", role)
    assert response.status == 200
    view = await response.json()
    assert set(view) == STATUS_ONLY
    assert view["status"] == "deleted" and view["purge_due_at"] is not None
    assert not any(secret in json.dumps(view) for secret in SECRETS)


async def test_the_platform_deleting_an_account_is_answered_with_its_status_only(
    api: Api,
) -> None:
    await an_account_under_investigation(api, deleted=False)
    response = await api.post("/api/v1/accounts/acct-7/deletion", Role.PLATFORM)
    assert set(await response.json()) == STATUS_ONLY


@pytest.mark.parametrize("role", [Role.COMPLIANCE, Role.ADMIN])
async def test_compliance_and_admin_see_a_deleted_account_whole_with_its_holds(
    api: Api, role: Role
) -> None:
    await an_account_under_investigation(api, deleted=True)
    view = await (await api.get("/api/v1/accounts/acct-7", role)).json()
    assert (view["emails"], view["name"]) == (["ann@example.com"], "Ann Customer")
    assert view["counts"] == {"conversations": 1, "messages": 1}
    [hold] = view["active_holds"]
    assert (hold["reason"], hold["case_ref"]) == ("Operation Nightjar", "PJ-2026-0042")


@pytest.mark.parametrize("role", [Role.AGENT, Role.PLATFORM])
async def test_agents_and_the_platform_see_an_active_accounts_holds_without_reason_or_case(
    api: Api, role: Role
) -> None:
    await an_account_under_investigation(api, deleted=False)
    view = await (await api.get("/api/v1/accounts/acct-7", role)).json()
    assert view["emails"] == ["ann@example.com"]
    [hold] = view["active_holds"]
    assert hold["kind"] == "criminal_investigation"
    assert "reason" not in hold and "case_ref" not in hold
    assert "Operation Nightjar" not in json.dumps(view) and "PJ-2026" not in json.dumps(view)


async def test_the_description_says_what_agents_see_of_a_deleted_account(api: Api) -> None:
    spec = await (await api.get("/api/v1/openapi.json", None)).json()
    account = spec["components"]["schemas"]["Account"]
    assert set(account["required"]) == STATUS_ONLY
    assert "status only" in account["description"]
