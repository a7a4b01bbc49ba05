"""The web interface without a browser: headers, sessions, roles, CSRF, and what the pages
show and audit (the browser tests are in test_web_browser.py)."""

from __future__ import annotations

import io
import ssl
import zipfile
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
import trustme
from aiohttp import ClientSession, CookieJar, TCPConnector

from api.auth import ADMIN_ONLY, AGENT_UP, ANY_ROLE, COMPLIANCE_UP
from api.state import ACCESS, CONFIG, DATABASE
from retention.holds import place_hold
from store.audit import audit_events
from store.database import Database
from store.documents import AuditEvent, Hold, HoldKind, Role, utcnow
from store.keys import revoke_key
from tests.helpers import eventually
from tests.web import PAGE_CSP, Story, Web, a_story, csrf_for, running_web, sign_in
from web import sessions
from web.app import add_web
from web.state import SIGNIN_THROTTLE, WEB_CONFIG, WEB_ROUTES, Session
from web.throttle import FIRST_WAIT_SECONDS, FREE_FAILURES

A, P, C, D = Role.AGENT, Role.PLATFORM, Role.COMPLIANCE, Role.ADMIN


@pytest.fixture
async def site(database: Database, tmp_path: Path) -> AsyncIterator[Web]:
    async with running_web(database, tmp_path) as running:
        yield running


@pytest.fixture
async def story(site: Web) -> Story:
    story = await a_story()
    await site.indexed()
    return story


# --- headers --------------------------------------------------------------------------------


async def test_every_kind_of_page_carries_the_security_headers(site: Web, story: Story) -> None:
    agent = await site.signed_in(A)
    for client, path, status in [
        (site.client(), "/signin", 200),
        (site.client(), "/static/style.css", 200),
        (site.client(), "/static/nothing.css", 404),
        (agent, "/search?q=refund", 200),
        (agent, f"/conversations/{story.email.conversation_id}", 200),
        (agent, "/conversations/0123456789abcdef01234567", 404),
        (agent, "/holds", 403),
    ]:
        response = await client.get(path, allow_redirects=False)
        assert response.status == status, path
        assert response.headers["Content-Security-Policy"] == PAGE_CSP, path
        assert response.headers["X-Content-Type-Options"] == "nosniff", path
        assert response.headers["Referrer-Policy"] == "no-referrer", path
        if not path.startswith("/static/"):
            assert response.content_type == "text/html", path


async def test_no_page_has_inline_script_or_style(site: Web, story: Story) -> None:
    admin = await site.signed_in(D)
    for path in ("/search?q=refund", f"/conversations/{story.email.conversation_id}",
                 f"/conversations/{story.chat.conversation_id}", "/accounts/acct-1", "/holds",
                 "/retention/forecast", "/exports", "/keys", "/audit", "/signin"):  # fmt: skip
        page = await (await admin.get(path)).text()
        assert "<script>" not in page and "<style" not in page and " style=" not in page, path
        assert " on" not in page.replace(" one", "").split("<body", 1)[1].split(">", 1)[0]


async def test_a_messages_html_is_served_for_a_sandboxed_frame_only(
    site: Web, story: Story
) -> None:
    agent = await site.signed_in(A)
    response = await agent.get(f"/messages/{story.email.id}/html")
    assert response.status == 200
    csp = response.headers["Content-Security-Policy"]
    assert csp.startswith("default-src 'none'; style-src 'unsafe-inline'; img-src data:")
    assert "sandbox" in csp and "frame-ancestors 'self'" in csp
    assert "<b>refund</b>" in await response.text()
    conversation = await (await agent.get(f"/conversations/{story.email.conversation_id}")).text()
    assert "<b>refund</b>" not in conversation and "<iframe" not in conversation
    asked = f"/conversations/{story.email.conversation_id}?html={story.email.id}"
    shown = await (await agent.get(asked)).text()
    assert f'<iframe class="html-part" sandbox src="/messages/{story.email.id}/html"' in shown


# --- sessions -------------------------------------------------------------------------------


async def test_signing_in_exchanges_the_key_for_a_strict_http_only_session(site: Web) -> None:
    browser = site.client()
    response = await sign_in(browser, site.tokens[A], next_path="/search")
    assert response.status == 303 and response.headers["Location"] == "/search"
    cookie = next(c for c in response.headers.getall("Set-Cookie") if c.startswith("sa_session="))
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert {"httponly", "samesite", "path"} <= attributes
    assert "samesite=strict" in cookie.lower()
    assert "secure" not in attributes  # plain HTTP here; Secure over TLS
    session_id = cookie.split(";")[0].split("=", 1)[1]
    collection = site.app[DATABASE].db[sessions.COLLECTION]
    [doc] = await collection.find().to_list()
    assert doc["_id"] == sessions.id_sha256(session_id)
    assert session_id not in repr(doc) and site.tokens[A] not in repr(doc)
    assert (doc["key_name"], doc["role"]) == ("agent-key", "agent")
    indexes = {i["name"]: i async for i in await collection.list_indexes()}
    assert indexes["ttl"]["expireAfterSeconds"] == 0


async def test_over_tls_the_session_cookie_is_secure(database: Database, tmp_path: Path) -> None:
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    authority.configure_trust(client_context)
    async with running_web(database, tmp_path, tls=server_context) as tls_site:
        connector = TCPConnector(ssl=client_context)
        browser = ClientSession(base_url=tls_site.url("/"), connector=connector,
                                cookie_jar=CookieJar(unsafe=True))  # fmt: skip
        tls_site.sessions.append(browser)
        response = await sign_in(browser, tls_site.tokens[A])
        assert response.status == 303
        cookie = next(c for c in response.headers.getall("Set-Cookie") if "sa_session=" in c)
        assert "secure" in {part.strip().lower() for part in cookie.split(";")}
        assert (await browser.get("/search", allow_redirects=False)).status == 200


async def test_a_wrong_key_signs_nobody_in(site: Web) -> None:
    browser = site.client()
    response = await sign_in(browser, "sa_00000000_not-a-key")
    assert response.status == 401
    assert "This API key is not valid" in await response.text()
    assert (await browser.get("/search", allow_redirects=False)).status == 303


async def test_a_refused_sign_in_is_audited_by_key_prefix_and_client_never_the_token(
    site: Web,
) -> None:
    guess = "sa_0badc0de_" + "g" * 43
    assert (await sign_in(site.client(), guess)).status == 401
    [event] = [e for e in await AuditEvent.find_all().to_list() if e.action == "session.refused"]
    assert (event.actor, event.outcome, event.target) == (
        "anonymous",
        401,
        {"key_prefix": "sa_0badc0de"},
    )
    assert event.client_address == "127.0.0.1"
    assert "g" * 10 not in event.model_dump_json()


async def test_after_a_few_failed_sign_ins_an_address_waits_before_any_key_is_checked(
    site: Web,
) -> None:
    now = [1000.0]
    site.app[SIGNIN_THROTTLE].clock = lambda: now[0]
    for _ in range(FREE_FAILURES):
        assert (await sign_in(site.client(), "sa_00000000_wrong")).status == 401
    refused = await sign_in(site.client(), site.tokens[A])  # a right key, but too soon
    assert refused.status == 429
    assert int(refused.headers["Retry-After"]) == FIRST_WAIT_SECONDS
    assert "try again in 2 seconds" in await refused.text()
    now[0] += FIRST_WAIT_SECONDS
    assert (await sign_in(site.client(), site.tokens[A])).status == 303
    assert (await sign_in(site.client(), "sa_00000000_wrong")).status == 401  # counts afresh


async def test_pages_send_a_signed_out_visitor_to_sign_in_and_back(site: Web) -> None:
    browser = site.client()
    response = await browser.get("/holds?all=1", allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"] == "/signin?next=%2Fholds%3Fall%3D1"
    signed = await sign_in(browser, site.tokens[C], next_path="/holds?all=1")
    assert signed.headers["Location"] == "/holds?all=1"


# What a URL parser strips or reads as a separator: "/<TAB>/evil.example" is "//evil.example"
# to a browser (Chromium followed it to the other origin).
ELSEWHERE = [
    "//evil.example/",
    "/\\evil.example",
    "https://evil.example",
    "/\t/evil.example/x",
    "/\r/x",
    "/\n/evil.example",
    "/ /evil.example",
    "/\x00/evil.example",
    "/\\/evil",
]


@pytest.mark.parametrize("target", ELSEWHERE)
async def test_sign_in_never_sends_the_browser_to_another_site(site: Web, target: str) -> None:
    response = await sign_in(site.client(), site.tokens[A], next_path=target)
    assert response.status == 303
    assert response.headers["Location"] == "/"


@pytest.mark.parametrize("query", ["next=/%09/evil.example/x", "next=/%0d/x", "next=/%0a%0a/x"])
async def test_a_signed_in_visit_to_sign_in_stays_on_the_site(site: Web, query: str) -> None:
    browser = site.client()
    await sign_in(browser, site.tokens[A])
    response = await browser.get(f"/signin?{query}", allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"] == "/"


async def test_a_path_back_with_other_letters_goes_out_percent_encoded(site: Web) -> None:
    response = await sign_in(site.client(), site.tokens[A], next_path="/search?q=café")
    assert response.headers["Location"] == "/search?q=caf%C3%A9"


async def test_the_sign_in_form_needs_its_own_token(site: Web) -> None:
    browser = site.client()
    response = await browser.post("/signin", data={"key": site.tokens[A]}, allow_redirects=False)
    assert response.status == 403
    assert "sa_session" not in response.cookies


async def _session_doc(site: Web) -> dict[str, object]:
    [doc] = await site.app[DATABASE].db[sessions.COLLECTION].find().to_list()
    return doc


async def _age_session(site: Web, **fields: object) -> None:
    await site.app[DATABASE].db[sessions.COLLECTION].update_many({}, {"$set": fields})


async def test_a_session_ends_after_30_idle_minutes(site: Web) -> None:
    browser = await site.signed_in(A)
    assert (await browser.get("/search", allow_redirects=False)).status == 200
    await _age_session(site, last_seen_at=utcnow() - timedelta(minutes=29))
    assert (await browser.get("/search", allow_redirects=False)).status == 200  # and touched
    assert (await _session_doc(site))["last_seen_at"] > utcnow() - timedelta(minutes=1)  # type: ignore[operator]
    await _age_session(site, last_seen_at=utcnow() - timedelta(minutes=31))
    response = await browser.get("/search", allow_redirects=False)
    assert response.status == 303 and response.headers["Location"].startswith("/signin")
    assert await site.app[DATABASE].db[sessions.COLLECTION].count_documents({}) == 0


async def test_a_session_ends_12_hours_after_sign_in_however_busy(site: Web) -> None:
    browser = await site.signed_in(A)
    await _age_session(site, created_at=utcnow() - timedelta(hours=12, seconds=1),
                       last_seen_at=utcnow())  # fmt: skip
    response = await browser.get("/search", allow_redirects=False)
    assert response.status == 303


async def test_signing_out_ends_the_session_for_good(site: Web) -> None:
    browser = await site.signed_in(A)
    cookie = browser.cookie_jar.filter_cookies(site.server.make_url("/"))["sa_session"].value
    csrf = await csrf_for(browser, "/search")
    response = await browser.post("/signout", data={"csrf": csrf}, allow_redirects=False)
    assert response.status == 303 and response.headers["Location"] == "/signin"
    replay = site.client()
    replay.cookie_jar.update_cookies({"sa_session": cookie}, site.server.make_url("/"))
    assert (await replay.get("/search", allow_redirects=False)).status == 303


async def test_revoking_a_key_signs_its_browsers_out(site: Web) -> None:
    browser = await site.signed_in(A)
    await revoke_key(name="agent-key")
    assert (await browser.get("/search", allow_redirects=False)).status == 303


async def test_an_admin_revoking_a_key_in_the_page_signs_its_browsers_out(site: Web) -> None:
    agent = await site.signed_in(A)
    admin = await site.signed_in(D)
    csrf = await csrf_for(admin, "/keys")
    response = await admin.post("/keys/revoke", data={"csrf": csrf, "name": "agent-key"},
                                allow_redirects=False)  # fmt: skip
    assert response.status == 303
    assert (await agent.get("/search", allow_redirects=False)).status == 303


# --- roles ----------------------------------------------------------------------------------

# (path, roles that may open it): every GET page, filled with the story's ids.
MATRIX = [
    ("/", ANY_ROLE),
    ("/search?q=refund", AGENT_UP),
    ("/conversations/{c}", AGENT_UP),
    ("/messages/{m}/html", AGENT_UP),
    ("/messages/{m}/raw", AGENT_UP),
    ("/messages/{m}/attachments/0", AGENT_UP),
    ("/accounts?account_id=acct-1", AGENT_UP),
    ("/accounts/acct-1", AGENT_UP),
    ("/holds", COMPLIANCE_UP),
    ("/retention/forecast", COMPLIANCE_UP),
    ("/exports", COMPLIANCE_UP),
    ("/exports/{e}", COMPLIANCE_UP),
    ("/exports/{e}/download", COMPLIANCE_UP),
    ("/disclosures", COMPLIANCE_UP),
    ("/purge-records?account_id=acct-1", COMPLIANCE_UP),
    ("/verify-purge?account_id=acct-1", COMPLIANCE_UP),
    ("/keys", ADMIN_ONLY),
    ("/audit", ADMIN_ONLY),
]
# Forms that change something: (path, form, roles that may send it).
CHANGES = [
    ("/holds", {"account_id": "acct-1", "kind": "dispute", "reason": "chargeback"}, COMPLIANCE_UP),
    ("/holds/{h}/release", {}, COMPLIANCE_UP),
    ("/exports", {"account_id": "acct-1"}, COMPLIANCE_UP),
    ("/keys", {"name": "new-{role}", "role": "agent"}, ADMIN_ONLY),
    ("/keys/revoke", {"name": "spare-{role}"}, ADMIN_ONLY),
    ("/signout", {}, ANY_ROLE),
]


async def _ready_export(site: Web) -> str:
    from exports.builder import Scope, build_export, start_export

    export = await start_export(scope=Scope(account_id="acct-1"), account_id="acct-1",
                                hold_id=None, created_by="t", now=utcnow(),
                                max_age=timedelta(days=1))  # fmt: skip
    await build_export(export, Scope(account_id="acct-1"), directory=site.app[CONFIG].export_dir,
                       now=utcnow())  # fmt: skip
    return str(export.id)


async def _hold(site: Web) -> Hold:
    return await place_hold(site.app[DATABASE], account_id="acct-1", conversation_id=None,
                            kind=HoldKind.DISPUTE, reason="r", case_ref=None, expires_at=None,
                            created_by="t")  # fmt: skip


async def test_every_page_answers_each_role_as_declared(site: Web, story: Story) -> None:
    ids = {"c": str(story.email.conversation_id), "m": str(story.email.id),
           "e": await _ready_export(site)}  # fmt: skip
    browsers = {role: await site.signed_in(role) for role in Role}
    for path, allowed in MATRIX:
        url = path.format(**ids)
        for role, browser in browsers.items():
            response = await browser.get(url, allow_redirects=False)
            ok = response.status in (200, 303) if role in allowed else response.status == 403
            assert ok, f"{role} on GET {url}: {response.status}"
        signed_out = await site.client().get(url, allow_redirects=False)
        assert signed_out.status == 303 and signed_out.headers["Location"].startswith("/signin")


async def test_every_form_answers_each_role_as_declared(site: Web, story: Story) -> None:
    from store.keys import create_key

    for path, form, allowed in CHANGES:
        for role in Role:
            browser = await site.signed_in(role)
            session = await _session_of(site, browser)
            if "revoke" in path:
                await create_key(name=f"spare-{role}", role=Role.AGENT)
            url = path.replace("{h}", str((await _hold(site)).id))
            data = {k: v.replace("{role}", role.value) for k, v in form.items()}
            response = await browser.post(url, data=data | {"csrf": session.csrf},
                                          allow_redirects=False)  # fmt: skip
            ok = response.status in (201, 303) if role in allowed else response.status == 403
            assert ok, f"{role} on POST {url}: {response.status}"


async def _session_of(site: Web, browser: ClientSession) -> Session:
    """The session of a signed-in client (read back as the pages read it)."""
    cookie = browser.cookie_jar.filter_cookies(site.server.make_url("/"))["sa_session"].value
    session = await sessions.load(site.app[DATABASE], cookie, now=utcnow(),
                                  config=site.app[WEB_CONFIG])  # fmt: skip
    assert session is not None
    return session


def _canonical(path: str) -> str:
    for short, name in (("{c}", "{conversation_id}"), ("{m}", "{message_id}"),
                        ("{e}", "{export_id}"), ("{h}", "{hold_id}"),
                        ("acct-1", "{account_id}"), ("/0", "/{n}")):  # fmt: skip
        path = path.replace(short, name)
    return path


async def test_the_matrix_covers_every_page(site: Web) -> None:
    declared = {("GET", p.split("?")[0]) for p, _ in MATRIX} | {("POST", p) for p, _, _ in CHANGES}
    declared = {(m, _canonical(p)) for m, p in declared}
    pages = {tuple(r.split(" ", 1)) for r in site.app[WEB_ROUTES]}
    pages -= {("GET", "/signin"), ("POST", "/signin"), ("GET", "/static/{name}")}
    assert pages == declared
    roles = {tuple(r.split(" ", 1)): v for r, v in site.app[WEB_ROUTES].items()}
    assert roles[("GET", "/holds")] == COMPLIANCE_UP and roles[("GET", "/keys")] == ADMIN_ONLY


async def test_a_page_refused_to_a_role_is_recorded_in_the_audit_trail(site: Web) -> None:
    agent = await site.signed_in(A)
    response = await agent.get("/holds")
    assert response.status == 403
    assert "The agent role may not see this page." in await response.text()
    page = await audit_events(action="denied", limit=10)
    assert [(e.actor, e.target, e.outcome) for e in page.items] == [
        ("agent-key", {"route": "GET /holds"}, 403)
    ]


async def test_add_web_twice_adds_nothing_twice(site: Web) -> None:
    from aiohttp import web as aioweb

    app = aioweb.Application()
    app[ACCESS] = {}
    add_web(app)
    routes = len(app.router.routes())
    add_web(app)
    assert len(app.router.routes()) == routes


# --- CSRF -----------------------------------------------------------------------------------


async def test_a_form_without_its_csrf_token_changes_nothing(site: Web, story: Story) -> None:
    compliance = await site.signed_in(C)
    form = {"account_id": "acct-1", "kind": "dispute", "reason": "chargeback"}
    for data in (form, form | {"csrf": "forged"}, form | {"csrf": ""}):
        response = await compliance.post("/holds", data=data, allow_redirects=False)
        assert response.status == 403
        assert "This form was not sent from a page of this site" in await response.text()
    as_json = await compliance.post("/holds", json=form | {"csrf": "x"}, allow_redirects=False)
    assert as_json.status == 403
    assert await Hold.find().count() == 0
    csrf = await csrf_for(compliance, "/holds")
    response = await compliance.post("/holds", data=form | {"csrf": csrf}, allow_redirects=False)
    assert response.status == 303
    assert await Hold.find().count() == 1


async def test_a_csrf_token_is_its_sessions_only(site: Web, story: Story) -> None:
    first = await site.signed_in(C)
    second = await site.signed_in(C)
    csrf = await csrf_for(first, "/holds")
    form = {"account_id": "acct-1", "kind": "dispute", "reason": "x", "csrf": csrf}
    assert (await second.post("/holds", data=form, allow_redirects=False)).status == 403


# --- what the pages show --------------------------------------------------------------------


async def test_search_shows_hits_with_the_marked_snippet_and_is_audited(
    site: Web, story: Story
) -> None:
    agent = await site.signed_in(A)
    response = await agent.get("/search", params={"q": "refund kettle", "channel": "email"})
    page = await response.text()
    assert response.status == 200
    assert "<mark>refund</mark>" in page and "<mark>kettle</mark>" in page
    assert f"/conversations/{story.email.conversation_id}#m-{story.email.id}" in page
    assert 'href="/accounts/acct-1"' in page
    events = (await audit_events(action="search", limit=5)).items
    assert [(e.actor, e.query.get("q"), e.query.get("channel")) for e in events] == [
        ("agent-key", "refund kettle", "email")
    ]


async def test_the_first_visit_to_search_searches_nothing(site: Web) -> None:
    agent = await site.signed_in(A)
    page = await (await agent.get("/search")).text()
    assert '<label for="f-q">Search</label>' in page and "found" not in page
    assert (await audit_events(action="search", limit=5)).items == []


async def test_a_malformed_query_is_explained_next_to_the_field(site: Web) -> None:
    agent = await site.signed_in(A)
    response = await agent.get("/search", params={"q": "(refund"})
    page = await response.text()
    assert response.status == 400
    assert 'aria-invalid="true"' in page and 'id="e-q"' in page
    assert "is not closed (at character 1)" in page


async def test_search_pages_follow_the_cursor(site: Web, story: Story) -> None:
    agent = await site.signed_in(A)
    for n in range(25):
        from tests.factories import email

        await email(subject=f"Parcel {n}", body=f"parcel number {n}", account_id="acct-1")
    await site.indexed()
    first = await (await agent.get("/search", params={"q": "parcel", "sort": "newest"})).text()
    assert "25 messages found" in first and first.count('class="hit"') == 20
    next_url = first.split('rel="next"')[0].rsplit('href="', 1)[1].split('"')[0]
    second = await (await agent.get(next_url.replace("&amp;", "&"))).text()
    assert second.count('class="hit"') == 5 and 'rel="next"' not in second


async def test_the_conversation_page_shows_the_thread_in_order(site: Web, story: Story) -> None:
    agent = await site.signed_in(A)
    page = await (await agent.get(f"/conversations/{story.email.conversation_id}")).text()
    assert page.index(f'id="m-{story.email.id}"') < page.index(f'id="m-{story.reply.id}"')
    assert "<summary>Headers</summary>" in page
    assert f'href="/messages/{story.email.id}/raw"' in page
    assert "receipt.txt" in page
    raw = await agent.get(f"/messages/{story.email.id}/raw")
    assert raw.content_type == "message/rfc822" and b"Refund for my kettle" in await raw.read()
    events = {e.action for e in (await audit_events(limit=20)).items}
    assert {"conversation.read", "message.raw"} <= events


async def test_a_chat_transcript_marks_internal_notes(site: Web, story: Story) -> None:
    agent = await site.signed_in(A)
    page = await (await agent.get(f"/conversations/{story.chat.conversation_id}")).text()
    note = page.split(f'id="m-{story.note.id}"')[1].split("</li>")[0]
    assert "Internal note" in note and "ticket 77" in note
    customer = page.split(f'id="m-{story.chat.id}"')[1].split("</li>")[0]
    assert "Internal note" not in customer and "customer" in customer


async def test_the_account_page_shows_holds_as_the_role_may_see_them(
    site: Web, story: Story
) -> None:
    await place_hold(site.app[DATABASE], account_id="acct-1", conversation_id=None,
                     kind=HoldKind.CRIMINAL_INVESTIGATION, reason="fraud ring", case_ref="CASE-9",
                     expires_at=None, created_by="legal")  # fmt: skip
    agent = await (await (await site.signed_in(A)).get("/accounts/acct-1")).text()
    compliance = await (await (await site.signed_in(C)).get("/accounts/acct-1")).text()
    for page in (agent, compliance):
        assert "ann@example.com" in page and "criminal_investigation" in page
    assert "fraud ring" not in agent and "CASE-9" not in agent
    assert "fraud ring" in compliance and "CASE-9" in compliance


async def test_the_account_page_says_when_its_content_reaches_its_maximum_age(
    site: Web, story: Story
) -> None:
    """Before: only "content still goes at its maximum age", no date."""
    page = await (await (await site.signed_in(A)).get("/accounts/acct-1")).text()
    oldest = min(m.collected_at for m in (story.email, story.reply, story.chat, story.note))
    due = oldest + site.app[CONFIG].retention.max_age
    maximum = page.split("<dt>Maximum age</dt>")[1].split("</div>")[0]
    assert f'datetime="{due.isoformat()}"' in maximum or due.strftime("%Y-%m-%d") in maximum
    assert "the others as they reach the same age" in maximum


async def test_agents_see_only_the_status_of_a_deleted_account(site: Web, story: Story) -> None:
    from store.accounts import mark_deleted

    await mark_deleted(account_id="acct-1", deleted_at=utcnow(), grace=timedelta(days=180))
    agent = await site.signed_in(A)
    page = await (await agent.get("/accounts/acct-1")).text()
    assert "deleted" in page and "ann@example.com" not in page
    conversation = await agent.get(f"/conversations/{story.email.conversation_id}")
    assert conversation.status == 404
    compliance = await site.signed_in(C)
    assert "ann@example.com" in await (await compliance.get("/accounts/acct-1")).text()


async def test_a_key_created_in_the_page_is_shown_once_and_works(site: Web) -> None:
    admin = await site.signed_in(D)
    csrf = await csrf_for(admin, "/keys")
    response = await admin.post("/keys", data={"csrf": csrf, "name": "helpdesk", "role": "agent"})
    page = await response.text()
    assert response.status == 201
    token = page.split('id="token" type="text" readonly value="')[1].split('"')[0]
    assert token.startswith("sa_")
    assert token not in await (await admin.get("/keys")).text()
    assert (await sign_in(site.client(), token)).status == 303


async def test_an_export_is_started_followed_and_downloaded(site: Web, story: Story) -> None:
    compliance = await site.signed_in(C)
    csrf = await csrf_for(compliance, "/exports")
    started = await compliance.post("/exports", data={"csrf": csrf, "account_id": "acct-1"},
                                    allow_redirects=False)  # fmt: skip
    assert started.status == 303
    export_page = started.headers["Location"]

    async def ready() -> bool:
        return "Download the zip" in await (await compliance.get(export_page)).text()

    await eventually(ready, timeout=30)
    download = await compliance.get(f"{export_page}/download")
    assert download.status == 200 and download.content_type == "application/zip"
    with zipfile.ZipFile(io.BytesIO(await download.read())) as archive:
        assert "manifest.json" in archive.namelist()
    listed = await (await compliance.get("/exports")).text()
    assert export_page.rsplit("/", 1)[1] in listed
    actions = [e.action for e in (await audit_events(limit=50)).items]
    assert "export.create" in actions and "export.download" in actions


async def test_a_disclosure_is_entered_in_the_register(site: Web, story: Story) -> None:
    hold = await _hold(site)
    compliance = await site.signed_in(C)
    csrf = await csrf_for(compliance, "/exports")
    form = {"csrf": csrf, "hold_id": str(hold.id), "authority": "Paris prosecutor",
            "legal_basis": "Art. 60-1 CPP"}  # fmt: skip
    started = await compliance.post("/exports", data=form, allow_redirects=False)
    assert started.status == 303
    register = await (await compliance.get("/disclosures")).text()
    assert "Paris prosecutor" in register and "Art. 60-1 CPP" in register


async def test_a_disclosure_without_its_authority_is_explained(site: Web, story: Story) -> None:
    hold = await _hold(site)
    compliance = await site.signed_in(C)
    csrf = await csrf_for(compliance, "/exports")
    response = await compliance.post("/exports", data={"csrf": csrf, "hold_id": str(hold.id)})
    assert response.status == 422
    assert "a disclosure names the authority" in await response.text()


async def test_verify_purge_shows_the_residue_scan(site: Web, story: Story) -> None:
    compliance = await site.signed_in(C)
    page = await (await compliance.get("/verify-purge", params={"account_id": "acct-1"})).text()
    assert "residue scan at" in page and "<h3>Found now</h3>" in page
    unknown = await compliance.get("/verify-purge", params={"account_id": "nobody"})
    assert unknown.status == 404 and "the archive has no such account" in await unknown.text()
    records = await (await compliance.get("/purge-records?account_id=acct-1")).text()
    assert "Account acct-1: not purged" in records and "No purge records." in records


async def test_the_forecast_lists_a_deleted_accounts_purge(site: Web, story: Story) -> None:
    from store.accounts import mark_deleted

    await mark_deleted(account_id="acct-1", deleted_at=utcnow(), grace=timedelta(days=180))
    page = await (await (await site.signed_in(C)).get("/retention/forecast")).text()
    assert 'href="/accounts/acct-1"' in page and "account_deletion" in page


async def test_the_audit_log_filters_by_action(site: Web, story: Story) -> None:
    agent = await site.signed_in(A)
    await agent.get("/search", params={"q": "kettle"})
    admin = await site.signed_in(D)
    page = await (await admin.get("/audit", params={"action": "search"})).text()
    assert "q=kettle" in page and "session.start" not in page
    bad = await admin.get("/audit", params={"action": "DROP TABLE"})
    assert bad.status == 400 and 'id="e-action"' in await bad.text()
