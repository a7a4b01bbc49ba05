"""Exports: everything about one account (subject access), or what a hold covers (disclosure
to an authority), as a zip streamed to disk with a manifest of SHA-256 sums."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import shutil
import stat
import time
import unicodedata
import zipfile
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any, NamedTuple

from beanie import PydanticObjectId

from store.blobs import iter_blob
from store.documents import (
    Account,
    Conversation,
    Disclosure,
    Export,
    ExportStatus,
    Hold,
    Message,
    SpoolEntry,
    iso,
)
from store.errors import Conflict, NotFound, StoreError
from store.paging import Key, Page, keyset_page

log = logging.getLogger("archive.export")

# Deliveries acknowledged before an export was asked for are filed before it is written: they
# normally are within seconds (one that cannot be filed is filed raw-only after its attempts).
FILING_WAIT = timedelta(minutes=2)
FILING_POLL_SECONDS = 0.2

README = """This archive holds the support conversations {scope}, exported on {when}.

account.json        the account as the archive knows it: its id, emails, name, status and
                    dates (when the export covers an account)
conversations.json  every conversation and its messages: times (UTC, ISO 8601), authors,
                    text, HTML, and the list of each message's attachments
eml/                the original bytes of every email, exactly as received (.eml files open
                    in any mail program)
attachments/        every attachment, under the name its sender gave it (made safe)
manifest.json       the SHA-256 and size of every file above; the export's own fingerprint is
                    the SHA-256 of manifest.json

Check a file: sha256sum eml/<conversation>/<message>.eml  (compare with manifest.json)
"""


@dataclass(frozen=True)
class Scope:
    """What an export covers: one account, or the scope of one hold."""

    account_id: str | None = None
    conversation_id: PydanticObjectId | None = None

    def describe(self) -> str:
        if self.account_id:
            return f"of account {self.account_id}"
        return f"of conversation {self.conversation_id}"


async def list_exports(*, account_id: str | None, limit: int, after: Key | None) -> Page[Export]:
    """Exports, newest first (those not yet expired: expired ones are deleted with their files)."""
    query: dict[str, Any] = {} if account_id is None else {"account_id": account_id}
    return await keyset_page(Export, query, time_field="created_at", limit=limit, after=after)


async def scope_of_hold(hold_id: PydanticObjectId) -> tuple[Hold, Scope]:
    hold = await Hold.get(hold_id)
    if hold is None:
        raise NotFound(f"no hold {hold_id}")
    return hold, Scope(account_id=hold.account_id, conversation_id=hold.conversation_id)


async def conversations_in(scope: Scope) -> AsyncIterator[Conversation]:
    query: dict[str, Any] = (
        {"account_id": scope.account_id} if scope.account_id else {"_id": scope.conversation_id}
    )
    async for conversation in Conversation.find(query).sort("+first_message_at"):
        yield conversation


async def count_messages(scope: Scope) -> int:
    if scope.account_id:
        return await Message.find({"account_id": scope.account_id}).count()
    return await Message.find({"conversation_id": scope.conversation_id}).count()


def safe_name(name: str | None, *, fallback: str, limit: int = 120) -> str:
    """One path segment that cannot leave its folder: no separators, no '..', no control
    characters, not empty, not too long (the extension is kept)."""
    text = unicodedata.normalize("NFC", name or "")
    text = "".join(c for c in text if unicodedata.category(c)[0] != "C")
    text = text.replace("/", "_").replace("\\", "_").replace(":", "_")
    text = text.strip().lstrip(".").strip() or fallback
    if len(text) > limit:
        stem, dot, ext = text.rpartition(".")
        text = (stem[: limit - len(ext) - 1] + dot + ext) if dot and len(ext) < 12 else text[:limit]
    return text


class _Hashing:
    """A writable file that hashes and counts what goes through it."""

    def __init__(self, target: IO[bytes]) -> None:
        self.target = target
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.target.write(data)
        self.sha256.update(data)
        self.size += len(data)


@dataclass
class Written:
    manifest_sha256: str
    size: int
    files: int


async def filed_up_to(
    moment: datetime, *, within: timedelta, on_waiting: Callable[[], object] = lambda: None
) -> int:
    """Wait until every delivery acknowledged up to ``moment`` has left the spool (filed), at
    most ``within``: an export covers what the archive acknowledged before it was asked for.
    ``on_waiting`` is called once if it has to wait. Returns how many were still waiting
    (0: all filed)."""
    deadline = time.monotonic() + within.total_seconds()
    before = {"received_at": {"$lte": moment}}
    spool = SpoolEntry.get_pymongo_collection()
    # Polled for one entry (the oldest come first): a backlog is not counted five times a second.
    waited = False
    while await spool.find_one(before, {"_id": 1}) is not None:
        if time.monotonic() >= deadline:
            return await spool.count_documents(before)
        if not waited:
            on_waiting()
            waited = True
        await asyncio.sleep(FILING_POLL_SECONDS)
    return 0


async def write_export(
    path: Path,
    scope: Scope,
    *,
    now: datetime,
    on_message: Callable[[], object] = lambda: None,
    unfiled: int = 0,
) -> Written:
    """Write the zip at ``path`` entry by entry: nothing larger than one blob chunk or one
    conversation's JSON is ever held in memory.

    The zip is written as ``<path>.part`` and renamed to ``path`` only when complete, so a
    file under the final name is always a whole export. Whatever happens (an error, the task
    cancelled), no temporary file stays behind: they hold the conversations' text. Every file
    is created readable by its owner only.
    """
    temporary = temporary_paths(path)
    try:
        written = await _write_zip(path, temporary, scope, now=now, on_message=on_message,
                                   unfiled=unfiled)  # fmt: skip
        os.replace(temporary.zip, path)
    finally:
        for leftover in temporary:
            leftover.unlink(missing_ok=True)
    return written


class TemporaryPaths(NamedTuple):
    zip: Path
    json: Path


def temporary_paths(path: Path) -> TemporaryPaths:
    """The files an export being written to ``path`` uses: ``<id>.zip.part`` and
    ``<id>.json.part`` beside ``<id>.zip`` (the id is the part before the first dot)."""
    return TemporaryPaths(path.with_name(path.name + ".part"), path.with_suffix(".json.part"))


def _create_private(path: Path) -> IO[bytes]:
    """A new file only its owner may read (it holds personal data); replaces a stale one."""
    path.unlink(missing_ok=True)
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb")


def private_directory(directory: Path) -> None:
    """The exports directory, only its owner may list or enter it."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    if stat.S_IMODE(directory.stat().st_mode) != 0o700:
        directory.chmod(0o700)


async def _write_zip(
    path: Path,
    temporary: TemporaryPaths,
    scope: Scope,
    *,
    now: datetime,
    on_message: Callable[[], object],
    unfiled: int,
) -> Written:
    manifest: dict[str, dict[str, object]] = {}
    path.parent.mkdir(parents=True, exist_ok=True)
    with (
        _create_private(temporary.zip) as target,
        zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as archive,
    ):

        async def entry(name: str, chunks: AsyncIterator[bytes], deflate: bool = False) -> None:
            # Blobs are stored as they are (attachments are mostly compressed already, and
            # deflating megabytes would stall the event loop); text is deflated.
            info = zipfile.ZipInfo(name, date_time=now.timetuple()[:6])
            info.compress_type = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
            with archive.open(info, "w", force_zip64=True) as raw:
                sink = _Hashing(raw)
                async for chunk in chunks:
                    sink.write(chunk)
            manifest[name] = {"sha256": sink.sha256.hexdigest(), "size": sink.size}

        async def conversations_json() -> AsyncIterator[bytes]:
            yield b'{"conversations": [\n'
            first = True
            async for conversation in conversations_in(scope):
                messages = Message.find(Message.conversation_id == conversation.id).sort("+sent_at")
                documents = []
                async for message in messages:
                    _raise_if_cancelled()
                    documents.append(_message_json(message))
                    on_message()
                    await _files_of(message, entry)
                item = {**_conversation_json(conversation), "messages": documents}
                yield (b"" if first else b",\n") + json.dumps(item, ensure_ascii=False).encode()
                first = False
            yield b"\n]}\n"

        # conversations.json streams while the .eml and attachment entries of each message are
        # written; zipfile allows one open entry at a time, so the JSON goes to a spool first.
        with _create_private(temporary.json) as out:
            async for piece in conversations_json():
                out.write(piece)
        await entry("conversations.json", _file_chunks(temporary.json), deflate=True)
        temporary.json.unlink()
        if scope.account_id is not None:
            account = await Account.get(scope.account_id)
            if account is not None:
                await entry("account.json", _once(_account_json(account)), deflate=True)
        readme = README.format(scope=scope.describe(), when=now.isoformat()).encode()
        await entry("README.txt", _once(readme))
        summary: dict[str, object] = {"created_at": now.isoformat(), "scope": scope.describe(),
                                      "files": manifest}  # fmt: skip
        if unfiled:  # said, not hidden: run the export again once they are filed
            summary["deliveries_not_yet_filed"] = unfiled
        body = json.dumps(summary, indent=1, sort_keys=True).encode()
        archive.writestr("manifest.json", body)
    size = temporary.zip.stat().st_size
    return Written(hashlib.sha256(body).hexdigest(), size, len(manifest) + 1)


def _raise_if_cancelled() -> None:
    """Stop at the next message once the task was asked to stop: on Python 3.11,
    ``asyncio.wait_for`` (which pymongo awaits) returns the result and swallows a cancellation
    that lands as a reply arrives, but the task still counts the request."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def _files_of(message: Message, entry: Callable[..., Any]) -> None:
    folder = f"{message.conversation_id}"
    if message.raw is not None:
        await entry(f"eml/{folder}/{message.id}.eml", iter_blob(message.raw.sha256))
    for n, attachment in enumerate(message.attachments):
        name = safe_name(attachment.filename, fallback=f"attachment-{n}")
        await entry(f"attachments/{message.id}/{n}-{name}", iter_blob(attachment.sha256))


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _file_chunks(path: Path, size: int = 1 << 20) -> AsyncIterator[bytes]:
    with path.open("rb") as source:
        while chunk := source.read(size):
            yield chunk


def _account_json(account: Account) -> bytes:
    fields = ("emails", "name", "status", "created_at", "updated_at", "deleted_at",
              "erasure_requested_at", "purge_due_at", "purged_at")  # fmt: skip
    found = account.model_dump(mode="json", include=set(fields))
    return json.dumps({"account_id": account.id, **{f: found.get(f) for f in fields}},
                      ensure_ascii=False, indent=1).encode()  # fmt: skip


def _conversation_json(c: Conversation) -> dict[str, Any]:
    return {
        "id": str(c.id), "channel": c.channel.value, "account_id": c.account_id,
        "source": c.source, "external_id": c.external_id, "subject": c.subject,
        "participants": c.participants, "first_message_at": iso(c.first_message_at),
        "last_message_at": iso(c.last_message_at),
    }  # fmt: skip


def _message_json(m: Message) -> dict[str, Any]:
    return {
        "id": str(m.id), "channel": m.channel.value, "direction": m.direction.value,
        "sent_at": iso(m.sent_at), "collected_at": iso(m.collected_at),
        "author": m.author.model_dump(), "to": [a.model_dump() for a in m.to],
        "cc": [a.model_dump() for a in m.cc], "subject": m.subject, "text": m.text,
        "html": m.html, "message_id_header": m.message_id_header, "parse_error": m.parse_error,
        "eml": f"eml/{m.conversation_id}/{m.id}.eml" if m.raw else None,
        "attachments": [
            {"filename": a.filename, "content_type": a.content_type, "size": a.size,
             "sha256": a.sha256,
             "file": f"attachments/{m.id}/{n}-{safe_name(a.filename, fallback=f'attachment-{n}')}"}
            for n, a in enumerate(m.attachments)
        ],
        "history": [{"text": v.text, "replaced_at": iso(v.replaced_at)} for v in m.history],
    }  # fmt: skip


# --- export records and the disclosure register ---------------------------------------------


async def start_export(
    *,
    scope: Scope,
    account_id: str | None,
    hold_id: PydanticObjectId | None,
    created_by: str,
    now: datetime,
    max_age: timedelta,
    directory: Path | None = None,
) -> Export:
    """The export's record (running); the caller builds the file with ``build_export``.

    The record names the directory its files go to, so that they are removed with it even when
    the export never finished (its temporary files are named after its id). A purged account
    has nothing left to export: an export of it would only be a new place where its id lives,
    so it is refused."""
    if scope.account_id is not None:
        account = await Account.get(scope.account_id)
        if account is None:
            raise NotFound(f"no account {scope.account_id!r}")
        if account.purged_at is not None:
            raise Conflict(f"account {scope.account_id!r} was purged; nothing of it is left")
    accounts, conversations = await subjects_of(scope)
    export = Export(account_id=account_id or scope.account_id, hold_id=hold_id,
                    created_by=created_by, created_at=now, expires_at=now + max_age,
                    directory=str(directory) if directory else None,
                    account_ids=accounts, conversation_ids=conversations)  # fmt: skip
    await export.insert()
    return export


async def subjects_of(scope: Scope) -> tuple[list[str], list[PydanticObjectId]]:
    """Whose data an export of ``scope`` holds: the account, or the conversation and the
    account it is linked to."""
    if scope.account_id is not None:
        return [scope.account_id], []
    assert scope.conversation_id is not None
    conversation = await Conversation.get(scope.conversation_id)
    if conversation is None:
        # Purged (its hold ended): an export of it would hold nothing, and outlive it.
        raise NotFound(f"conversation {scope.conversation_id} was purged; nothing of it is left")
    account = conversation.account_id
    return ([account] if account else []), [scope.conversation_id]


async def build_export(
    export: Export,
    scope: Scope,
    *,
    directory: Path,
    now: datetime,
    on_message: Callable[[], object] = lambda: None,
) -> Export:
    """Write the export's zip as ``<directory>/<id>.zip`` and mark the record ready; on any
    failure or cancellation the files are gone and the record says ``failed``."""
    path = await _write_for(export, scope, directory=directory, now=now, on_message=on_message)
    try:
        return await _ready(export, path=path)
    except BaseException:
        path.unlink(missing_ok=True)
        await _mark_failed(export, error="interrupted")
        raise


async def export_to_file(
    export: Export,
    scope: Scope,
    *,
    out: Path,
    directory: Path,
    now: datetime,
    on_message: Callable[[], object] = lambda: None,
) -> Export:
    """The command line's export: built in the exports directory like any other (so what a
    killed run leaves there is found and removed), then moved to ``out``. The record stays as
    the trace of who exported what, without a file of ours to manage."""
    path = await _write_for(export, scope, directory=directory, now=now, on_message=on_message)
    try:
        await asyncio.to_thread(_move, path, out)
    finally:
        path.unlink(missing_ok=True)
    return await _ready(export, path=None)


def _move(source: Path, target: Path) -> None:
    """Move a finished zip to where the operator asked; across file systems through a
    temporary name beside ``target``, so that ``target`` is never half a zip."""
    try:
        os.replace(source, target)
        return
    except OSError:
        pass  # another file system (EXDEV), or the target's directory refuses a rename
    partial = target.with_name(target.name + ".part")
    # Owner-only from its creation, as in the exports directory: a copy made with the umask's
    # mode (0644) would be readable by everyone while it is written, and after the rename.
    # A stale one from a killed run may have another mode, and O_CREAT keeps an existing mode.
    partial.unlink(missing_ok=True)
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as copy, source.open("rb") as original:
            shutil.copyfileobj(original, copy)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


async def _write_for(
    export: Export,
    scope: Scope,
    *,
    directory: Path,
    now: datetime,
    on_message: Callable[[], object],
) -> Path:
    assert export.id is not None
    private_directory(directory)
    if export.directory is None:
        await _set(export, directory=str(directory))
    path = export_path(directory, export.id)
    try:
        unfiled = await filed_up_to(now, within=FILING_WAIT)
        if unfiled:
            log.warning("export %s: %d deliveries acknowledged before it are not filed yet; "
                        "it says so in its manifest", export.id, unfiled)  # fmt: skip
        written = await write_export(path, scope, now=now, on_message=on_message,
                                     unfiled=unfiled)  # fmt: skip
    except BaseException as exc:
        path.unlink(missing_ok=True)
        error = "interrupted" if isinstance(exc, asyncio.CancelledError) else type(exc).__name__
        if isinstance(exc, (asyncio.CancelledError, StoreError)):  # expected: no traceback
            log.warning("export %s failed (%s); its files are removed", export.id, error)
        else:
            log.exception("export %s failed; its files are removed", export.id)
        await _mark_failed(export, error=error)
        raise
    export.size, export.manifest_sha256 = written.size, written.manifest_sha256
    log.info("export %s written: %d files, %d bytes", export.id, written.files, written.size)
    return path


async def _mark_failed(export: Export, *, error: str) -> None:
    """Best effort, shielded: the task may be cancelled again (shutdown), or the database be
    gone; the files are removed already, and a record left running owns none after a while."""
    try:
        await asyncio.shield(_set(export, status=ExportStatus.FAILED, error=error, path=None))
    except (Exception, asyncio.CancelledError):
        log.warning("export %s: could not mark it failed", export.id)


async def _ready(export: Export, *, path: Path | None) -> Export:
    await _set(export, status=ExportStatus.READY, path=str(path) if path else None,
               size=export.size, manifest_sha256=export.manifest_sha256)  # fmt: skip
    await Disclosure.get_pymongo_collection().update_many(
        {"export_id": export.id}, {"$set": {"manifest_sha256": export.manifest_sha256}}
    )
    found = await Export.get(export.id)
    assert found is not None
    return found


async def _set(export: Export, **fields: Any) -> None:
    values = {k: v.value if isinstance(v, ExportStatus) else v for k, v in fields.items()}
    await Export.get_pymongo_collection().update_one({"_id": export.id}, {"$set": values})


async def register_disclosure(
    *,
    export: Export,
    hold: Hold,
    authority: str,
    legal_basis: str,
    disclosed_by: str,
    now: datetime,
) -> Disclosure:
    assert export.id is not None and hold.id is not None
    disclosure = Disclosure(export_id=export.id, hold_id=hold.id, case_ref=hold.case_ref,
                            authority=authority, legal_basis=legal_basis,
                            disclosed_by=disclosed_by, disclosed_at=now)  # fmt: skip
    await disclosure.insert()
    return disclosure


async def get_export(export_id: PydanticObjectId) -> Export:
    export = await Export.get(export_id)
    if export is None:
        raise NotFound(f"no export {export_id}")
    return export


async def remove_exports(query: dict[str, Any]) -> int:
    """Delete the files and records of the exports matching ``query``: the finished zip and,
    by the naming scheme of the record's id, any temporary file of an export that never
    finished (files first: a crash in between leaves a record to try again)."""
    removed = 0
    async for export in Export.find(query):
        assert export.id is not None
        if export.path:
            Path(export.path).unlink(missing_ok=True)  # noqa: ASYNC240 - a local file
        if export.directory:
            for path in files_of_exports(directory=Path(export.directory), export_ids=[export.id]):
                path.unlink(missing_ok=True)
        await export.delete()
        removed += 1
    return removed


async def remove_expired_exports(*, now: datetime) -> int:
    return await remove_exports({"expires_at": {"$lte": now}})


# --- files in the exports directory ---------------------------------------------------------

# ``<export id>.zip``, ``<export id>.zip.part``, ``<export id>.json.part``: the id is the name
# up to the first dot.
_EXPORT_FILE = re.compile(r"^(?P<id>[0-9a-f]{24})\.")


def export_path(directory: Path, export_id: PydanticObjectId | str) -> Path:
    return directory / f"{export_id}.zip"


def _owner_id(path: Path) -> str | None:
    match = _EXPORT_FILE.match(path.name)
    return match["id"] if match else None


def _files_in(directory: Path) -> list[Path]:
    try:
        return [p for p in directory.iterdir() if p.is_file() or p.is_symlink()]
    except FileNotFoundError:
        return []


def files_of_exports(
    *, directory: Path, export_ids: Iterable[PydanticObjectId | str]
) -> list[Path]:
    """The files in ``directory`` that belong to these exports, finished or temporary."""
    wanted = {str(i) for i in export_ids}
    return [p for p in _files_in(directory) if _owner_id(p) in wanted]


async def unowned_export_files(*, directory: Path) -> list[Path]:
    """The files in ``directory`` that no export record names by its id (whatever their
    age): what a crash, or a removal that failed halfway, left behind."""
    files = _files_in(directory)
    ids = {i for p in files if (i := _owner_id(p)) is not None}
    live = await _existing_ids(ids)
    return [p for p in files if _owner_id(p) not in live]


async def remove_orphan_export_files(*, directory: Path, now: datetime, min_age: timedelta) -> int:
    """Remove every file of ``directory`` that no live export owns, once untouched for
    ``min_age`` (a younger one may be an export being started right now). A ready export owns
    its zip; a running one owns its files while one of them is still being written to, and is
    marked failed (``interrupted``) once none has been for ``min_age``: its process died."""
    files = _files_in(directory)
    records = {
        str(e.id): e
        async for e in Export.find({"_id": {"$in": _object_ids(files)}})
    }  # fmt: skip
    removed = 0
    for path, export in _stale(files, records, now=now, min_age=min_age):
        path.unlink(missing_ok=True)
        removed += 1
        if export is not None and export.status is ExportStatus.RUNNING:
            await Export.get_pymongo_collection().update_one(
                {"_id": export.id, "status": ExportStatus.RUNNING.value},
                {"$set": {"status": ExportStatus.FAILED.value, "error": "interrupted"}},
            )
    if removed:
        log.info("removed %d export files that no export owns", removed)
    return removed


def _stale(
    files: list[Path], records: dict[str, Export], *, now: datetime, min_age: timedelta
) -> list[tuple[Path, Export | None]]:
    cutoff = (now - min_age).timestamp()
    touched: dict[str | None, float] = {}
    for path in files:
        touched[_owner_id(path)] = max(touched.get(_owner_id(path), 0.0), _mtime(path))
    stale = []
    for path in files:
        owner = _owner_id(path)
        export = records.get(owner) if owner else None
        if _mtime(path) >= cutoff or _owned(path, export, last_write=touched[owner], cutoff=cutoff):
            continue
        stale.append((path, export))
    return stale


def _owned(path: Path, export: Export | None, *, last_write: float, cutoff: float) -> bool:
    if export is None:
        return False
    if export.status is ExportStatus.READY:
        return export.path is not None and Path(export.path).name == path.name
    if export.status is ExportStatus.RUNNING:
        return last_write >= cutoff
    return False


def _mtime(path: Path) -> float:
    try:
        return path.lstat().st_mtime
    except FileNotFoundError:
        return float("inf")  # gone already: nothing to do


def _object_ids(files: list[Path]) -> list[PydanticObjectId]:
    return [PydanticObjectId(i) for p in files if (i := _owner_id(p)) is not None]


async def _existing_ids(ids: set[str]) -> set[str]:
    found = Export.get_pymongo_collection().find(
        {"_id": {"$in": [PydanticObjectId(i) for i in ids]}}, {"_id": 1}
    )
    return {str(d["_id"]) async for d in found}
