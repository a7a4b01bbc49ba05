"""Export files never outlive their records: temporary names, clean-up on failure and
cancellation, owner-only permissions, and removal of what no record owns."""

from __future__ import annotations

import asyncio
import errno
import os
import stat
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from exports.builder import (
    Scope,
    _move,
    build_export,
    files_of_exports,
    remove_expired_exports,
    remove_exports,
    remove_orphan_export_files,
    start_export,
    unowned_export_files,
    write_export,
)
from store.accounts import ensure_account
from store.database import Database
from store.documents import Export, ExportStatus, Message, utcnow
from store.embedded import EmbeddedMongo
from tests.factories import chat, email
from tests.faults.processes import serve_env

ACCOUNT = "acct-files"


async def start(directory: Path, *, account_id: str = ACCOUNT) -> Export:
    await ensure_account(account_id=account_id)  # an export of an unknown account is refused
    return await start_export(
        scope=Scope(account_id=account_id), account_id=account_id, hold_id=None,
        created_by="test", now=utcnow(), max_age=timedelta(days=7), directory=directory,
    )  # fmt: skip


async def an_account_with_a_lost_blob() -> None:
    """Two emails, the second pointing at an attachment blob that is not there: an export
    fails after it has written part of its files."""
    await email(account_id=ACCOUNT, subject="first")
    broken = await email(account_id=ACCOUNT, subject="second",
                         attachments=[("a.txt", "text/plain", b"attached")])  # fmt: skip
    broken.attachments[0].sha256 = "0" * 64
    await broken.save()


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


async def test_a_failed_export_leaves_no_file_behind(database: Database, tmp_path: Path) -> None:
    await an_account_with_a_lost_blob()
    export = await start(tmp_path)
    with pytest.raises(Exception, match="does not exist"):
        await build_export(export, Scope(account_id=ACCOUNT), directory=tmp_path,
                                   now=utcnow())  # fmt: skip
    assert files_in(tmp_path) == []
    found = await Export.get(export.id)
    assert found is not None and found.status is ExportStatus.FAILED


async def cancel_midway(task: asyncio.Task[Any], midway: asyncio.Event) -> None:
    """Cancel ``task`` once it has written a message, as a shutdown would."""
    waiter = asyncio.ensure_future(midway.wait())
    await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    task.cancel()
    await asyncio.wait([task])


async def some_mail(count: int = 20) -> None:
    for n in range(count):
        await email(account_id=ACCOUNT, subject=f"mail {n}")


async def test_a_cancelled_export_write_leaves_no_file_behind(
    database: Database, tmp_path: Path
) -> None:
    await some_mail()
    midway = asyncio.Event()
    seen: list[list[str]] = []

    def written_one() -> None:
        seen.append(files_in(tmp_path))
        midway.set()

    task = asyncio.create_task(write_export(
        tmp_path / "x.zip", Scope(account_id=ACCOUNT), now=utcnow(),
        on_message=written_one,
    ))  # fmt: skip
    await cancel_midway(task, midway)
    assert task.cancelled(), "the cancellation did not land mid-export"
    assert seen[0] != [], "the export had written nothing yet"
    assert files_in(tmp_path) == []


async def test_a_cancelled_export_is_marked_failed_and_leaves_no_file(
    database: Database, tmp_path: Path
) -> None:
    await some_mail()
    export = await start(tmp_path)
    midway = asyncio.Event()
    task = asyncio.create_task(build_export(
        export, Scope(account_id=ACCOUNT), directory=tmp_path, now=utcnow(),
        on_message=midway.set,
    ))  # fmt: skip
    await cancel_midway(task, midway)
    assert task.cancelled(), "the cancellation did not land mid-export"
    assert files_in(tmp_path) == []
    found = await Export.get(export.id)
    assert found is not None
    assert (found.status, found.error, found.path) == (ExportStatus.FAILED, "interrupted", None)


async def test_a_ready_export_is_one_owner_only_file_under_its_id(
    database: Database, tmp_path: Path
) -> None:
    await email(account_id=ACCOUNT)
    directory = tmp_path / "exports"
    export = await start(directory)
    ready = await build_export(export, Scope(account_id=ACCOUNT),
                                       directory=directory, now=utcnow())  # fmt: skip
    assert files_in(directory) == [f"{export.id}.zip"]
    assert ready.path == str(directory / f"{export.id}.zip")
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE((directory / f"{export.id}.zip").stat().st_mode) == 0o600


async def test_an_expired_export_without_a_path_takes_its_temporary_files_with_it(
    database: Database, tmp_path: Path
) -> None:
    export = await start(tmp_path)  # still running: no path yet
    for name in (f"{export.id}.zip.part", f"{export.id}.json.part"):
        (tmp_path / name).write_bytes(b"conversation text")
    assert await remove_expired_exports(now=export.expires_at) == 1
    assert files_in(tmp_path) == []
    assert await Export.get(export.id) is None


def written_ago(path: Path, age: timedelta) -> None:
    path.write_bytes(b"personal data")
    then = (utcnow() - age).timestamp()
    os.utime(path, (then, then))


async def test_files_no_live_record_owns_are_removed_once_past_the_min_age(
    database: Database, tmp_path: Path
) -> None:
    running = await start(tmp_path)
    ready = await start(tmp_path)
    await Export.get_pymongo_collection().update_one({"_id": ready.id}, {"$set": {
        "status": "ready", "path": str(tmp_path / f"{ready.id}.zip")}})  # fmt: skip
    failed = await start(tmp_path)
    await Export.get_pymongo_collection().update_one(
        {"_id": failed.id}, {"$set": {"status": "failed"}}
    )
    owned = [f"{running.id}.zip.part", f"{ready.id}.zip"]
    orphans = ["65a000000000000000000000.zip", "65a000000000000000000001.zip.part", "stray.txt",
               f"{ready.id}.json.part", f"{failed.id}.zip.part"]  # fmt: skip
    for name in [*orphans, f"{ready.id}.zip", f"{running.id}.json.part"]:
        written_ago(tmp_path / name, timedelta(hours=1))
    written_ago(tmp_path / f"{running.id}.zip.part", timedelta(seconds=1))  # still being written
    removed = await remove_orphan_export_files(
        directory=tmp_path, now=utcnow(), min_age=timedelta(minutes=5)
    )
    assert files_in(tmp_path) == sorted([*owned, f"{running.id}.json.part"])
    assert removed == len(orphans)


async def test_a_running_export_untouched_for_the_min_age_died_with_its_process(
    database: Database, tmp_path: Path
) -> None:
    export = await start(tmp_path)
    for name in (f"{export.id}.zip.part", f"{export.id}.json.part"):
        written_ago(tmp_path / name, timedelta(hours=1))
    removed = await remove_orphan_export_files(
        directory=tmp_path, now=utcnow(), min_age=timedelta(minutes=5)
    )
    assert (removed, files_in(tmp_path)) == (2, [])
    found = await Export.get(export.id)
    assert found is not None and (found.status, found.error) == (ExportStatus.FAILED, "interrupted")


async def test_a_fresh_file_without_a_record_is_left_to_its_writer(
    database: Database, tmp_path: Path
) -> None:
    (tmp_path / "65a000000000000000000000.zip.part").write_bytes(b"being written")
    removed = await remove_orphan_export_files(
        directory=tmp_path, now=utcnow(), min_age=timedelta(minutes=5)
    )
    assert removed == 0
    assert files_in(tmp_path) == ["65a000000000000000000000.zip.part"]


async def test_the_residue_scan_can_list_the_files_of_exports_and_of_no_record(
    database: Database, tmp_path: Path
) -> None:
    live = await start(tmp_path)
    gone = "65a000000000000000000000"
    for name in (f"{live.id}.zip", f"{gone}.zip.part", f"{gone}.json.part"):
        (tmp_path / name).write_bytes(b"x")
    of_gone = files_of_exports(directory=tmp_path, export_ids=[gone])
    assert sorted(p.name for p in of_gone) == [f"{gone}.json.part", f"{gone}.zip.part"]
    unowned = await unowned_export_files(directory=tmp_path)
    assert sorted(p.name for p in unowned) == [f"{gone}.json.part", f"{gone}.zip.part"]
    assert files_of_exports(directory=tmp_path / "missing", export_ids=[gone]) == []


async def test_an_account_purge_removes_its_exports_temporary_files(
    database: Database, tmp_path: Path
) -> None:
    await chat("hello", account_id=ACCOUNT)
    export = await start(tmp_path)
    (tmp_path / f"{export.id}.json.part").write_bytes(b"hello")
    assert await remove_exports({"account_id": ACCOUNT}) == 1
    assert files_in(tmp_path) == []
    assert await Message.find({"account_id": ACCOUNT}).count() == 1  # only exports touched


async def test_an_export_directory_made_by_someone_else_is_made_owner_only(
    database: Database, tmp_path: Path
) -> None:
    directory = tmp_path / "exports"
    directory.mkdir(mode=0o755)
    os.chmod(directory, 0o755)
    await email(account_id=ACCOUNT)
    export = await start(directory)
    await build_export(export, Scope(account_id=ACCOUNT), directory=directory,
                               now=utcnow())  # fmt: skip
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700


async def cli(env: dict[str, str], *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service.cli", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, err.decode()


def all_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.mark.slow
async def test_a_failed_cli_export_leaves_no_file_anywhere(
    database: Database, mongo: EmbeddedMongo, tmp_path: Path
) -> None:
    await an_account_with_a_lost_blob()
    data, out = tmp_path / "data", tmp_path / "out"
    out.mkdir()
    env = serve_env(mongo.uri, database.db.name, data)
    code, err = await cli(env, "export", "--account", ACCOUNT, "--out", str(out / "ann.zip"))
    assert code == 1
    assert err.strip().splitlines()[-1].startswith("support-archive: blob "), err
    assert "Traceback" not in err
    assert all_files(tmp_path) == []
    [record] = await Export.find().to_list()
    assert record.status is ExportStatus.FAILED


@pytest.mark.slow
async def test_a_cli_export_is_moved_to_its_file_and_leaves_none_of_its_own(
    database: Database, mongo: EmbeddedMongo, tmp_path: Path
) -> None:
    await some_mail(2)
    data, out = tmp_path / "data", tmp_path / "out"
    out.mkdir()
    env = serve_env(mongo.uri, database.db.name, data)
    code, err = await cli(env, "export", "--account", ACCOUNT, "--out", str(out / "ann.zip"))
    assert code == 0, err
    assert all_files(tmp_path) == ["out/ann.zip"]
    assert stat.S_IMODE((out / "ann.zip").stat().st_mode) == 0o600
    [record] = await Export.find().to_list()
    assert (record.status, record.path, record.account_id) == (ExportStatus.READY, None, ACCOUNT)


@pytest.mark.slow
async def test_a_cli_export_to_another_file_system_is_owner_only_too(
    database: Database, mongo: EmbeddedMongo, tmp_path: Path
) -> None:
    """/dev/shm is a tmpfs (where it is another file system, the zip is copied there; the copy
    itself is shown in the test below, whatever the machine's file systems)."""
    await some_mail(2)
    out = Path("/dev/shm") / f"{tmp_path.name}-{os.getpid()}.zip"
    env = serve_env(mongo.uri, database.db.name, tmp_path / "data")
    try:
        code, err = await cli(env, "export", "--account", ACCOUNT, "--out", str(out))
        assert code == 0, err
        assert stat.S_IMODE(out.stat().st_mode) == 0o600
        assert not out.with_name(out.name + ".part").exists()
    finally:
        out.unlink(missing_ok=True)


def test_a_zip_moved_across_file_systems_is_owner_only_from_its_first_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, target = tmp_path / "built.zip", tmp_path / "out" / "ann.zip"
    target.parent.mkdir()
    source.write_bytes(b"PK zip bytes")
    real_replace = os.replace
    modes: list[int] = []

    def replace(src: Any, dst: Any) -> None:
        if Path(src) == source:  # as a rename to another file system answers
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        modes.append(stat.S_IMODE(os.stat(src).st_mode))  # the copy, before it takes its name
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    old_umask = os.umask(0o022)
    try:
        _move(source, target)
    finally:
        os.umask(old_umask)
    assert modes == [0o600]
    assert target.read_bytes() == b"PK zip bytes"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in target.parent.iterdir()) == ["ann.zip"]
