"""The web interface in a real headless Chromium (Debian's, driven by Playwright): signing
in, searching and reading, holds, roles, CSRF, a hostile message, accessibility (axe-core)
and keyboard use. ``make screenshots`` refreshes docs/ui/ from here."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from api.state import DATABASE
from retention.holds import place_hold
from store.database import Database
from store.documents import Hold, HoldKind, Role
from tests.factories import email
from tests.web import Story, Web, a_story, running_web

playwright_api = pytest.importorskip("playwright.async_api")

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
AXE = Path(__file__).parent.parent / ".ui-tools" / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = os.environ.get("ARCHIVE_UI_SCREENSHOTS")

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian's chromium is not installed (make tools installs it)"
)


@pytest.fixture(scope="session")
async def chromium() -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM),
                                                   args=CHROMIUM_ARGS)  # fmt: skip
        yield browser
        await browser.close()


@pytest.fixture
async def site(database: Database, tmp_path: Path) -> AsyncIterator[Web]:
    async with running_web(database, tmp_path) as running:
        yield running


@pytest.fixture
async def story(site: Web) -> Story:
    story = await a_story()
    await site.indexed()
    return story


@pytest.fixture
async def context(chromium: Any) -> AsyncIterator[Any]:
    """A fresh browser profile (its own cookies) for one test."""
    context = await chromium.new_context(viewport={"width": 1280, "height": 900})
    yield context
    await context.close()


async def signed_in_page(context: Any, site: Web, role: Role) -> Any:
    page = await context.new_page()
    await page.goto(site.url("/signin"))
    await page.get_by_label("API key").fill(site.tokens[role])
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(lambda url: "/signin" not in url)
    return page


# --- the journeys ---------------------------------------------------------------------------


async def test_an_agent_signs_in_searches_and_opens_a_conversation(
    context: Any, site: Web, story: Story
) -> None:
    page = await signed_in_page(context, site, Role.AGENT)
    assert page.url.endswith("/search")
    await page.get_by_label("Search", exact=True).fill("refund kettle")
    await page.get_by_label("Channel").select_option("email")
    await page.get_by_role("button", name="Search", exact=True).click()
    await page.wait_for_url("**/search?*")
    results = page.get_by_role("region", name="2 messages found")  # the thread's two emails
    assert await results.locator("mark").first.inner_text() in ("refund", "kettle")
    await results.get_by_role("link", name="Refund for my kettle", exact=True).click()
    await page.wait_for_url(f"**/conversations/{story.email.conversation_id}*")
    assert await page.get_by_role("heading", level=1).inner_text() == "Refund for my kettle"
    first = page.get_by_role("article", name="Refund for my kettle", exact=True)
    headers = first.locator("details.headers")
    assert not await headers.get_attribute("open")
    await headers.locator("summary").click()
    assert await headers.get_attribute("open") == ""
    assert story.email.message_id_header in await headers.inner_text()
    download = first.get_by_role("link", name="Download the original (.eml)")
    async with page.expect_download() as downloaded:
        await download.click()
    eml = Path(await (await downloaded.value).path()).read_bytes()
    assert b"Subject: Refund for my kettle" in eml


async def test_a_chat_transcript_shows_roles_and_marks_internal_notes(
    context: Any, site: Web, story: Story
) -> None:
    page = await signed_in_page(context, site, Role.AGENT)
    await page.goto(site.url(f"/conversations/{story.chat.conversation_id}"))
    note = page.locator(f"#m-{story.note.id}")
    assert await note.locator(".badge").inner_text() == "Internal note"
    assert await note.locator(".role-label").inner_text() == "Agent"  # CSS capitalises
    customer = page.locator(f"#m-{story.chat.id}")
    assert await customer.locator(".badge").count() == 0


async def test_a_compliance_user_places_and_releases_a_hold(
    context: Any, site: Web, story: Story
) -> None:
    page = await signed_in_page(context, site, Role.COMPLIANCE)
    await page.get_by_role("navigation", name="Main").get_by_role("link", name="Holds").click()
    await page.wait_for_url("**/holds")
    place = page.get_by_role("region", name="Place a hold")
    await place.get_by_label("Account").fill("acct-1")
    await place.get_by_label("Kind").select_option("dispute")
    await place.get_by_label("Reason").fill("chargeback on order 1234")
    await place.get_by_label("Case reference").fill("DSP-7")
    await place.get_by_role("button", name="Place hold").click()
    await page.wait_for_url("**/holds?placed=*")
    [hold] = await Hold.find().to_list()
    assert (hold.account_id, hold.reason, hold.case_ref) == ("acct-1", "chargeback on order 1234",
                                                             "DSP-7")  # fmt: skip
    assert hold.created_by == "compliance-key"
    assert f"Hold {hold.id} placed." in await page.get_by_role("status").inner_text()
    row = page.locator(f"#hold-{hold.id}")
    assert "chargeback on order 1234" in await row.inner_text()
    await row.get_by_label("Release reason").fill("settled")
    await row.get_by_role("button", name=f"Release hold {hold.id}").click()
    await page.wait_for_url("**/holds?released=*")
    assert await page.get_by_text("No holds.").is_visible()
    released = await Hold.get(hold.id)
    assert released is not None and released.released_by == "compliance-key"
    assert released.release_reason == "settled"


async def test_an_agent_cannot_reach_the_compliance_pages(
    context: Any, site: Web, story: Story
) -> None:
    page = await signed_in_page(context, site, Role.AGENT)
    nav = page.get_by_role("navigation", name="Main")
    assert await nav.get_by_role("link", name="Search").is_visible()
    for name in ("Holds", "Exports", "API keys", "Audit log"):
        assert await nav.get_by_role("link", name=name).count() == 0
    for path in ("/holds", "/retention/forecast", "/exports", "/purge-records", "/keys"):
        response = await page.goto(site.url(path))
        assert response is not None and response.status == 403, path
        assert await page.get_by_role("heading", level=1).inner_text() == "Not allowed"


HOSTILE_NEXT = ["/%09/evil.example/x", "/%0d/x", "/%0a%0a/x", "//evil.example/x",
                "/%5C/evil.example", "/%2F/evil.example"]  # fmt: skip


@pytest.mark.parametrize("target", HOSTILE_NEXT)
async def test_a_path_back_that_a_browser_would_read_as_another_site_stays_on_the_archive(
    context: Any, site: Web, story: Story, target: str
) -> None:
    """Chromium, not a URL parser of ours, decides where a redirect goes: before, it followed
    ``/signin?next=/%09/evil.example/x`` to evil.example (it strips the tab), and ``/%0d/x``
    broke the answer. Signed in or signing in, the browser ends on the archive's origin."""
    origin = site.url("/").rstrip("/")
    page = await context.new_page()
    await page.goto(site.url(f"/signin?next={target}"))
    await page.get_by_label("API key").fill(site.tokens[Role.AGENT])
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(lambda url: "/signin" not in url)
    assert page.url.startswith(origin + "/"), page.url
    response = await page.goto(site.url(f"/signin?next={target}"))  # signed in already
    assert response is not None and response.ok
    assert page.url.startswith(origin + "/"), page.url


async def test_a_form_posted_without_its_csrf_token_is_refused(
    context: Any, site: Web, story: Story
) -> None:
    page = await signed_in_page(context, site, Role.COMPLIANCE)
    await page.goto(site.url("/holds"))
    place = page.get_by_role("region", name="Place a hold")
    # What a forged form lacks: the token (removed here through the DevTools protocol, which
    # the page's CSP does not govern; the page itself runs no script).
    await page.eval_on_selector("form[action='/holds'] input[name=csrf]", "e => e.remove()")
    await place.get_by_label("Account").fill("acct-1")
    await place.get_by_label("Reason").fill("forged")
    async with page.expect_response(lambda r: r.request.method == "POST") as answer:
        await place.get_by_role("button", name="Place hold").click()
    assert (await answer.value).status == 403
    assert await page.get_by_role("heading", level=1).inner_text() == "Form refused"
    assert await Hold.find().count() == 0


async def test_another_site_cannot_post_with_the_session(
    context: Any, site: Web, story: Story, tmp_path: Path
) -> None:
    """SameSite=Strict: a form on another origin posts without the session cookie."""
    forged = (f'<!doctype html><title>win</title><form method="post" action="{site.url("/holds")}">'
              '<input name="account_id" value="acct-1"><input name="kind" value="dispute">'
              '<input name="reason" value="x"><button>go</button></form>')  # fmt: skip
    async with remote_origin(page=forged) as remote:
        page = await signed_in_page(context, site, Role.COMPLIANCE)
        await page.goto(remote.url)
        async with page.expect_response(lambda r: r.request.method == "POST") as answer:
            await page.get_by_role("button", name="go").click()
        assert (await answer.value).status in (401, 403)
    assert await Hold.find().count() == 0


# --- a hostile message ----------------------------------------------------------------------


class Remote:
    """A local HTTP server standing in for a remote origin: it counts what it is asked."""

    def __init__(self, server: TestServer) -> None:
        self.server = server
        self.requests: list[str] = []

    @property
    def url(self) -> str:
        return str(self.server.make_url("/"))

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"


class remote_origin:
    def __init__(self, *, page: str = "") -> None:
        self.page = page

    async def __aenter__(self) -> Remote:
        app = web.Application()
        self.remote = Remote(TestServer(app, host="127.0.0.1"))

        async def anything(request: web.Request) -> web.Response:
            self.remote.requests.append(request.path)
            return web.Response(text=self.page, content_type="text/html")

        app.router.add_route("*", "/{tail:.*}", anything)
        await self.remote.server.start_server()
        return self.remote

    async def __aexit__(self, *exc: object) -> None:
        await self.remote.server.close()


async def test_a_hostile_message_renders_inert(context: Any, site: Web, story: Story) -> None:
    async with remote_origin() as remote:
        html = (
            "<script>window.__pwned = 1; parent.__pwned = 1;</script>"
            f'<img src="{remote.origin}/pixel.png" alt="">'
            f'<div style="background: url({remote.origin}/bg.png)">styled</div>'
            f'<link rel="stylesheet" href="{remote.origin}/style.css">'
            f'<iframe src="{remote.origin}/frame"></iframe>'
            '<a id="js" href="javascript:parent.__pwned = 2; window.__pwned = 2">click me</a>'
            '<img src="x" onerror="parent.__pwned = 3">'
            f'<form action="{remote.origin}/form"><button id="send">send</button></form>'
        )
        hostile = await email(
            subject='<img src=x onerror="window.__pwned=4">Hostile <script>alert(5)</script>',
            body=f'<script>window.__pwned=6</script> javascript:window.__pwned=7 {remote.origin}/t',
            html=html, account_id="acct-1",
        )  # fmt: skip
        page = await signed_in_page(context, site, Role.AGENT)
        loaded: list[str] = []
        failed: list[tuple[str, str]] = []
        page.on("requestfinished", lambda request: loaded.append(request.url))
        page.on("requestfailed", lambda request: failed.append((request.url, request.failure)))
        await page.goto(site.url(f"/conversations/{hostile.conversation_id}"))
        heading = await page.get_by_role("heading", level=1).inner_text()
        assert heading.startswith('<img src=x onerror="window.__pwned=4">Hostile')
        assert await page.locator("main script, main img").count() == 0
        assert await page.locator("a[href^='javascript:']").count() == 0
        await page.get_by_role("link", name="Show the HTML version").click()
        await page.wait_for_load_state("networkidle")
        frame_element = page.locator("iframe.html-part")
        assert await frame_element.get_attribute("sandbox") == ""
        frame = page.frame_locator("iframe.html-part")
        await frame.locator("#js").click()
        await frame.locator("#send").click()
        await page.wait_for_load_state("networkidle")
        assert await page.evaluate("() => window.__pwned") is None
        assert remote.requests == []
        assert not [url for url in loaded if url.startswith(remote.origin)]
        # Chromium reports the requests the frame's CSP stopped before they left. (A request
        # of the page's own, cut short by the click that navigates, fails as net::ERR_ABORTED:
        # seen once under a loaded machine, and not what this test is about.)
        blocked = [failure for url, failure in failed if url.startswith(remote.origin)]
        assert blocked and set(blocked) == {"csp"}
        html_response = await page.request.get(site.url(f"/messages/{hostile.id}/html"))
        assert "img-src data:" in html_response.headers["content-security-policy"]


# --- accessibility and keyboard -------------------------------------------------------------


def main_pages(story: Story) -> list[str]:
    return [
        "/search?q=refund",
        f"/conversations/{story.email.conversation_id}",
        f"/conversations/{story.email.conversation_id}?html={story.email.id}",
        f"/conversations/{story.chat.conversation_id}",
        "/accounts/acct-1",
        "/holds",
        "/retention/forecast",
        "/exports",
        "/disclosures",
        "/purge-records?account_id=acct-1",
        "/verify-purge?account_id=acct-1",
        "/keys",
        "/audit",
    ]


@pytest.mark.skipif(not AXE.exists(), reason="axe-core is not installed (make ui-tools)")
async def test_axe_finds_no_serious_issue_on_the_main_pages(
    context: Any, site: Web, story: Story
) -> None:
    await context.add_init_script(path=str(AXE))  # injected by DevTools: not under the CSP
    signin = await context.new_page()
    await signin.goto(site.url("/signin"))
    problems = await serious_violations(signin)
    page = await signed_in_page(context, site, Role.ADMIN)
    for path in main_pages(story):
        await page.goto(site.url(path))
        problems += [f"{path}: {p}" for p in await serious_violations(page)]
    agent = await signed_in_page(await context.browser.new_context(), site, Role.AGENT)
    await agent.add_init_script(path=str(AXE))
    await agent.goto(site.url("/holds"))
    problems += [f"403 page: {p}" for p in await serious_violations(agent)]
    assert problems == []


async def serious_violations(page: Any) -> list[str]:
    found = await page.evaluate("async () => (await axe.run(document)).violations")
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
        for v in found
        if v["impact"] in ("serious", "critical")
    ]


async def test_everything_can_be_done_with_the_keyboard(
    context: Any, site: Web, story: Story
) -> None:
    page = await context.new_page()
    await page.goto(site.url("/signin"))
    await page.keyboard.press("Tab")
    assert await focused(page) == "Skip to content"
    await tab_to(page, "f-key")
    await page.keyboard.type(site.tokens[Role.AGENT])
    await page.keyboard.press("Enter")
    await page.wait_for_url("**/search")
    await tab_to(page, "f-q")
    await page.keyboard.type("refund kettle")
    await page.keyboard.press("Enter")
    await page.wait_for_url("**/search?*")
    for _ in range(40):
        await page.keyboard.press("Tab")
        if await focused(page) == "Refund for my kettle":
            break
    await page.keyboard.press("Enter")
    await page.wait_for_url("**/conversations/*")
    await tab_to(page, None, text="Headers")
    await page.keyboard.press("Enter")
    assert await page.locator("details.headers").first.get_attribute("open") == ""


async def focused(page: Any) -> str:
    return str(await page.evaluate("() => document.activeElement.textContent.trim()"))


async def tab_to(page: Any, element_id: str | None, *, text: str | None = None) -> None:
    for _ in range(60):
        await page.keyboard.press("Tab")
        state = await page.evaluate("() => [document.activeElement.id, "
                                    "document.activeElement.textContent.trim()]")  # fmt: skip
        if (element_id and state[0] == element_id) or (text and state[1] == text):
            return
    raise AssertionError(f"Tab never reached {element_id or text}")


# --- screenshots ----------------------------------------------------------------------------

SHOTS = {
    "signin": "/signin",
    "search": "/search?q=refund",
    "conversation-email": "{email}",
    "conversation-chat": "{chat}",
    "account": "/accounts/acct-1",
    "holds": "/holds",
    "forecast": "/retention/forecast",
    "exports": "/exports",
    "keys": "/keys",
    "audit": "/audit",
}


async def test_screenshots_of_the_main_pages(
    context: Any, site: Web, story: Story, tmp_path: Path
) -> None:
    """Always taken (here into a temporary folder); ``ARCHIVE_UI_SCREENSHOTS=docs/ui`` (``make
    screenshots``) keeps them."""
    await place_hold(site.app[DATABASE], account_id="acct-1", conversation_id=None,
                     kind=HoldKind.DISPUTE, reason="chargeback on order 1234", case_ref="DSP-7",
                     expires_at=None, created_by="compliance-key")  # fmt: skip
    folder = tmp_path / "shots"
    folder.mkdir()
    signin = await context.new_page()
    await signin.goto(site.url("/signin"))
    await signin.screenshot(path=str(folder / "signin.png"), full_page=True)
    page = await signed_in_page(context, site, Role.ADMIN)
    paths = {"email": f"/conversations/{story.email.conversation_id}",
             "chat": f"/conversations/{story.chat.conversation_id}"}  # fmt: skip
    for name, path in SHOTS.items():
        if name == "signin":
            continue
        await page.goto(site.url(path.format(**paths)))
        await page.screenshot(path=str(folder / f"{name}.png"), full_page=True)
    shots = sorted(folder.glob("*.png"))
    assert [p.stem for p in shots] == sorted(SHOTS)
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in shots)
    if SCREENSHOTS:
        target = Path(SCREENSHOTS)
        target.mkdir(parents=True, exist_ok=True)
        for shot in shots:
            shutil.copy(shot, target / shot.name)
