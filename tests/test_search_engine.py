"""Search on tantivy: BM25 over every match, the operators, the index as a copy of MongoDB that
follows its change stream, forgets what retention purges, and is rebuilt when lost."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.state import DATABASE, SEARCH
from retention.rules import RetentionPolicy
from scheduler.jobs import Jobs
from search.engine import spans
from search.index import SearchIndex, deleted_documents, following, open_index
from store.accounts import mark_deleted, register_account
from store.chat import ChatBatch, NewChatMessage, file_chat
from store.documents import Author, AuthorRole, Direction, Message, PurgeRecord, Role, utcnow
from store.words import WORD, normalise
from tests.conftest import Api
from tests.factories import T0, chat, email
from tests.pdfs import pdf_with_text
from tests.test_search import search


async def ids(api: Api, q: str, role: Role = Role.AGENT, **params: Any) -> set[str]:
    return {h["message_id"] for h in (await search(api, role, q=q, **params))["hits"]}


def index_of(api: Api) -> SearchIndex:
    return api.http.app[SEARCH]


async def internal_note(text: str, *, account_id: str | None = None) -> Message:
    filed = await file_chat(
        ChatBatch(
            source="widget", conversation_id="notes", received_at=utcnow(), account_id=account_id,
            messages=[NewChatMessage(external_id=f"note-{text}", direction=Direction.INTERNAL,
                                     author=Author(role=AuthorRole.AGENT), text=text, sent_at=T0)],
        )
    )  # fmt: skip
    message = await Message.get(filed.messages[0].id)
    assert message is not None
    return message


# --- ranking --------------------------------------------------------------------------------


@pytest.mark.slow
async def test_an_old_message_naming_a_rare_word_ten_times_outranks_600_newer_naming_it_once(
    api: Api,
) -> None:
    filler = "please check the parcel and tell me when it will arrive at my home address soon"
    old = await chat(" ".join(["the zorblax"] * 10) + " " + filler, at=T0 - timedelta(days=900),
                     conversation="old")  # fmt: skip
    batch = ChatBatch(
        source="widget", conversation_id="new", received_at=utcnow(),
        messages=[NewChatMessage(external_id=f"n{n}", author=Author(role=AuthorRole.CUSTOMER),
                                 direction=Direction.INBOUND, text=f"the zorblax {filler} {n}",
                                 sent_at=T0 + timedelta(minutes=n)) for n in range(600)],
    )  # fmt: skip
    await file_chat(batch)
    result = await search(api, q="zorblax", limit=5)
    assert result["total"] == 601, "ranked over every match, not a window of the newest"
    assert result["hits"][0]["message_id"] == str(old.id)
    newest = await search(api, q="zorblax", sort="newest", limit=1)
    assert newest["hits"][0]["message_id"] != str(old.id)


# --- operators ------------------------------------------------------------------------------


async def test_from_to_and_subject_look_in_their_own_fields(api: Api) -> None:
    ann = await email(sender="Ann Customer <ann@example.com>", to="support@shop.example",
                      subject="Kettle warranty", body="it leaks")  # fmt: skip
    bob = await email(sender="Bob <bob@example.org>", to="ann@example.com",
                      subject="Re: toaster", body="the kettle warranty covers it")  # fmt: skip
    assert await ids(api, "from:ann@example.com") == {str(ann.id)}
    assert await ids(api, "from:ann") == {str(ann.id)}
    assert await ids(api, 'from:"Ann Customer"') == {str(ann.id)}
    assert await ids(api, "to:ann@example.com") == {str(bob.id)}
    assert await ids(api, "subject:warranty") == {str(ann.id)}
    assert await ids(api, "warranty") == {str(ann.id), str(bob.id)}
    assert await ids(api, "warranty -from:bob@example.org") == {str(ann.id)}


async def test_account_channel_attachment_and_internal_filter(api: Api) -> None:
    mail = await email(account_id="acct-a", body="refund please",
                       attachments=[("receipt.txt", "text/plain", b"paid")])  # fmt: skip
    talk = await chat("refund please", account_id="acct-b", conversation="c-b")
    note = await internal_note("refund approved by the manager", account_id="acct-b")
    assert await ids(api, "refund account:acct-a") == {str(mail.id)}
    assert await ids(api, "refund channel:chat") == {str(talk.id), str(note.id)}
    assert await ids(api, "refund has:attachment") == {str(mail.id)}
    assert await ids(api, "refund is:internal") == {str(note.id)}
    assert await ids(api, "refund -is:internal channel:chat") == {str(talk.id)}
    assert await ids(api, "account:acct-b -is:internal") == {str(talk.id)}


async def test_before_and_after_bound_the_date(api: Api) -> None:
    early = await chat("invoice early", at=T0 - timedelta(days=2))
    middle = await chat("invoice middle", at=T0)
    late = await chat("invoice late", at=T0 + timedelta(days=2))
    day = T0.date().isoformat()
    assert await ids(api, f"invoice after:{day}") == {str(middle.id), str(late.id)}
    assert await ids(api, f"invoice before:{day}") == {str(early.id)}
    after = (T0 - timedelta(days=1)).date().isoformat()
    before = (T0 + timedelta(days=1)).date().isoformat()
    assert await ids(api, f"invoice after:{after} before:{before}") == {str(middle.id)}
    exact = T0.isoformat().replace("+00:00", "Z")
    assert await ids(api, f"invoice after:{exact}") == {str(middle.id), str(late.id)}


async def test_or_and_parentheses_combine_terms(api: Api) -> None:
    kettle = await chat("broken kettle lid")
    toaster = await chat("broken toaster")
    await chat("broken fridge")
    await chat("kettle descaling")
    assert await ids(api, "broken (kettle OR toaster)") == {str(kettle.id), str(toaster.id)}
    assert await ids(api, "broken kettle OR toaster") == {str(kettle.id), str(toaster.id)}
    assert await ids(api, "broken -(fridge OR toaster)") == {str(kettle.id)}
    assert await ids(api, '"kettle lid" OR toaster') == {str(kettle.id), str(toaster.id)}


async def test_operators_combine_with_the_query_parameters(api: Api) -> None:
    a = await chat("parcel lost", account_id="acct-a", conversation="a", at=T0)
    await chat("parcel lost", account_id="acct-b", conversation="b", at=T0)
    await chat("parcel lost", account_id="acct-a", conversation="a2", at=T0 + timedelta(days=5))
    found = await ids(api, "parcel channel:chat", account_id="acct-a",
                      until=(T0 + timedelta(days=1)).isoformat())  # fmt: skip
    assert found == {str(a.id)}


async def test_attachment_names_and_the_text_of_pdf_and_text_attachments_are_searched(
    api: Api,
) -> None:
    named = await email(body="see attached", attachments=[("quittung-4711.png", "image/png", b"x")])
    pdf = await email(body="see attached", message_id="<pdf@example.com>",
                      attachments=[("scan.pdf", "application/pdf",
                                    pdf_with_text("Serial number QX7741 damaged"))])  # fmt: skip
    log = ("log.txt", "text/plain", b"error E-5521 at boot")
    text = await email(body="see attached", message_id="<txt@example.com>", attachments=[log])
    assert await ids(api, "quittung") == {str(named.id)}
    assert await ids(api, "qx7741") == {str(pdf.id)}
    assert await ids(api, '"e 5521"') == {str(text.id)}
    assert await ids(api, "has:attachment") == {str(named.id), str(pdf.id), str(text.id)}


@pytest.mark.parametrize(
    ("q", "position"),
    [
        ("refund (kettle", 7),
        ("refund kettle)", 13),
        ('refund "kettle', 7),
        ("refund OR", 7),
        ("OR refund", 0),
        ("before:2024-02-30", 7),
        ("after:yesterday", 6),
        ("channel:fax", 0),
        ("has:pets", 0),
        ("is:urgent", 0),
        ("from:", 0),
        ("!!! ???", 0),
        ("x" * 65, 0),
        ("(" * 9 + "a" + ")" * 9, 8),
    ],
)
async def test_a_bad_query_is_a_400_naming_the_position(api: Api, q: str, position: int) -> None:
    response = await api.get(f"/api/v1/search?{urlencode({'q': q})}", Role.AGENT)
    assert response.status == 400
    assert response.content_type == "application/problem+json"
    [error] = (await response.json())["errors"]
    assert (error["field"], error["position"]) == ("q", position)


async def test_the_answer_gives_the_exact_total(api: Api) -> None:
    for n in range(7):
        await chat(f"voucher {n}")
    result = await search(api, q="voucher", limit=2)
    assert (len(result["hits"]), result["total"]) == (2, 7)
    assert (await search(api, q="voucher", sort="newest", limit=2))["total"] == 7


# --- purpose limitation ---------------------------------------------------------------------


async def test_an_agent_never_finds_a_deleted_accounts_messages_however_the_query_is_phrased(
    api: Api,
) -> None:
    await register_account(account_id="acct-gone", emails=["gone@example.com"], name=None)
    await email(account_id="acct-gone", sender="gone@example.com", body="secret kettle")
    await chat("secret kettle chat", account_id="acct-gone", conversation="g")
    await mark_deleted(account_id="acct-gone", deleted_at=utcnow(), grace=timedelta(days=30))
    for q in ("secret", "account:acct-gone", "from:gone@example.com", "secret OR kettle",
              "-nothing", "channel:chat OR channel:email", ""):  # fmt: skip
        result = await search(api, Role.AGENT, q=q)
        assert result["hits"] == [] and result["total"] == 0, q
    assert len((await search(api, Role.COMPLIANCE, q="account:acct-gone"))["hits"]) == 2


# --- the index follows MongoDB --------------------------------------------------------------


async def test_updates_and_deletes_reach_the_index(api: Api) -> None:
    message = await chat("original wording")
    assert await ids(api, "original") == {str(message.id)}
    await Message.get_pymongo_collection().update_one(
        {"_id": message.id}, {"$set": {"text": "corrected wording"}}
    )
    assert await ids(api, "original") == set()
    assert await ids(api, "corrected") == {str(message.id)}
    await Message.get_pymongo_collection().delete_one({"_id": message.id})
    assert await ids(api, "corrected") == set()


async def test_a_message_purged_by_retention_leaves_results_then_the_index_files(
    api: Api, tmp_path: Path
) -> None:
    token = "zqxjvuniquetoken"
    # Past the maximum age: the sweep deletes it, and only it, as it is.
    gone = await chat(f"my {token} please", at=utcnow() - timedelta(days=4 * 365),
                      conversation="old")  # fmt: skip
    kept = await chat("another customer's kettle", conversation="new")
    index = index_of(api)
    # Both in one segment (a rebuild writes them together), as in any archive of some size: a
    # segment whose every document is deleted simply goes, and would prove nothing.
    await index.request("rebuild")
    assert await ids(api, token) == {str(gone.id)}
    files = index.path
    assert _terms_in_files(files, token), "the test could not see the token in the files"

    policy = RetentionPolicy(grace=timedelta(days=180), max_age=timedelta(days=1095),
                             secret_key=b"k", blob_quiet_period=timedelta(0),
                             data_dir=api.settings.data_dir)  # fmt: skip
    jobs = Jobs(
        database=api.http.app[DATABASE], policy=policy, interval=timedelta(minutes=10), index=index
    )
    report = await jobs.purge_sweep()
    assert report is not None and report.messages == 1
    # The sweep waited for the index before its residue scan: gone from results at once.
    assert await ids(api, token, Role.ADMIN) == set()
    assert _terms_in_files(files, token), "deleted, but still in its segment's files"
    assert deleted_documents(files) == 1
    [record] = await PurgeRecord.find_all().to_list()
    assert record.residue is not None
    findings = {f["place"]: f["kind"] for f in record.residue["findings"]}
    # Its files, and (from the registry of every process's index) the same index not yet
    # compacted since the purge.
    assert findings.pop("search index files") == "pending"
    assert [k for p, k in findings.items() if p.startswith("search index of")] == ["pending"]
    assert not [p for p in findings if not p.startswith("search index of")], findings

    await jobs.housekeeping()
    assert not _terms_in_files(files, token)
    assert deleted_documents(files) == 0
    assert _grep(files, token.encode()) == []
    assert await ids(api, "kettle") == {str(kept.id)}


def _terms_in_files(path: Path, token: str) -> bool:
    """Whether the index files (opened afresh, as a new process would) hold ``token`` in their
    term dictionary: tantivy keeps a deleted document's words until its segment is rewritten."""
    searcher = open_index(path).searcher()
    return any(term == token for term, _ in searcher.terms_with_prefix("text", token))


def _grep(path: Path, needle: bytes) -> list[str]:
    return [p.name for p in path.rglob("*") if p.is_file() and needle in p.read_bytes()]


async def test_the_reconciler_repairs_an_index_that_drifted(api: Api) -> None:
    messages = [await chat(f"drift {n}", at=T0 + timedelta(days=n)) for n in range(3)]
    index = index_of(api)
    await api.indexed()
    assert index.index is not None

    # Drift: a document the index lost, as if an event had been missed.
    def lose(writer: Any) -> None:
        writer.delete_documents_by_term("id", str(messages[1].id))
        writer.commit()

    await index._locked(lambda: lose(index._writer))
    index.index.reload()
    assert await ids(api, "drift") == {str(messages[0].id), str(messages[2].id)}
    assert await index.request("reconcile") == 1
    assert await ids(api, "drift") == {str(m.id) for m in messages}


async def test_an_index_resumes_from_its_token_and_rebuilds_when_lost(
    database: Any, tmp_path: Path
) -> None:
    first = await chat("resume one")
    index = SearchIndex(tmp_path / "search", database.db.name)
    async with following(index):
        await index.sync()
        assert index.searcher().num_docs == 1
    token = index.state.token
    assert token is not None
    second = await chat("resume two")  # while no process follows
    again = SearchIndex(tmp_path / "search", database.db.name)
    async with following(again):
        await again.sync()
        assert again.state.token != token
        assert again.searcher().num_docs == 2, "resumed: the message of the gap, and no double"
    shutil.rmtree(again.path)
    rebuilt = SearchIndex(tmp_path / "search", database.db.name)
    async with following(rebuilt):
        await rebuilt.sync()
        assert rebuilt.searcher().num_docs == 2
    assert await _found(rebuilt, "resume") == {str(first.id), str(second.id)}


async def _found(index: SearchIndex, word: str) -> set[str]:
    from search.engine import Filters, Order, parse_query
    from search.engine import search as run

    results = await run(index=index, query=parse_query(word), filters=Filters(),
                        order=Order.NEWEST, limit=10, after=None)  # fmt: skip
    return {str(h.message.id) for h in results.hits}


async def test_dates_far_out_of_range_are_indexed_and_queried_without_error(api: Api) -> None:
    future = await chat("time traveller", at=datetime(9999, 12, 31, tzinfo=UTC))
    past = await chat("time traveller", at=datetime(1, 1, 1, tzinfo=UTC) + timedelta(days=1))
    both = {str(future.id), str(past.id)}
    assert await ids(api, "traveller after:0001-01-01") == both
    # Times beyond what the index orders (1691 to 2248) count as its nearest end.
    assert await ids(api, "traveller before:3000-01-01") == {str(past.id)}
    newest = await search(api, q="traveller", sort="newest")
    assert [h["message_id"] for h in newest["hits"]] == [str(future.id), str(past.id)]
    response = await api.get("/api/v1/search?" + urlencode(
        {"q": "traveller", "since": "0001-01-01T00:00:00Z", "until": "9999-12-31T00:00:00Z"}),
        Role.AGENT)  # fmt: skip
    assert response.status == 200


async def test_metrics_and_readiness_report_the_index(api: Api) -> None:
    await api.indexed()  # past the first start's rebuild: what follows comes as changes
    await chat("metric kettle")
    await api.indexed()
    ready = await (await api.get("/readyz", None)).json()
    assert ready["search"] == "ready"
    text = await (await api.get("/metrics", None)).text()
    for name in ("archive_search_lag_seconds", "archive_search_pending_events",
                 "archive_search_documents", "archive_search_ready 1.0"):  # fmt: skip
        assert name in text, name
    assert 'archive_search_events_total{kind="upsert"}' in text


# Words as WORD splits them, and what sits between: cases, digits, underscores, punctuation,
# accents (non-ASCII text takes the normalising path, ASCII text the regular expression).
_TEXT = st.lists(
    st.sampled_from(["Refund", "refund", "REFUNDS", "re", "fund", "kettle_2", "2", "ünd", "und",
                     " ", ", ", ".", "-", "'", "\n", "_"]),
    max_size=30,
).map("".join)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(text=_TEXT, wanted=st.frozensets(st.sampled_from(["refund", "re", "fund", "kettle_2", "2",
                                                         "und", "refunds"])))  # fmt: skip
def test_marked_spans_are_exactly_the_words_whose_normal_form_was_searched(
    text: str, wanted: frozenset[str]
) -> None:
    by_word = [m.span() for m in WORD.finditer(text) if normalise(m[0]) in wanted]
    assert list(spans(text, wanted)) == by_word
