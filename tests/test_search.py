"""Search over the API: words, "phrases", -exclusions, filters, orders, pages, snippets."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import pytest

from search.query import All, Not, TextField, Words, parse_query
from store.accounts import mark_deleted
from store.documents import Role, utcnow
from tests.conftest import Api
from tests.factories import T0, chat, email


async def search(api: Api, role: Role = Role.AGENT, **params: Any) -> dict[str, Any]:
    await api.indexed()
    response = await api.get(f"/api/v1/search?{urlencode(params)}", role)
    assert response.status == 200, await response.text()
    result: dict[str, Any] = await response.json()
    return result


def texts(result: dict[str, Any]) -> list[str]:
    return [h["snippet"].replace("<mark>", "").replace("</mark>", "") for h in result["hits"]]


async def test_all_words_must_match_in_any_order_and_case(api: Api) -> None:
    await chat("The refund for ORDER 1234 is late")
    await chat("order 99 shipped, no refund needed... wait, a refund")
    await chat("refund please")
    assert sorted(texts(await search(api, q="Order refund"))) == [
        "The refund for ORDER 1234 is late",
        "order 99 shipped, no refund needed... wait, a refund",
    ]


async def test_accents_do_not_matter(api: Api) -> None:
    await chat("Où est ma commande? Déjà payée.")
    assert len((await search(api, q="deja payee"))["hits"]) == 1
    assert len((await search(api, q="DÉJÀ"))["hits"]) == 1


async def test_a_phrase_matches_the_words_together_in_order(api: Api) -> None:
    await chat("my order number is 1234")
    await chat("the number of my order is 1234")
    assert texts(await search(api, q='"order number"')) == ["my order number is 1234"]


async def test_an_exclusion_removes_messages_with_the_word_or_phrase(api: Api) -> None:
    await chat("refund for the broken kettle")
    await chat("refund for the invoice")
    await chat("refund for the gift card")
    assert texts(await search(api, q='refund -invoice -"gift card"')) == [
        "refund for the broken kettle"
    ]


async def test_subjects_are_searched_too(api: Api) -> None:
    await email(subject="Chargeback notice", body="see the attached document")
    assert len((await search(api, q="chargeback"))["hits"]) == 1


async def test_relevance_puts_the_closest_match_first(api: Api) -> None:
    # BM25: of two messages of about the same length, the one naming the word more often.
    await chat("I bought a kettle here last week and now it is broken", at=T0 + timedelta(hours=2))
    await chat("my kettle, the kettle I bought, the kettle is broken", at=T0)
    await chat("toaster", at=T0 + timedelta(hours=3))
    hits = texts(await search(api, q="kettle"))
    assert hits[0].startswith("my kettle")
    assert len(hits) == 2


async def test_newest_first_on_request_or_without_words(api: Api) -> None:
    for n in range(3):
        await chat(f"kettle {n}", at=T0 + timedelta(hours=n))
    assert texts(await search(api, q="kettle", sort="newest")) == [
        "kettle 2",
        "kettle 1",
        "kettle 0",
    ]
    assert texts(await search(api)) == ["kettle 2", "kettle 1", "kettle 0"]


async def test_filters_narrow_the_results(api: Api) -> None:
    await email(account_id="acct-a", body="refund A", attachments=[("x.txt", "text/plain", b"x")],
                at=T0)  # fmt: skip
    await email(
        account_id="acct-b", body="refund B", sender="bob@example.org", at=T0 + timedelta(days=2)
    )
    await chat("refund C", account_id="acct-a", at=T0 + timedelta(days=1))
    assert texts(await search(api, q="refund", account_id="acct-a", sort="newest")) == [
        "refund C", "refund A"]  # fmt: skip
    assert texts(await search(api, q="refund", channel="chat")) == ["refund C"]
    assert texts(await search(api, q="refund", participant="BOB@example.org")) == ["refund B"]
    assert texts(await search(api, q="refund", has_attachments="true")) == ["refund A"]
    window = {
        "since": (T0 + timedelta(hours=1)).isoformat(),
        "until": (T0 + timedelta(days=2)).isoformat(),
    }
    assert texts(await search(api, q="refund", **window)) == ["refund C"]


async def test_a_hit_carries_what_the_list_needs(api: Api) -> None:
    message = await email(account_id="acct-a", subject="Broken kettle", body="the kettle leaks")
    [hit] = (await search(api, q="kettle"))["hits"]
    assert hit["message_id"] == str(message.id)
    assert hit["conversation_id"] == str(message.conversation_id)
    assert (hit["account_id"], hit["channel"], hit["subject"]) == (
        "acct-a",
        "email",
        "Broken kettle",
    )
    assert hit["author"]["email"] == "ann@example.com"
    assert hit["sent_at"].endswith("Z")


async def test_the_snippet_marks_matches_and_is_safe_html(api: Api) -> None:
    await chat('<script>alert("x")</script> my Kettle & the kettle-lid')
    [hit] = (await search(api, q="kettle"))["hits"]
    assert hit["snippet"] == (
        "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; my <mark>Kettle</mark> &amp; "
        "the <mark>kettle</mark>-lid"
    )


async def test_a_long_body_is_cut_around_the_first_match(api: Api) -> None:
    await chat("filler " * 200 + "the kettle is here " + "more " * 200)
    [hit] = (await search(api, q="kettle"))["hits"]
    assert "<mark>kettle</mark>" in hit["snippet"]
    assert hit["snippet"].startswith("…") and hit["snippet"].endswith("…")
    assert len(hit["snippet"]) < 300


@pytest.mark.parametrize("sort", ["newest", "relevance"])
async def test_pages_have_no_duplicates_or_gaps_while_messages_arrive(api: Api, sort: str) -> None:
    originals = {
        str((await chat(f"kettle number {n}", at=T0 + timedelta(minutes=n))).id) for n in range(25)
    }
    seen: list[str] = []
    cursor = None
    for page_number in range(20):
        params = {"q": "kettle", "sort": sort, "limit": 4} | ({"cursor": cursor} if cursor else {})
        page = await search(api, **params)
        seen += [h["message_id"] for h in page["hits"]]
        # New matches arrive between pages, newer and older than what was seen.
        await chat(f"kettle late {page_number}", at=T0 + timedelta(minutes=100 + page_number))
        await chat(f"kettle backdated {page_number}", at=T0 - timedelta(days=1))
        if not (cursor := page["next_cursor"]):
            break
    assert len(seen) == len(set(seen)), "a message was shown twice"
    assert originals <= set(seen), "a message that existed before the search was skipped"


async def test_a_cursor_belongs_to_its_query(api: Api) -> None:
    for n in range(3):
        await chat(f"kettle {n}")
    cursor = (await search(api, q="kettle", limit=1))["next_cursor"]
    response = await api.get(f"/api/v1/search?q=toaster&limit=1&cursor={cursor}", Role.AGENT)
    assert response.status == 422
    assert (await response.json())["errors"][0]["field"] == "cursor"


async def test_agents_do_not_find_a_deleted_accounts_content(api: Api) -> None:
    await chat("kettle of the deleted account", account_id="acct-gone", conversation="x")
    await chat("kettle of a live account", account_id="acct-live", conversation="y")
    await mark_deleted(account_id="acct-gone", deleted_at=utcnow(), grace=timedelta(days=1))
    assert texts(await search(api, Role.AGENT, q="kettle")) == ["kettle of a live account"]
    assert len((await search(api, Role.COMPLIANCE, q="kettle"))["hits"]) == 2


async def test_messages_are_found_right_after_a_webhook_delivers_them(api: Api) -> None:
    from tests.test_chat import post, transcript  # the same signed-delivery helper

    response = await post(api.http, transcript(3, account_id="acct-chat"))
    assert response.status == 201
    result = await search(api, q="refund", account_id="acct-chat")
    assert len(result["hits"]) == 3
    assert {h["account_id"] for h in result["hits"]} == {"acct-chat"}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "1000"}, "limit"),
        ({"limit": "0"}, "limit"),
        ({"sort": "random"}, "sort"),
        ({"channel": "fax"}, "channel"),
        ({"since": "yesterday"}, "since"),
        ({"since": "2026-01-01T00:00:00"}, "since"),  # no timezone
        ({"account_id": '{"$ne": null}'}, "account_id"),
        ({"account_id[$ne]": "x"}, "account_id[$ne]"),
        ({"participant": "a b"}, "participant"),
        ({"has_attachments": "maybe"}, "has_attachments"),
        ({"cursor": "bm90IGEgY3Vyc29y"}, "cursor"),
        ({"q": "x" * 501}, "q"),
    ],
)
async def test_bad_parameters_are_422_naming_the_field(
    api: Api, params: dict[str, str], field: str
) -> None:
    response = await api.get(f"/api/v1/search?{urlencode(params)}", Role.AGENT)
    assert response.status == 422
    assert response.content_type == "application/problem+json"
    assert field in {e["field"] for e in (await response.json())["errors"]}


async def test_operator_looking_text_is_searched_as_words(api: Api) -> None:
    await chat("the $where clause and $ne operator")
    for q in ('{"$ne": null}', "$where", "sleep(5000)", ".*.*.*.*x"):
        response = await api.get(f"/api/v1/search?{urlencode({'q': q})}", Role.AGENT)
        assert response.status == 200, q
    assert len((await search(api, q="$where"))["hits"]) == 1


async def test_a_query_with_too_many_words_is_400(api: Api) -> None:
    response = await api.get(
        f"/api/v1/search?{urlencode({'q': ' '.join(f'w{n}' for n in range(40))})}", Role.AGENT
    )
    assert response.status == 400


def test_the_grammar_reads_words_phrases_and_exclusions() -> None:
    query = parse_query('Refund "Order 1234" -invoice -"gift card" e-mail')
    any_field = TextField.ANY
    assert query.tree == All((
        Words(any_field, ("refund",)),
        Words(any_field, ("order", "1234")),
        Not(Words(any_field, ("invoice",))),
        Not(Words(any_field, ("gift", "card"))),
        Words(any_field, ("e", "mail")),
    ))  # fmt: skip
    assert query.highlighted == {"refund", "order", "1234", "e", "mail"}


async def test_searches_run_concurrently_without_interference(api: Api) -> None:
    await chat("kettle one", account_id="a1", conversation="c1")
    await chat("kettle two", account_id="a2", conversation="c2")
    results = await asyncio.gather(
        *(search(api, q="kettle", account_id=f"a{1 + n % 2}") for n in range(10))
    )
    assert all(len(r["hits"]) == 1 for r in results)
