"""Running real ``serve`` processes for fault tests, and the counts they print."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from store.embedded import free_port
from tests.helpers import eventually


@dataclass
class Serve:
    process: asyncio.subprocess.Process
    http_port: int
    smtp_port: int

    def kill(self) -> None:
        self.process.kill()


def serve_env(uri: str, db: str, data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARCHIVE_")}
    env |= {"ARCHIVE_MONGODB_URI": uri, "ARCHIVE_DB_NAME": db, "ARCHIVE_DATA_DIR": str(data_dir)}
    return env | {f"ARCHIVE_{k.upper()}": v for k, v in extra.items()}


@asynccontextmanager
async def serving(env: dict[str, str], log: Path, *args: str) -> AsyncIterator[Serve]:
    """A ``serve`` process on free ports, ready (``/readyz`` 200); stopped (or killed) after."""
    http_port, smtp_port = free_port(), free_port()
    env = env | {"ARCHIVE_HTTP_PORT": str(http_port), "ARCHIVE_SMTP_PORT": str(smtp_port)}
    with log.open("ab") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "service.cli", "serve", *args, env=env, stdout=out, stderr=out
        )
    serve = Serve(process, http_port, smtp_port)
    try:

        async def ready() -> bool:
            try:
                async with (
                    aiohttp.ClientSession() as http,
                    http.get(f"http://127.0.0.1:{http_port}/readyz") as response,
                ):
                    return response.status == 200
            except aiohttp.ClientError:
                return process.returncode is not None and False

        await eventually(ready, timeout=60)
        yield serve
    finally:
        if process.returncode is None:
            process.terminate()
            await process.wait()


@dataclass
class HealthWatch:
    slowest: float = 0.0  # seconds: the longest /healthz answer seen


@asynccontextmanager
async def watching_healthz(serve: Serve) -> AsyncIterator[HealthWatch]:
    """Ask serve's /healthz every 0.1 s while the block runs (each answer a 200, or the block
    fails on leaving); ``slowest`` is the longest it took."""
    watch, stop = HealthWatch(), asyncio.Event()

    async def poll(http: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            started = time.monotonic()
            async with http.get(f"http://127.0.0.1:{serve.http_port}/healthz") as answer:
                assert answer.status == 200
            watch.slowest = max(watch.slowest, time.monotonic() - started)
            await asyncio.sleep(0.1)

    async with aiohttp.ClientSession() as http:
        polling = asyncio.create_task(poll(http))
        try:
            yield watch
        finally:
            stop.set()
            await polling
