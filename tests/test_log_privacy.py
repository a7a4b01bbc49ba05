"""Logs carry ids, counts, codes and durations: no query strings, no exception messages (they
quote what failed: an address, a header)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from service.logs import JsonFormatter, TextFormatter
from service.serve import build_app, http_server
from service.settings import load_settings
from store.database import Database
from store.documents import Role
from store.keys import create_key
from tests.helpers import free_port


async def test_the_access_log_writes_the_path_without_its_query(
    database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    _, token = await create_key(name="maya", role=Role.AGENT)
    app = build_app(load_settings(), database)
    port = free_port()
    caplog.set_level(logging.INFO, logger="archive.http")
    async with (
        http_server(app, host="127.0.0.1", port=port),
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http,
    ):
        url = f"http://127.0.0.1:{port}/api/v1/search"
        params = {"q": "Lovelace parcel", "participant": "ann.lovelace@example.com"}
        async with http.get(url, params=params) as response:
            assert response.status == 200
        async with http.get(f"http://127.0.0.1:{port}/nothing/ann.lovelace@example.com"):
            pass
    lines = [r.getMessage() for r in caplog.records if r.name == "archive.http"]
    assert len(lines) == 2
    assert lines[0].startswith("GET /api/v1/search 200 ")
    assert lines[1].startswith("GET - 404 ")
    assert not any("lovelace" in line.lower() or "parcel" in line for line in lines)


ADDRESS, NAME = "ann.lovelace@example.com", "Ann Lovelace"


def logged(formatter: logging.Formatter, fail: Callable[[], object]) -> str:
    """What ``formatter`` writes for ``log.exception`` while ``fail()`` raises."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    log = logging.getLogger("archive.test_log_privacy")
    log.addHandler(handler)
    try:
        fail()
    except Exception:
        log.exception("filing failed")
    finally:
        log.removeHandler(handler)
    return out.getvalue()


def file_mail_from(address: str, name: str) -> None:
    try:
        raise KeyError(address)
    except KeyError as exc:
        raise ValueError(f"could not file mail from {name}") from exc


@pytest.mark.parametrize("formatter", [TextFormatter(), JsonFormatter()])
def test_a_logged_exception_keeps_its_frames_and_types_but_not_its_message(
    formatter: logging.Formatter,
) -> None:
    line = logged(formatter, lambda: file_mail_from(ADDRESS, NAME))
    text = line if isinstance(formatter, TextFormatter) else json.loads(line)["exc"]
    assert "Lovelace" not in text and "lovelace" not in text
    assert "KeyError" in text and "ValueError" in text
    assert "file_mail_from" in text  # the frame where it happened
    assert text.index("KeyError") < text.index("ValueError")  # the cause first, as Python does


def test_an_os_error_is_logged_with_its_errno_name(tmp_path: Path) -> None:
    text = logged(TextFormatter(), (tmp_path / "ann.lovelace@example.com").read_bytes)
    assert "FileNotFoundError [ENOENT]" in text and "lovelace" not in text
