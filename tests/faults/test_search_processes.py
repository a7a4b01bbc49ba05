"""The search index across real ``serve`` processes: one killed mid-stream resumes without
losing or doubling a document, a deleted index folder is rebuilt at start, and two API
processes on one database each answer searches from their own index."""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from search.index import open_index
from store.database import Database
from store.documents import Message
from store.embedded import EmbeddedMongo, free_port
from store.keys import create_key
from tests.conftest import report
from tests.factories import chat
from tests.faults.processes import Serve, serve_env, serving
from tests.helpers import eventually


async def hits(serve: Serve, token: str, q: str, **params: str) -> dict[str, Any]:
    url = f"http://127.0.0.1:{serve.http_port}/api/v1/search"
    async with (
        aiohttp.ClientSession() as http,
        http.get(url, params={"q": q, "limit": "100", **params},
                 headers={"Authorization": f"Bearer {token}"}) as response,
    ):  # fmt: skip
        assert response.status == 200, await response.text()
        result: dict[str, Any] = await response.json()
        return result


async def finds(serve: Serve, token: str, q: str, expected: int) -> None:
    async def found() -> bool:
        return (await hits(serve, token, q))["total"] == expected

    await eventually(found, timeout=60)


def index_folder(data_dir: Path, database: Database) -> Path:
    return data_dir / "search" / database.db.name


@pytest.mark.slow
async def test_a_killed_serve_resumes_its_index_and_a_deleted_one_is_rebuilt(
    database: Database, mongo: EmbeddedMongo, tmp_path: Path
) -> None:
    _, token = await create_key(name="agent", role="agent")  # type: ignore[arg-type]
    env = serve_env(mongo.uri, database.db.name, tmp_path)
    for n in range(50):
        await chat(f"before kettle {n}", conversation=f"c{n % 5}")
    async with serving(env, tmp_path / "serve.log", "--no-smtp", "--no-scheduler") as first:
        await finds(first, token, "kettle", 50)
        # Changes stream in while the process is killed outright.
        for n in range(200):
            await chat(f"during kettle {n}", conversation=f"d{n % 5}")
        first.kill()
        await first.process.wait()
    for n in range(50):
        await chat(f"after kettle {n}", conversation=f"e{n % 5}")
    await Message.get_pymongo_collection().delete_many(
        {"text": {"$regex": "^before kettle [0-9]$"}}
    )

    async with serving(env, tmp_path / "serve.log", "--no-smtp", "--no-scheduler") as second:
        await finds(second, token, "kettle", 290)
        assert (await hits(second, token, '"after kettle"'))["total"] == 50
        assert (await hits(second, token, '"before kettle"'))["total"] == 40
    folder = index_folder(tmp_path, database)
    assert open_index(folder).searcher().num_docs == 290, "a document lost or doubled"

    shutil.rmtree(tmp_path / "search")
    async with serving(env, tmp_path / "serve.log", "--no-smtp", "--no-scheduler") as third:
        await finds(third, token, "kettle", 290)
    assert open_index(folder).searcher().num_docs == 290
    assert "rebuilding" in (tmp_path / "serve.log").read_text()
    report("search index: serve SIGKILLed mid-stream resumed 290 of 290 documents; "
           "a deleted index folder was rebuilt at start")  # fmt: skip


@pytest.mark.slow
async def test_two_api_processes_each_answer_searches_from_their_own_index(
    database: Database, mongo: EmbeddedMongo, tmp_path: Path
) -> None:
    _, token = await create_key(name="agent", role="agent")  # type: ignore[arg-type]
    one_env = serve_env(mongo.uri, database.db.name, tmp_path / "one")
    two_env = serve_env(mongo.uri, database.db.name, tmp_path / "two")
    async with (
        serving(one_env, tmp_path / "one.log", "--no-smtp", "--no-scheduler") as one,
        serving(two_env, tmp_path / "two.log", "--no-smtp", "--no-scheduler") as two,
    ):
        for n in range(20):
            await chat(f"shared toaster {n}", conversation=f"s{n % 3}")
        await finds(one, token, "toaster", 20)
        await finds(two, token, "toaster", 20)


@pytest.mark.slow
async def test_a_second_process_on_the_same_index_folder_is_refused_with_one_line(
    database: Database, mongo: EmbeddedMongo, tmp_path: Path
) -> None:
    env = serve_env(mongo.uri, database.db.name, tmp_path)
    async with serving(env, tmp_path / "one.log", "--no-smtp", "--no-scheduler"):
        second = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "service.cli", "serve", "--no-smtp", "--no-scheduler",
            env=env | {"ARCHIVE_HTTP_PORT": str(free_port())},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await asyncio.wait_for(second.communicate(), 60)
    assert second.returncode != 0
    [line] = err.decode().strip().splitlines()[-1:]
    assert "is in use by another process" in line and "ARCHIVE_DATA_DIR" in line
    assert "Traceback" not in err.decode()


async def cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service.cli", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.mark.slow
async def test_reindex_rebuilds_here_without_a_serve_and_asks_a_running_serve_to(
    database: Database, mongo: EmbeddedMongo, tmp_path: Path
) -> None:
    _, token = await create_key(name="agent", role="agent")  # type: ignore[arg-type]
    for n in range(30):
        await chat(f"ladle {n}", conversation=f"l{n % 3}")
    env = serve_env(mongo.uri, database.db.name, tmp_path)
    code, out, err = await cli(env, "reindex")
    assert code == 0, err
    assert "rebuilt from 30 messages (here" in out
    folder = index_folder(tmp_path, database)
    assert open_index(folder).searcher().num_docs == 30

    async with serving(env, tmp_path / "serve.log", "--no-smtp", "--no-scheduler") as running:
        await finds(running, token, "ladle", 30)  # followed on from the command's token
        code, out, err = await cli(env, "reindex")
        assert code == 0, err
        assert "(by the running serve)" in out
        assert not (folder / "rebuild.request").exists()
        await finds(running, token, "ladle", 30)
    assert "a rebuild was asked for" in (tmp_path / "serve.log").read_text()
