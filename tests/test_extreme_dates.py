"""Every date the API's schema lets through files (clamped) or is a 422 naming the field: never
a 500. The extremes of what JSON Schema's date-time allows, at every route that takes one."""

from __future__ import annotations

from typing import Any

import pytest

from store.documents import Role
from tests.conftest import Api
from tests.test_chat import post, transcript

EXTREMES = ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "0001-01-01T00:00:00+14:00",
            "9999-12-31T23:59:59-12:00", "1970-01-01T00:00:00Z"]  # fmt: skip


@pytest.mark.parametrize("when", EXTREMES)
async def test_a_chat_message_of_any_date_is_filed_or_refused_by_field(api: Api, when: str) -> None:
    payload: dict[str, Any] = transcript(1)
    payload["messages"][0]["sent_at"] = when
    response = await post(api.http, payload, filed=False)
    assert response.status in (201, 422), await response.text()
    if response.status == 422:  # past UTC's range once its zone is applied
        fields = {e["field"] for e in (await response.json())["errors"]}
        assert fields == {"messages[0].sent_at"}


@pytest.mark.parametrize("when", EXTREMES)
async def test_searching_from_or_until_any_date_answers(api: Api, when: str) -> None:
    for name in ("since", "until"):
        response = await api.get(f"/api/v1/search?{name}={when.replace('+', '%2B')}", Role.AGENT)
        assert response.status in (200, 400, 422), (name, await response.text())


@pytest.mark.parametrize("when", EXTREMES)
async def test_a_deletion_or_hold_at_any_date_answers(api: Api, when: str) -> None:
    await api.put("/api/v1/accounts/acct-x", Role.PLATFORM, json={"emails": ["a@example.com"]})
    deleted = await api.post("/api/v1/accounts/acct-x/deletion", Role.PLATFORM,
                             json={"deleted_at": when})  # fmt: skip
    assert deleted.status in (200, 201, 202, 409, 422), await deleted.text()
    if deleted.status == 422:
        assert {e["field"] for e in (await deleted.json())["errors"]} == {"deleted_at"}
    held = await api.post(
        "/api/v1/holds",
        Role.COMPLIANCE,
        json={"account_id": "acct-x", "kind": "dispute", "reason": "r", "expires_at": when},
    )
    assert held.status in (201, 409, 422), await held.text()
    if held.status == 422:
        assert {e["field"] for e in (await held.json())["errors"]} == {"expires_at"}
