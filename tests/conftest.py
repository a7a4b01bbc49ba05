"""Test fixtures: one real mongod per test session, a fresh database per test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer

from api.app import create_app
from api.state import SEARCH, ApiConfig
from service.serve import build_app
from service.settings import Settings, load_settings
from store.database import Database, open_database
from store.documents import Role
from store.embedded import EmbeddedMongo
from store.keys import create_key
from store.spool import Spool
from store.subjects import use_key
from tests.mail import running

# Tests that open the database themselves hash addresses as serve does (store.subjects).
use_key(b"test-subject-key-0123456789abcdef")


@pytest.fixture(scope="session")
async def mongo(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EmbeddedMongo]:
    """The session's mongod: a real single-node replica set, as the service runs it.

    Every test makes and drops a database of some 70 files, and mongod keeps a dropped
    database's files (open) for its snapshot history window, 300 s by default: at a test a
    second that is over 20,000 open files, and mongod aborts with "Too many open files".
    """
    parameters = {"minSnapshotHistoryWindowInSeconds": 5}
    async with EmbeddedMongo(tmp_path_factory.mktemp("mongo"), parameters=parameters) as server:
        yield server


@pytest.fixture
async def database(mongo: EmbeddedMongo) -> AsyncIterator[Database]:
    """A fresh, empty database with every document bound and every index created."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    async with open_database(mongo.uri, name=name) as db:
        yield db
        await db.client.drop_database(name)


@pytest.fixture
def spool(database: Database) -> Spool:
    """The spool of the test's SMTP server (``spool.empty()`` waits until all is filed)."""
    return Spool()


@pytest.fixture
async def smtp(spool: Spool) -> AsyncIterator[int]:
    """The port of an SMTP server, with its filer, storing into the test's database."""
    async with running(spool) as port:
        yield port


@pytest.fixture
async def http(
    database: Database, tmp_path: Path
) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    """A real HTTP server on a loopback port serving the app, and a client for it."""
    config = ApiConfig(export_dir=tmp_path / "exports", search_dir=tmp_path / "search")
    async with TestClient(TestServer(create_app(database=database, config=config))) as client:
        yield client


@pytest.fixture
def data_dir() -> Path:
    return Path(__file__).parent / "data"


# --- the API as the service builds it, with a key for every role ---------------------------

WIDGET_SECRET = "widget-secret-0123456789"


@dataclass
class Api:
    """A live app on a loopback port, and a token for each role."""

    http: TestClient[web.Request, web.Application]
    tokens: dict[Role, str]
    settings: Settings

    def headers(self, role: Role | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}

    async def get(self, path: str, role: Role | None = Role.ADMIN, **kw: Any) -> ClientResponse:
        return await self.http.get(path, headers=self.headers(role), **kw)

    async def put(self, path: str, role: Role | None = Role.ADMIN, **kw: Any) -> ClientResponse:
        return await self.http.put(path, headers=self.headers(role), **kw)

    async def post(self, path: str, role: Role | None = Role.ADMIN, **kw: Any) -> ClientResponse:
        return await self.http.post(path, headers=self.headers(role), **kw)

    async def delete(self, path: str, role: Role | None = Role.ADMIN, **kw: Any) -> ClientResponse:
        return await self.http.delete(path, headers=self.headers(role), **kw)

    async def indexed(self) -> None:
        """Wait until the app's search index has every write made so far."""
        await self.http.app[SEARCH].sync()


@pytest.fixture
async def api(database: Database, tmp_path: Path) -> AsyncIterator[Api]:
    settings = load_settings(
        data_dir=tmp_path,
        webhook_sources=[f"widget:generic:{WIDGET_SECRET}"],
        audit_max_age=timedelta(days=30),
        secret_key="test-secret-key-0123456789abcdef0123456789",
    )
    tokens = {role: (await create_key(name=f"{role}-key", role=role))[1] for role in Role}
    async with TestClient(TestServer(build_app(settings, database))) as client:
        yield Api(client, tokens, settings)


# --- counts that fault and load tests report (shown at the end of every run) ----------------

FAULT_REPORT: list[str] = []


def report(line: str) -> None:
    """Record a line for the run's summary (pytest hides what passing tests print)."""
    FAULT_REPORT.append(line)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if FAULT_REPORT:
        terminalreporter.section("faults injected, fuzz cases and counts")
        for line in FAULT_REPORT:
            terminalreporter.write_line(line)
