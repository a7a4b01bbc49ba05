"""Retention over the API: deletion and restore, erasure, holds, forecast, proof of deletion."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from beanie import PydanticObjectId

from retention.sweep import sweep
from scheduler.jobs import Jobs
from service.serve import retention_policy
from store.database import Database
from store.documents import Account, AuditEvent, Hold, Message, Role, utcnow
from tests.conftest import Api
from tests.factories import chat, email
from tests.helpers import iso


async def test_deleting_an_account_sets_its_purge_deadline(api: Api) -> None:
    await email(account_id="acct-1")
    deleted_at = utcnow() - timedelta(days=3)
    response = await api.post("/api/v1/accounts/acct-1/deletion", Role.PLATFORM,
                              json={"deleted_at": iso(deleted_at)})  # fmt: skip
    assert response.status == 200
    account = await response.json()
    assert account["status"] == "deleted"
    assert account["purge_due_at"] == iso(deleted_at + timedelta(days=180))


async def test_a_deletion_in_the_future_is_refused(api: Api) -> None:
    await email(account_id="acct-1")
    response = await api.post("/api/v1/accounts/acct-1/deletion", Role.PLATFORM,
                              json={"deleted_at": iso(utcnow() + timedelta(days=1))})  # fmt: skip
    assert response.status == 422
    assert (await Account.get("acct-1")).status == "active"  # type: ignore[union-attr]


async def test_a_deletion_time_given_as_a_number_is_refused(api: Api) -> None:
    """A JSON number was read as unix time (0: a deletion in 1970, purged at once)."""
    await email(account_id="acct-1")
    for when in (0, 1_700_000_000, 0.5, True):
        response = await api.post("/api/v1/accounts/acct-1/deletion", Role.PLATFORM,
                                  json={"deleted_at": when})  # fmt: skip
        assert response.status == 422, when
        assert "deleted_at" in await response.text()
    assert (await Account.get("acct-1")).status == "active"  # type: ignore[union-attr]


async def test_restore_cancels_a_deletion(api: Api) -> None:
    await email(account_id="acct-1")
    await api.post("/api/v1/accounts/acct-1/deletion", Role.PLATFORM)
    response = await api.delete("/api/v1/accounts/acct-1/deletion", Role.PLATFORM)
    assert response.status == 200
    body = await response.json()
    assert (body["status"], body["purge_due_at"]) == ("active", None)


async def test_an_erasure_request_makes_everything_due_now(api: Api) -> None:
    await email(account_id="acct-1")
    before = utcnow()
    response = await api.post("/api/v1/accounts/acct-1/erasure", Role.COMPLIANCE)
    assert response.status == 202
    assert (await response.json())["purge_due_at"] >= iso(before)


async def test_holds_are_placed_listed_and_released_once(api: Api) -> None:
    message = await email(account_id="acct-1")
    placed = await api.post("/api/v1/holds", Role.COMPLIANCE, json={
        "conversation_id": str(message.conversation_id), "kind": "criminal_investigation",
        "reason": "police request 42", "case_ref": "PR-42"})  # fmt: skip
    assert placed.status == 201
    hold = await placed.json()
    assert (hold["created_by"], hold["kind"]) == ("compliance-key", "criminal_investigation")
    listed = await (await api.get("/api/v1/holds", Role.COMPLIANCE)).json()
    assert [h["id"] for h in listed["holds"]] == [hold["id"]]
    release = f"/api/v1/holds/{hold['id']}/release"
    released = await api.post(release, Role.COMPLIANCE, json={"reason": "case closed"})
    assert released.status == 200
    assert (await released.json())["released_by"] == "compliance-key"
    assert (await api.post(release, Role.COMPLIANCE)).status == 409
    assert (await (await api.get("/api/v1/holds", Role.COMPLIANCE)).json())["holds"] == []


async def test_a_hold_on_something_unknown_or_ambiguous_is_refused(api: Api) -> None:
    bodies: list[dict[str, Any]] = [
        {"account_id": "nobody", "kind": "dispute", "reason": "r"},
        {"conversation_id": "0" * 24, "kind": "dispute", "reason": "r"},
        {"kind": "dispute", "reason": "r"},
        {"account_id": "a", "conversation_id": "0" * 24, "kind": "dispute", "reason": "r"},
        {"account_id": "a", "kind": "whim", "reason": "r"},
        {"account_id": "a", "kind": "dispute", "reason": ""},
    ]
    for body in bodies:
        response = await api.post("/api/v1/holds", Role.COMPLIANCE, json=body)
        assert response.status in (404, 422), body


async def test_purge_records_answer_whether_and_when_an_account_was_purged(
    api: Api, database: Database
) -> None:
    await email(account_id="acct-1")
    before = await (
        await api.get("/api/v1/purge-records?account_id=acct-1", Role.COMPLIANCE)
    ).json()
    assert (before["purged"], before["records"]) == (False, [])
    await api.post("/api/v1/accounts/acct-1/erasure", Role.COMPLIANCE)
    policy = retention_policy(api.settings)
    await sweep(database, now=utcnow(), policy=policy)
    after = await (await api.get("/api/v1/purge-records?account_id=acct-1", Role.COMPLIANCE)).json()
    assert after["purged"] is True
    [record] = after["records"]
    assert record["rule"] == "erasure" and record["counts"]["messages"] == 1
    assert set(record) == {
        "id",
        "rule",
        "due_at",
        "started_at",
        "done_at",
        "counts",
        "pending_blobs",
        "residue",
    }


async def test_the_forecast_shows_the_deadline_and_the_blocking_hold(api: Api) -> None:
    await email(account_id="acct-1")
    await api.post("/api/v1/accounts/acct-1/deletion", Role.PLATFORM)
    hold = await (await api.post("/api/v1/holds", Role.COMPLIANCE, json={
        "account_id": "acct-1", "kind": "dispute", "reason": "chargeback"})).json()  # fmt: skip
    forecast = await (await api.get("/api/v1/retention/forecast", Role.COMPLIANCE)).json()
    [item] = [i for i in forecast["items"] if i["account_id"] == "acct-1"]
    assert item["rule"] == "account_deletion"
    assert item["blocked_by_holds"] == [hold["id"]]


async def test_deletions_holds_and_erasures_are_audited(api: Api) -> None:
    await email(account_id="acct-1")
    await api.post("/api/v1/accounts/acct-1/deletion", Role.PLATFORM)
    await api.delete("/api/v1/accounts/acct-1/deletion", Role.PLATFORM)
    hold = await (await api.post("/api/v1/holds", Role.COMPLIANCE, json={
        "account_id": "acct-1", "kind": "dispute", "reason": "chargeback"})).json()  # fmt: skip
    await api.post(f"/api/v1/holds/{hold['id']}/release", Role.COMPLIANCE)
    await api.post("/api/v1/accounts/acct-1/erasure", Role.COMPLIANCE)
    await api.get("/api/v1/retention/forecast", Role.COMPLIANCE)
    await api.get("/api/v1/purge-records?account_id=acct-1", Role.COMPLIANCE)
    actions = [e.action async for e in AuditEvent.find(AuditEvent.action != "denied").sort("+at")]
    assert actions == ["account.delete", "account.restore", "hold.create", "hold.release",
                       "account.erasure", "retention.forecast", "purge_records.read"]  # fmt: skip


async def test_a_person_known_only_by_address_is_erased_with_a_certificate(
    api: Api, database: Database
) -> None:
    """Before: nothing could erase the content of a person who has no account (yet): mail
    and a chat from her address stayed, and a later registration would have adopted them."""
    mail = await email(sender="Quinn Quuxley <quinn@example.net>", subject="my case")
    talk = await chat("hi, Quinn here", conversation="q-1", customer_email="quinn@example.net")
    other = await email(sender="Rob <rob@example.net>")
    assert mail.account_id is None and talk.account_id is None

    response = await api.post("/api/v1/erasures", Role.COMPLIANCE, json={
        "emails": ["Quinn@Example.net"], "names": ["Quinn Quuxley"]})  # fmt: skip

    assert response.status == 202, await response.text()
    body = await response.json()
    person = body["person_account_id"]
    assert person.startswith("person-") and body["account_ids"] == []
    await sweep(database, now=utcnow(), policy=retention_policy(api.settings))
    assert await Message.find({"_id": {"$in": [mail.id, talk.id]}}).count() == 0
    assert await Message.get(other.id) is not None  # only hers
    records = await (await api.get(body["purge_records"][0], Role.COMPLIANCE)).json()
    assert records["purged"] is True
    [record] = records["records"]
    assert record["counts"]["messages"] == 2
    # The raw mail waits out the blob quiet period: pending, never "clean" meanwhile.
    assert record["residue"]["verdict"] == "pending" and record["pending_blobs"] == 1
    [event] = await AuditEvent.find({"action": "erasure.person"}).to_list()
    assert event.target == {"account_id": person} and "quinn" not in str(event.query)
    # Later mail from her address links to the tombstone and goes with the next sweep.
    late = await email(sender="Quinn <quinn@example.net>", subject="again")
    assert late.account_id == person and late.restricted


async def test_a_person_erasure_also_erases_the_accounts_that_have_the_address(api: Api) -> None:
    await api.put("/api/v1/accounts/acct-9", Role.PLATFORM, json={"emails": ["sam@example.net"]})
    response = await api.post("/api/v1/erasures", Role.COMPLIANCE,
                              json={"emails": ["sam@example.net"]})  # fmt: skip
    assert (await response.json())["account_ids"] == ["acct-9"]
    account = await Account.get("acct-9")
    assert account is not None and account.erasure_requested_at is not None


async def test_a_person_erasure_needs_an_address(api: Api) -> None:
    response = await api.post("/api/v1/erasures", Role.COMPLIANCE, json={"emails": []})
    assert response.status == 422
    assert response.content_type == "application/problem+json"
    assert "emails" in await response.text()
    forbidden = await api.post("/api/v1/erasures", Role.AGENT, json={"emails": ["a@b.c"]})
    assert forbidden.status == 403


async def test_an_erasure_of_a_person_is_not_undone_by_a_restore(api: Api) -> None:
    """Restored, the person's account would hold their address as a live account, and the
    platform could not register the customer's own account with it (the state machine
    found that path)."""
    erased = await (await api.post("/api/v1/erasures", Role.COMPLIANCE,
                                   json={"emails": ["una@example.net"]})).json()  # fmt: skip
    person = erased["person_account_id"]
    response = await api.delete(f"/api/v1/accounts/{person}/deletion", Role.PLATFORM)
    assert response.status == 409
    assert "not undone" in (await response.json())["detail"]
    registered = await api.put("/api/v1/accounts/una", Role.PLATFORM,
                               json={"emails": ["una@example.net"]})  # fmt: skip
    assert registered.status == 201


async def test_what_compliance_searched_for_is_forgotten_after_30_days(
    api: Api, database: Database
) -> None:
    """Before: the audit events kept the query texts (a street, a surname, content words)
    for 13 months, whatever was purged: redaction fired only on an id, an address or a
    whole name."""
    await email(account_id="acct-1", body="I live at Quuxstreet 12, Zelda")
    for q in ("Quuxstreet", "Zelda", "quuxworth OR zanzibarquux"):
        assert (await api.get(f"/api/v1/search?q={q}", Role.COMPLIANCE)).status == 200
    policy = retention_policy(api.settings)
    later = utcnow() + policy.audit_text_max_age + timedelta(minutes=1)
    jobs = Jobs(database=database, policy=policy, interval=timedelta(minutes=10),
                clock=lambda: later)  # fmt: skip
    await jobs.housekeeping()
    events = await AuditEvent.find({"action": "search"}).to_list()
    assert len(events) == 3
    for event in events:
        assert event.query["q"] == "[redacted]" and event.mentions == []
        assert event.role is Role.COMPLIANCE  # who, what and when stay


async def test_hold_reasons_forget_the_customer_when_the_account_is_purged(
    api: Api, database: Database
) -> None:
    await api.put("/api/v1/accounts/acct-z", Role.PLATFORM, json={
        "emails": ["hugo.holdquux@example.net"], "name": "Hugo Holdquux"})  # fmt: skip
    await email(account_id="acct-z")
    hold = await (await api.post("/api/v1/holds", Role.COMPLIANCE, json={
        "account_id": "acct-z", "kind": "dispute",
        "reason": "chargeback by Hugo Holdquux hugo.holdquux@example.net"})).json()  # fmt: skip
    await api.post(f"/api/v1/holds/{hold['id']}/release", Role.COMPLIANCE,
                   json={"reason": "Holdquux paid"})  # fmt: skip
    await api.post("/api/v1/accounts/acct-z/erasure", Role.COMPLIANCE)
    await sweep(database, now=utcnow(), policy=retention_policy(api.settings))
    listed = await (await api.get("/api/v1/holds?active=false", Role.COMPLIANCE)).json()
    [shown] = [h for h in listed["holds"] if h["id"] == hold["id"]]
    assert shown["reason"] == "chargeback by [redacted] [redacted] [redacted]"
    stored = await Hold.get(PydanticObjectId(hold["id"]))
    assert stored is not None and stored.release_reason == "[redacted] paid"
