"""The search index heals: a writer that failed (on a full disk) is replaced once the cause
is gone, and /readyz says "degraded" meanwhile. Once on a real full file system (a small
tmpfs, where the machine lets the tests mount one), and once with the failure tantivy gives,
injected at the write (so that the healing is tested everywhere)."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from api.app import create_app
from api.state import ApiConfig
from search.index import SearchIndex, following, presence
from store.database import Database
from tests.factories import chat
from tests.helpers import eventually


async def test_after_a_full_disk_is_freed_new_messages_are_searchable_again(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = SearchIndex(tmp_path / "search", database.db.name, await_ms=100)
    disk_full = True
    write = SearchIndex._write

    def on_a_full_disk(self: SearchIndex, pending: list[Any]) -> None:
        if disk_full:
            # What tantivy does when a commit fails: the writer is dead from then on.
            with contextlib.suppress(ValueError):
                self._writer.wait_merging_threads()  # type: ignore[union-attr]
            raise OSError(errno.ENOSPC, "No space left on device")
        write(self, pending)

    config = ApiConfig(export_dir=tmp_path / "exports", search_dir=tmp_path / "search")
    async with following(index):
        await chat("before the disk filled up", conversation="c-0")
        await index.sync()
        monkeypatch.setattr(SearchIndex, "_write", on_a_full_disk)
        app = create_app(database=database, config=config, index=index)
        async with TestClient(TestServer(app)) as http:
            message = await chat("written while the disk was full", conversation="c-1")

            async def degraded() -> bool:
                body = await (await http.get("/readyz")).json()
                return bool(body["search"] == "degraded" and "OSError" in body["search_problem"])

            await eventually(degraded, timeout=30)
            assert presence(index.path, [str(message.id)]).searchable == 0
            disk_full = False  # space freed

            async def searchable() -> bool:
                return presence(index.path, [str(message.id)]).searchable == 1

            await eventually(searchable, timeout=60)
            body = await (await http.get("/readyz")).json()
    assert body["search"] == "ready" and "search_problem" not in body
    assert index.degraded is None


@contextlib.contextmanager
def small_file_system(path: Path, *, megabytes: int) -> Iterator[Path]:
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs",
                              str(path)], capture_output=True)  # fmt: skip
    if mounted.returncode != 0:
        # Must stay a skip: only root may mount a file system, and a developer's machine need
        # not run the tests as root. The healing itself is not skipped anywhere: the test
        # above injects the failure tantivy gives on a full disk and runs on every machine;
        # CI (root) runs this one too.
        pytest.skip("cannot mount a tmpfs here (not root); the injected full disk covers it")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def fill(path: Path) -> Path:
    """Write a file in ``path`` until the file system is full; returns it."""
    filler = path / "filler"
    with open(filler, "wb", buffering=0) as out:
        with contextlib.suppress(OSError):
            while True:
                out.write(b"\0" * 65536)
        with contextlib.suppress(OSError):
            while True:
                out.write(b"\0")
    assert os.statvfs(path).f_bavail == 0
    return filler


async def test_after_a_real_full_disk_is_freed_new_messages_are_searchable_again(
    database: Database, tmp_path: Path
) -> None:
    with small_file_system(tmp_path / "disk", megabytes=32) as disk:
        index = SearchIndex(disk / "search", database.db.name, await_ms=100)
        config = ApiConfig(export_dir=tmp_path / "exports", search_dir=disk / "search")
        async with following(index):
            await chat("before the disk filled up", conversation="c-0")
            await index.sync()
            filler = fill(disk)
            app = create_app(database=database, config=config, index=index)
            async with TestClient(TestServer(app)) as http:
                message = await chat("written while the disk was full " * 2000, conversation="c-1")

                async def degraded() -> bool:
                    body = await (await http.get("/readyz")).json()
                    return bool(body["search"] == "degraded")

                await eventually(degraded, timeout=30)
                assert presence(index.path, [str(message.id)]).searchable == 0
                filler.unlink()  # space freed

                async def searchable() -> bool:
                    return presence(index.path, [str(message.id)]).searchable == 1

                await eventually(searchable, timeout=60)
                later = await chat("written after the space was freed", conversation="c-2")

                async def later_searchable() -> bool:
                    return presence(index.path, [str(later.id)]).searchable == 1

                await eventually(later_searchable, timeout=60)
                body = await (await http.get("/readyz")).json()
    assert body["search"] == "ready" and "search_problem" not in body
