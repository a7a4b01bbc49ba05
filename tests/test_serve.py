"""The ``support-archive serve`` process, run as a user runs it: started, probed, signalled."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from store.embedded import EmbeddedMongo
from tests.helpers import eventually, free_port, mongod_pids_using
from tests.mail import make_email, send

CLI = [sys.executable, "-m", "service.cli"]
START_TIMEOUT = 90.0


def environment(**variables: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARCHIVE_")}
    env.update({f"ARCHIVE_{name.upper()}": value for name, value in variables.items()})
    return env


@asynccontextmanager
async def serve(env: dict[str, str]) -> AsyncIterator[asyncio.subprocess.Process]:
    process = await asyncio.create_subprocess_exec(
        *CLI, "serve", env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def status_of(url: str) -> int | None:
    try:
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            return response.status
    except aiohttp.ClientError:
        return None


def is_ready(base: str) -> Callable[[], object]:
    async def check() -> bool:
        return await status_of(f"{base}/readyz") == 200

    return check


async def output_of(process: asyncio.subprocess.Process) -> str:
    assert process.stdout is not None
    return (await process.stdout.read()).decode()


@pytest.mark.slow
async def test_serve_on_embedded_mongodb_is_ready_and_ctrl_c_leaves_no_mongod(
    tmp_path: Path,
) -> None:
    port = free_port()
    env = environment(data_dir=str(tmp_path), http_port=str(port))
    async with serve(env) as process:
        await eventually(is_ready(f"http://127.0.0.1:{port}"), timeout=START_TIMEOUT)
        assert await status_of(f"http://127.0.0.1:{port}/healthz") == 200
        assert len(mongod_pids_using(tmp_path)) == 1

        process.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(process.wait(), 60) == 0
        log = await output_of(process)
    assert f"listening on http://127.0.0.1:{port}" in log
    assert "First start: an admin API key was created" in log
    assert mongod_pids_using(tmp_path) == []


@pytest.mark.slow
async def test_ctrl_c_in_a_terminal_stops_serve_and_its_parsing_processes_quietly(
    tmp_path: Path, mongo: EmbeddedMongo
) -> None:
    """A terminal's Ctrl-C signals the whole process group, parsing processes included."""
    port, smtp = free_port(), free_port()
    env = environment(data_dir=str(tmp_path), http_port=str(port), smtp_port=str(smtp),
                      mongodb_uri=mongo.uri, db_name=f"test_{uuid.uuid4().hex[:12]}",
                      parse_workers="1")  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        *CLI, "serve", env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        await eventually(is_ready(f"http://127.0.0.1:{port}"), timeout=START_TIMEOUT)
        code, _ = await send(smtp, make_email())  # the parsing process is started
        assert code == 250
        await eventually(lambda: _children_of(process.pid), timeout=30)
        os.killpg(process.pid, signal.SIGINT)
        assert await asyncio.wait_for(process.wait(), 60) == 0
        log = await output_of(process)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert "Traceback" not in log and "KeyboardInterrupt" not in log, log


async def _children_of(pid: int) -> bool:
    return bool(Path(f"/proc/{pid}/task/{pid}/children").read_text().split())


@pytest.mark.slow
async def test_a_killed_serve_takes_its_mongod_down_with_it(tmp_path: Path) -> None:
    port = free_port()
    env = environment(data_dir=str(tmp_path), http_port=str(port))
    async with serve(env) as process:
        await eventually(is_ready(f"http://127.0.0.1:{port}"), timeout=START_TIMEOUT)
        process.kill()
        await process.wait()

    async def mongod_gone() -> bool:
        return mongod_pids_using(tmp_path) == []

    await eventually(mongod_gone, timeout=30)


@pytest.mark.slow
async def test_serve_uses_an_existing_replica_set_given_its_uri(
    tmp_path: Path, mongo: EmbeddedMongo
) -> None:
    port = free_port()
    env = environment(
        data_dir=str(tmp_path),
        http_port=str(port),
        mongodb_uri=mongo.uri,
        db_name=f"test_{uuid.uuid4().hex[:12]}",
    )
    async with serve(env) as process:
        await eventually(is_ready(f"http://127.0.0.1:{port}"), timeout=START_TIMEOUT)
        assert mongod_pids_using(tmp_path) == []
        assert not (tmp_path / "mongo").exists()
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 60) == 0


@pytest.mark.parametrize(
    ("variable", "value"),
    [("http_port", "abc"), ("retention_grace", "1y"), ("env", "staging"),
     ("support_addresses", "not an address")],
)  # fmt: skip
async def test_a_bad_setting_stops_the_start_with_one_line_naming_it(
    tmp_path: Path, variable: str, value: str
) -> None:
    env = environment(data_dir=str(tmp_path), **{variable: value})
    async with serve(env) as process:
        assert await asyncio.wait_for(process.wait(), 30) == 2
        lines = (await output_of(process)).strip().splitlines()
    assert len(lines) == 1
    assert f"ARCHIVE_{variable.upper()}" in lines[0]
    assert mongod_pids_using(tmp_path) == []


@pytest.mark.slow
async def test_a_busy_port_is_one_line_and_the_first_key_waits_for_a_start_that_works(
    tmp_path: Path, mongo: EmbeddedMongo
) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    taken = busy.getsockname()[1]
    base = {"data_dir": str(tmp_path), "mongodb_uri": mongo.uri, "smtp_port": str(free_port()),
            "db_name": f"test_{uuid.uuid4().hex[:12]}"}  # fmt: skip
    try:
        async with serve(environment(**base, http_port=str(taken))) as process:
            assert await asyncio.wait_for(process.wait(), 60) == 1
            log = await output_of(process)
    finally:
        busy.close()
    assert (
        f"support-archive: port {taken} on 127.0.0.1 is in use by another program: stop it, "
        "or set ARCHIVE_HTTP_PORT to a free port" in log.splitlines()
    )
    assert "Traceback" not in log and "First start" not in log and "sa_" not in log
    port = free_port()
    async with serve(environment(**base, http_port=str(port))) as process:
        await eventually(is_ready(f"http://127.0.0.1:{port}"), timeout=START_TIMEOUT)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 60) == 0
        log = await output_of(process)
    assert "First start: an admin API key was created" in log


async def test_help_lists_the_commands() -> None:
    process = await asyncio.create_subprocess_exec(*CLI, "--help", stdout=asyncio.subprocess.PIPE)
    out = await output_of(process)
    assert await process.wait() == 0
    assert "serve" in out
