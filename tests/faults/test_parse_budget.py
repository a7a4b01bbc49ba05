"""Each step of a message's parse has a CPU budget, in the real parsing pool: past it the
message is filed raw-only or without its attachments' text, reason noted; a parsing process
stuck where no timer reaches is killed and replaced."""

from __future__ import annotations

import time

import pytest

from ingest import parsing
from ingest.budget import OverBudget, cpu_budget
from ingest.parsing import ParserLost, Parsers, ToParse
from store.documents import utcnow
from tests.faults import poison
from tests.faults.test_hostile_mail import mail_with_pdf
from tests.mail import SUPPORT, make_email
from tests.pdfs import pdf_bomb


def test_the_budget_stops_a_busy_block() -> None:
    started = time.process_time()
    with pytest.raises(OverBudget), cpu_budget(0.2):
        while True:
            pass
    assert time.process_time() - started < 5


def test_the_budget_is_not_swallowed_by_a_lenient_parser() -> None:
    def lenient() -> None:
        while True:
            try:
                sum(range(10_000))
            except Exception:  # what html.parser and pypdf do with errors
                continue

    with pytest.raises(OverBudget), cpu_budget(0.2):
        lenient()


def test_a_block_within_its_budget_is_left_alone() -> None:
    with cpu_budget(5):
        assert sum(range(1000)) == 499500


async def test_an_attachment_over_the_budget_files_the_message_without_its_text() -> None:
    parsers = Parsers(1, budget=1)
    try:
        [email] = await parsers.parse_many(
            [ToParse(mail_with_pdf(pdf_bomb()), utcnow())], support=SUPPORT
        )
    finally:
        parsers.close()
    assert email.attachment_text == ""
    assert email.parse_error == "attachment text not extracted: more than 1s of CPU"
    assert email.subject == "invoice" and email.text.strip() == "see attached"


async def test_a_parse_over_the_budget_files_the_message_raw_only() -> None:
    many_parts = make_email(attachments=[(f"f{n}.txt", "text/plain", b"x") for n in range(3000)])
    parsers = Parsers(1, budget=0.01)
    try:
        [email] = await parsers.parse_many([ToParse(many_parts, utcnow())], support=SUPPORT)
    finally:
        parsers.close()
    assert email.raw == many_parts
    assert email.parse_error == "not parsed: more than 0.01s of CPU"
    assert email.attachments == () and email.subject is None


async def test_a_stuck_parsing_process_is_killed_and_replaced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(parsing, "_parse_many", poison.parse_or_hang)
    parsers = Parsers(1, budget=0.2)
    stuck = poison.MARK + b"\r\n" + make_email()
    try:
        with pytest.raises(ParserLost, match="did not answer"):
            await parsers.parse_many([ToParse(stuck, utcnow())], support=SUPPORT)
        [email] = await parsers.parse_many([ToParse(make_email(), utcnow())], support=SUPPORT)
    finally:
        parsers.close()
    assert parsers.started == 2
    assert email.parse_error is None
