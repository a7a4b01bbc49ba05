"""The documentation stands alone: every relative link in README.md and docs/ resolves inside
the repository, and every page of docs/ is reachable from the README."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest

from store.documents import Role
from tests.conftest import WIDGET_SECRET, Api
from tests.helpers import eventually

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# [text](target) and [text](target "title"); images too. Code spans are removed first.
LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
CODE = re.compile(r"```.*?```|`[^`\n]*`", re.S)


def links_of(page: Path) -> list[str]:
    return LINK.findall(CODE.sub("", page.read_text()))


def anchors_of(page: Path) -> set[str]:
    """GitHub's anchors: headings lowercased, punctuation dropped, spaces to hyphens."""
    anchors = set()
    for heading in re.findall(r"^#+\s+(.+?)\s*$", CODE.sub("", page.read_text()), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


def broken_links(page: Path, *, root: Path = ROOT) -> list[str]:
    """The relative links of ``page`` that lead outside ``root``, nowhere, or to no heading."""
    broken = []
    for target in links_of(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        inside = resolved.is_relative_to(root) and resolved.exists()
        if not inside or (
            anchor and resolved.suffix == ".md" and anchor not in anchors_of(resolved)
        ):
            broken.append(target)
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves_inside_the_repository(page: Path) -> None:
    assert broken_links(page) == []


def test_every_page_of_docs_is_linked_from_the_readme() -> None:
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in links_of(ROOT / "README.md")}
    assert [p.name for p in PAGES[1:] if p not in linked] == []


def test_the_link_check_finds_links_outside_nowhere_and_to_no_heading(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "y.md").write_text("# A heading\n")
    page = root / "docs" / "x.md"
    page.write_text(
        "[spec](../../shared/SPEC.md), [gone](missing.md), [bad](y.md#nowhere), "
        "[good](y.md#a-heading), [web](https://example.com/), `[code](nowhere.md)`"
    )
    assert broken_links(page, root=root) == ["../../shared/SPEC.md", "missing.md", "y.md#nowhere"]


async def test_the_documented_curl_and_openssl_recipe_stores_a_message(api: Api) -> None:
    text = (ROOT / "docs" / "webhooks.md").read_text()
    recipe = text.split("Sending one message with `curl` and `openssl`:", 1)[1]
    script = recipe.split("```sh\n", 1)[1].split("```", 1)[0]
    base = f"http://127.0.0.1:{api.http.server.port}"
    script = script.replace("http://127.0.0.1:8080", base).replace(
        "SECRET='the-secret-of-this-source'", f"SECRET='{WIDGET_SECRET}'"
    )
    process = await asyncio.create_subprocess_exec(
        "bash", "-euo", "pipefail", "-c", script,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    answer = json.loads(out)
    assert answer["messages"][0]["external_id"] == "m-1", answer

    async def filed() -> bool:
        response = await api.get(f"/api/v1/messages/{answer['messages'][0]['id']}", Role.AGENT)
        return response.status == 200 and (await response.json()).get("text") == "Hello"

    await eventually(filed)
