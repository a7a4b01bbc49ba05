"""Hostile webhook input, and secrets that must never reach the logs."""

from __future__ import annotations

import io
import json
import logging
import time

import pytest

from ingest.chat.signature import sign
from store.documents import Message, Role
from tests.conftest import WIDGET_SECRET, Api
from tests.test_chat import post, transcript


async def test_deeply_nested_json_is_a_clear_4xx(api: Api) -> None:
    body = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
    response = await post(api.http, None, body=body)
    assert response.status == 400
    assert response.content_type == "application/problem+json"


async def test_huge_json_is_413_before_parsing(api: Api) -> None:
    payload = transcript(1)
    payload["messages"][0]["text"] = "x" * (11 * 1024 * 1024)
    body = json.dumps(payload).encode()
    stamp = str(int(time.time()))
    headers = {"X-Archive-Timestamp": stamp, "Content-Type": "application/json",
               "X-Archive-Signature": sign(WIDGET_SECRET.encode(), stamp, body)}  # fmt: skip
    response = await api.http.post("/webhooks/chat/widget", data=io.BytesIO(body), headers=headers)
    assert response.status == 413
    assert await Message.count() == 0


async def test_a_replayed_request_within_the_window_changes_nothing(api: Api) -> None:
    stamp = int(time.time())
    first = await post(api.http, transcript(2), timestamp=stamp)
    replay = await post(api.http, transcript(2), timestamp=stamp)
    assert (first.status, replay.status) == (201, 200)
    assert await Message.count() == 2


async def test_a_replay_after_the_window_is_refused(api: Api) -> None:
    assert (await post(api.http, transcript(1), timestamp=int(time.time()) - 301)).status == 401


@pytest.mark.parametrize(
    "body", [b"\xff\xfe\x00{", b'{"conversation": "\xc3\x28"}', b"[]", b"null"]
)
async def test_bodies_that_are_not_a_payload_are_4xx(api: Api, body: bytes) -> None:
    response = await post(api.http, None, body=body)
    assert response.status in (400, 422)


async def test_api_tokens_and_webhook_signatures_never_reach_the_logs(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = api.tokens[Role.ADMIN]
    await api.get("/api/v1/audit", Role.ADMIN)
    await api.http.get("/api/v1/audit", headers={"Authorization": f"Bearer {token}x"})
    response = await post(api.http, transcript(1), secret="wrong-secret-0123456789")
    assert response.status == 401
    logged = caplog.text + json.dumps([r.__dict__ for r in caplog.records], default=str)
    assert token not in logged
    assert token[:20] not in logged
    assert "wrong-secret" not in logged
