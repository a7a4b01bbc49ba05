"""Accounts over the API: the platform registers them; unlinked conversations follow."""

from __future__ import annotations

from datetime import timedelta

from retention.sweep import sweep
from store.accounts import mark_deleted
from store.database import Database
from store.documents import Hold, HoldKind, Role, utcnow
from tests.conftest import Api
from tests.factories import email
from tests.test_retention import POLICY


async def test_registering_an_account_is_201_then_200(api: Api) -> None:
    body = {"emails": ["Ann@Example.com", "ann.work@example.org"], "name": "Ann"}
    created = await api.put("/api/v1/accounts/acct-ann", Role.PLATFORM, json=body)
    assert created.status == 201
    account = await created.json()
    assert account["emails"] == ["ann.work@example.org", "ann@example.com"]
    assert account["status"] == "active"
    again = await api.put("/api/v1/accounts/acct-ann", Role.PLATFORM, json={"emails": []})
    assert again.status == 200
    assert (await again.json())["emails"] == []


async def test_registering_a_purged_account_again_says_a_new_life_started(
    api: Api, database: Database
) -> None:
    """201 with ``new_life``, and compliance sees which life of the id it is and since when."""
    path, body = "/api/v1/accounts/acct-ann", {"emails": ["ann@example.com"]}
    first = await api.put(path, Role.PLATFORM, json=body)
    assert first.status == 201 and (await first.json())["new_life"] is False
    assert (await (await api.get(path, Role.COMPLIANCE)).json())["life"] == 1
    assert (await api.post(f"{path}/erasure", Role.COMPLIANCE)).status == 202
    await sweep(database, now=utcnow(), policy=POLICY)

    again = await api.put(path, Role.PLATFORM, json=body)
    assert again.status == 201, "a new life of a purged id is created, not updated"
    assert (await again.json())["new_life"] is True
    account = await (await api.get(path, Role.COMPLIANCE)).json()
    assert account["life"] == 2 and account["life_started_at"] is not None
    assert account["purged_at"] is None and account["status"] == "active"
    update = await api.put(path, Role.PLATFORM, json=body)
    assert update.status == 200 and (await update.json())["new_life"] is False
    assert "life" not in await (await api.get(path, Role.PLATFORM)).json()


async def test_registration_links_the_unlinked_conversations_of_its_emails(api: Api) -> None:
    message = await email()
    assert message.account_id is None
    await api.put("/api/v1/accounts/acct-ann", Role.PLATFORM, json={"emails": ["ann@example.com"]})
    account = await (await api.get("/api/v1/accounts/acct-ann", Role.AGENT)).json()
    assert account["counts"] == {"conversations": 1, "messages": 1}


async def test_an_account_shows_its_active_holds_and_purge_due(api: Api) -> None:
    message = await email(account_id="acct-9")
    await Hold(
        conversation_id=message.conversation_id, kind=HoldKind.DISPUTE, reason="chargeback",
        created_by="legal",
    ).insert()  # fmt: skip
    await Hold(
        account_id="acct-9", kind=HoldKind.DISPUTE, reason="over", created_by="legal",
        released_at=utcnow(),
    ).insert()  # fmt: skip
    await mark_deleted(account_id="acct-9", deleted_at=utcnow(), grace=timedelta(days=180))
    account = await (await api.get("/api/v1/accounts/acct-9", Role.COMPLIANCE)).json()
    assert account["status"] == "deleted"
    assert account["purge_due_at"] is not None
    assert [h["reason"] for h in account["active_holds"]] == ["chargeback"]


async def test_an_unknown_account_is_404(api: Api) -> None:
    response = await api.get("/api/v1/accounts/nobody")
    assert response.status == 404
    assert response.content_type == "application/problem+json"


async def test_invalid_account_bodies_are_422_naming_the_field(api: Api) -> None:
    for body, field in [
        ({"emails": ["not-an-email"]}, "emails[0]"),
        ({"emails": "ann@example.com"}, "emails"),
        ({"emails": [], "extra": 1}, "extra"),
        ({"emails": {"$ne": None}}, "emails"),
    ]:
        response = await api.put("/api/v1/accounts/acct-x", Role.PLATFORM, json=body)
        assert response.status == 422, body
        assert field in {e["field"] for e in (await response.json())["errors"]}


async def test_a_bad_address_is_said_in_words_not_as_a_pattern(api: Api) -> None:
    body = {"emails": ["ann@example.com", "ann at example.com"]}
    response = await api.put("/api/v1/accounts/acct-x", Role.PLATFORM, json=body)
    assert response.status == 422
    [error] = (await response.json())["errors"]
    assert error == {
        "field": "emails[1]",
        "message": "not an email address: name@domain, without spaces",
    }


async def test_an_account_id_with_operators_or_slashes_is_refused(api: Api) -> None:
    for bad in ("%24where", "..%2F..%2Fetc", "a%00b", "x" * 200):
        response = await api.put(f"/api/v1/accounts/{bad}", Role.PLATFORM, json={"emails": []})
        assert response.status in (404, 422), bad


async def test_a_body_that_is_not_json_is_400_or_415(api: Api) -> None:
    url = "/api/v1/accounts/acct-x"
    assert (await api.put(url, Role.PLATFORM, data=b"{")).status == 415
    response = await api.http.put(
        url,
        data=b"{nope",
        headers={**api.headers(Role.PLATFORM), "Content-Type": "application/json"},
    )
    assert response.status == 400


async def test_an_email_of_another_account_is_a_409_naming_it_and_changes_nothing(api: Api) -> None:
    await api.put("/api/v1/accounts/acct-ann", Role.PLATFORM, json={"emails": ["ann@example.com"]})
    taken = await api.put("/api/v1/accounts/acct-bob", Role.PLATFORM,
                          json={"emails": ["bob@example.com", "Ann@Example.com"]})  # fmt: skip
    assert taken.status == 409
    assert "acct-ann" in (await taken.json())["detail"]
    assert (await api.get("/api/v1/accounts/acct-bob", Role.PLATFORM)).status == 404


async def test_a_deleted_accounts_email_may_start_a_new_account(api: Api) -> None:
    await api.put("/api/v1/accounts/acct-ann", Role.PLATFORM, json={"emails": ["ann@example.com"]})
    await mark_deleted(account_id="acct-ann", deleted_at=utcnow(), grace=timedelta(days=30))
    again = await api.put("/api/v1/accounts/acct-ann2", Role.PLATFORM,
                          json={"emails": ["ann@example.com"]})  # fmt: skip
    assert again.status == 201


async def test_accounts_are_listed_newest_first_in_cursor_pages(api: Api) -> None:
    for n in range(5):
        await api.put(f"/api/v1/accounts/acct-{n}", Role.PLATFORM,
                      json={"emails": [f"user{n}@example.com"]})  # fmt: skip
    seen: list[str] = []
    cursor = None
    while True:
        query = "limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = await (await api.get(f"/api/v1/accounts?{query}", Role.PLATFORM)).json()
        seen += [a["id"] for a in page["accounts"]]
        if not (cursor := page["next_cursor"]):
            break
    assert seen == [f"acct-{n}" for n in reversed(range(5))]


async def test_accounts_are_found_by_address_and_status(api: Api) -> None:
    await api.put("/api/v1/accounts/acct-ann", Role.PLATFORM, json={"emails": ["ann@example.com"]})
    await api.put("/api/v1/accounts/acct-bob", Role.PLATFORM, json={"emails": ["bob@example.com"]})
    await mark_deleted(account_id="acct-bob", deleted_at=utcnow(), grace=timedelta(days=30))
    by_email = await (await api.get("/api/v1/accounts?email=Ann@Example.com", Role.PLATFORM)).json()
    assert [a["id"] for a in by_email["accounts"]] == ["acct-ann"]
    deleted = await (await api.get("/api/v1/accounts?status=deleted", Role.COMPLIANCE)).json()
    assert [(a["id"], a["emails"]) for a in deleted["accounts"]] == [
        ("acct-bob", ["bob@example.com"])
    ]
    bad = await api.get("/api/v1/accounts?status=gone", Role.PLATFORM)
    assert bad.status == 422


async def test_the_platform_sees_a_deleted_account_in_the_list_as_its_status_only(api: Api) -> None:
    await api.put("/api/v1/accounts/acct-bob", Role.PLATFORM, json={"emails": ["bob@example.com"]})
    await mark_deleted(account_id="acct-bob", deleted_at=utcnow(), grace=timedelta(days=30))
    listed = await (await api.get("/api/v1/accounts", Role.PLATFORM)).json()
    [bob] = listed["accounts"]
    assert bob["status"] == "deleted" and "emails" not in bob and "name" not in bob
    by_email = await (await api.get("/api/v1/accounts?email=bob@example.com", Role.PLATFORM)).json()
    assert by_email["accounts"] == []  # an address does not lead the platform to a deleted one
