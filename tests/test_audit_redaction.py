"""The audit trail keeps who did what, when, and to which ids; free text that names a purged
account (a search for its address, its name, its id) is redacted by the purge."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from store import audit
from store.database import Database
from store.documents import AuditEvent, Role, utcnow
from tests.conftest import Api

ANN = {"account_id": "acct-ann", "emails": ["ann.lovelace@example.com"], "name": "Ann Lovelace"}


async def search(api: Api, **params: str) -> None:
    response = await api.get("/api/v1/search", Role.AGENT, params=params)
    assert response.status == 200, await response.text()


async def events() -> list[AuditEvent]:
    return await AuditEvent.find({"action": "search"}).sort("+at").to_list()


async def test_search_text_and_participant_naming_the_account_are_redacted(api: Api) -> None:
    await search(
        api, q="refund from:Ann.Lovelace@example.com", participant="ann.lovelace@example.com"
    )
    await search(api, q="refund", account_id="acct-ann", channel="email")
    before = await events()
    assert await audit.redact_account(**ANN) == 1
    named, other = await events()
    assert named.query == {"q": audit.REDACTED, "participant": audit.REDACTED, "limit": "20"}
    assert (named.actor, named.role, named.action, named.at, named.outcome, named.target) == (
        before[0].actor, before[0].role, "search", before[0].at, 200, before[0].target,
    )  # fmt: skip
    assert other.query == before[1].query  # names the account by id only, as a filter


async def test_nothing_of_the_redacted_text_remains_in_the_event(api: Api) -> None:
    await search(api, q='"Ann Lovelace" parcel', participant="ann.lovelace@example.com")
    await audit.redact_account(**ANN)
    stored = json.dumps(await AuditEvent.get_pymongo_collection().find_one({"action": "search"}),
                        default=str).lower()  # fmt: skip
    for trace in ("lovelace", "ann.lovelace@example.com", "parcel"):
        assert trace not in stored


async def test_the_full_name_in_any_order_or_case_is_redacted_and_a_first_name_alone_is_not(
    api: Api,
) -> None:
    await search(api, q="LOVELACE, Ann")
    await search(api, q="ann")
    await audit.redact_account(**ANN)
    by_name, first_name_only = await events()
    assert by_name.query["q"] == audit.REDACTED
    assert first_name_only.query["q"] == "ann"


async def test_an_account_id_in_search_text_is_redacted(api: Api) -> None:
    await search(api, q="account:acct-ann refund")
    await search(api, q="account:acct-annex refund")
    assert await audit.redact_account(**ANN) == 1
    mine, another = await events()
    assert (mine.query["q"], another.query["q"]) == (audit.REDACTED, "account:acct-annex refund")


async def test_redaction_is_idempotent(api: Api) -> None:
    await search(api, participant="ann.lovelace@example.com")
    assert await audit.redact_account(**ANN) == 1
    assert await audit.redact_account(**ANN) == 0


async def test_redaction_finds_its_events_by_index_not_by_scanning(database: Database) -> None:
    for n in range(50):
        await audit.record(actor="maya", role=Role.AGENT, action="search",
                           max_age=timedelta(days=395), query={"q": f"order {n}"})  # fmt: skip
    subject = audit.Subject(**ANN)
    plan: dict[str, Any] = (
        await AuditEvent.get_pymongo_collection().find(audit.naming_query(subject)).explain()
    )
    text = json.dumps(plan["queryPlanner"]["winningPlan"])
    assert "COLLSCAN" not in text and '"indexName": "mentions"' in text
    assert plan["executionStats"]["totalDocsExamined"] == 0


async def test_events_written_now_record_the_terms_of_their_free_text(database: Database) -> None:
    event = await audit.record(
        actor="maya", role=Role.AGENT, action="search", max_age=timedelta(days=1),
        query={"q": "from:Ann@Example.com Réfund", "account_id": "acct-1"}, now=utcnow(),
    )  # fmt: skip
    assert {"ann@example.com", "refund", "from:ann@example.com"} <= set(event.mentions)
    assert "acct-1" not in event.mentions  # a filter by id is structured, not free text


async def test_events_from_before_mentions_existed_are_indexed_and_then_redactable(
    database: Database,
) -> None:
    await AuditEvent.get_pymongo_collection().insert_one({
        "at": utcnow(), "actor": "maya", "role": "agent", "action": "search", "target": {},
        "query": {"participant": "ann.lovelace@example.com"}, "client_address": None,
        "outcome": 200, "expires_at": utcnow() + timedelta(days=1),
    })  # fmt: skip
    assert await audit.redact_account(**ANN) == 0  # not findable by index yet
    assert await audit.index_audit_mentions() == 1
    assert await audit.index_audit_mentions() == 0
    assert await audit.redact_account(**ANN) == 1
