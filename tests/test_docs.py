"""The documentation stands alone: every relative link in README.md and docs/ resolves inside
the repository, and every page of docs/ is reachable from the README."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

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
