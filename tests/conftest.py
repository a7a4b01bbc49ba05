"""Test fixtures: one real mongod per test session, a fresh database per test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from api.app import create_app
from store.database import Database, open_database
from store.embedded import EmbeddedMongo


@pytest.fixture(scope="session")
async def mongo(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EmbeddedMongo]:
    """The session's mongod: a real single-node replica set, as the service runs it."""
    async with EmbeddedMongo(tmp_path_factory.mktemp("mongo")) as server:
        yield server


@pytest.fixture
async def database(mongo: EmbeddedMongo) -> AsyncIterator[Database]:
    """A fresh, empty database with every document bound and every index created."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    async with open_database(mongo.uri, name=name) as db:
        yield db
        await db.client.drop_database(name)


@pytest.fixture
async def http(database: Database) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    """A real HTTP server on a loopback port serving the app, and a client for it."""
    async with TestClient(TestServer(create_app(database=database))) as client:
        yield client


@pytest.fixture
def data_dir() -> Path:
    return Path(__file__).parent / "data"
