"""Health, readiness, metrics and problem+json errors over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from api.app import create_app
from api.state import ApiConfig
from store.database import Database, make_client
from tests.helpers import free_port

Client = TestClient[web.Request, web.Application]


async def test_healthz_answers_ok(http: Client) -> None:
    response = await http.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}


async def test_readyz_answers_ready_when_the_database_answers(http: Client) -> None:
    response = await http.get("/readyz")
    assert response.status == 200
    assert (await response.json())["database"] == "ok"


@pytest.fixture
async def http_without_database(tmp_path: Path) -> AsyncIterator[Client]:
    client = make_client(f"mongodb://127.0.0.1:{free_port()}/", timeout=timedelta(seconds=1))
    database = Database(client=client, db=client.get_database("nowhere"))
    config = ApiConfig(search_dir=tmp_path / "search", export_dir=tmp_path / "exports")
    async with TestClient(TestServer(create_app(database=database, config=config))) as http:
        yield http
    await client.close()


async def test_readyz_is_a_503_problem_when_the_database_is_unreachable(
    http_without_database: Client,
) -> None:
    response = await http_without_database.get("/readyz")
    assert response.status == 503
    assert response.content_type == "application/problem+json"
    assert response.headers["Retry-After"].isdigit()
    assert (await response.json())["status"] == 503


async def test_an_unknown_path_is_a_404_problem(http: Client) -> None:
    response = await http.get("/no/such/thing")
    assert response.status == 404
    assert response.content_type == "application/problem+json"
    assert await response.json() == {"type": "about:blank", "title": "Not Found", "status": 404}


async def test_a_wrong_method_is_a_405_problem_that_says_what_is_allowed(http: Client) -> None:
    response = await http.post("/healthz")
    assert response.status == 405
    assert response.content_type == "application/problem+json"
    assert "GET" in response.headers["Allow"]


async def test_metrics_are_prometheus_text_counting_requests_by_route(http: Client) -> None:
    await http.get("/healthz")
    response = await http.get("/metrics")
    assert response.status == 200
    assert response.content_type == "text/plain"
    text = await response.text()
    assert 'archive_http_requests_total{method="GET",route="/healthz",status="200"}' in text
