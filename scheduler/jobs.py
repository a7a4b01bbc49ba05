"""The scheduled jobs: the purge sweep (under a lease) and daily housekeeping."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import wraps
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from exports.builder import remove_expired_exports, remove_orphan_export_files
from retention import lease
from retention.housekeeping import remove_orphans, retire_search_terms
from retention.rules import RetentionPolicy
from retention.sweep import SweepReport, sweep
from search.index import SearchIndex, forget_gone_indexes
from store.audit import forget_free_text, index_audit_mentions
from store.database import Database
from store.documents import utcnow

log = logging.getLogger("archive.purge")

JOB_RUNS = Counter("archive_job_runs_total", "Scheduled job runs", ["job", "outcome"])
JOB_SECONDS = Histogram("archive_job_seconds", "Scheduled job duration", ["job"])
PURGED = Counter("archive_purged_total", "What purges removed", ["kind"])
LATENESS = Gauge(
    "archive_purge_lateness_seconds",
    "How far past due the most overdue purgeable item was at the last sweep (keep < interval)",
)

SWEEP_LEASE = "purge-sweep"
# An export file untouched this long and owned by no live export is left from a crash.
EXPORT_FILE_AGE = timedelta(minutes=10)

Job = Callable[[], Awaitable[Any]]


def guarded(name: str) -> Callable[[Job], Job]:
    """Log, count and time a job; a failure is reported and never stops the scheduler."""

    def wrap(job: Job) -> Job:
        @wraps(job)
        async def run() -> Any:
            started = time.perf_counter()
            try:
                result = await job()
            except asyncio.CancelledError:
                # Only the service's shutdown cancels a job; APScheduler would log it as a
                # failure, with a traceback, on every Ctrl-C that lands while one runs.
                JOB_RUNS.labels(name, "interrupted").inc()
                log.info("job %s interrupted by the shutdown; it runs again after the next "
                         "start", name)  # fmt: skip
                return None
            except Exception:
                JOB_RUNS.labels(name, "failed").inc()
                log.exception("job %s failed; it runs again at its next time", name)
                return None
            finally:
                JOB_SECONDS.labels(name).observe(time.perf_counter() - started)
            JOB_RUNS.labels(name, "ok").inc()
            return result

        return run

    return wrap


@dataclass
class Jobs:
    """The jobs of one ``serve`` process, sharing its database and clock."""

    database: Database
    policy: RetentionPolicy
    interval: timedelta
    clock: Callable[[], datetime] = utcnow
    # This process's search index, if it serves searches: a purge waits until it no longer
    # finds what was deleted, and housekeeping compacts and reconciles it.
    index: SearchIndex | None = None
    holder: str = field(default_factory=lambda: f"serve-{uuid.uuid4().hex[:12]}")
    # Held while a job runs, so that a shutdown can wait for the job in flight.
    busy: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def purge_sweep(
        self, *, on_batch: Callable[[], object] | None = None
    ) -> SweepReport | None:
        """One sweep, if no other process is sweeping (None then). The lease is held only while
        the sweep runs, renewed between batches, so that ``support-archive purge`` can sweep
        between two of serve's; it expires by itself if this process dies mid-sweep."""
        async with self.busy:
            now = self.clock()
            if not await lease.acquire(name=SWEEP_LEASE, holder=self.holder, now=now, ttl=self.ttl):
                log.debug("another process holds the purge lease")
                return None
            try:
                return await self._sweep(now, on_batch=on_batch or (lambda: None))
            finally:
                await lease.release(name=SWEEP_LEASE, holder=self.holder)

    @property
    def ttl(self) -> timedelta:
        """How long the lease outlives its last renewal: a batch must finish within it."""
        return max(self.interval * 3, timedelta(seconds=30))

    async def _sweep(self, now: datetime, *, on_batch: Callable[[], object]) -> SweepReport:
        async def renew() -> None:
            if not await lease.acquire(
                name=SWEEP_LEASE, holder=self.holder, now=self.clock(), ttl=self.ttl
            ):
                raise LeaseLost(SWEEP_LEASE)
            on_batch()

        report = await sweep(self.database, now=now, policy=self.policy, before_batch=renew,
                             index_synced=self._index_synced)  # fmt: skip
        PURGED.labels("messages").inc(report.messages)
        PURGED.labels("conversations").inc(report.conversations)
        PURGED.labels("blobs").inc(report.blobs)
        PURGED.labels("accounts").inc(report.accounts_purged)
        LATENESS.set(report.lateness_seconds)
        return report

    async def _index_synced(self) -> None:
        if self.index is not None and self.index.ready:
            await self.index.sync()

    async def housekeeping(self) -> None:
        """Orphan blobs and chunks, expired exports, export files no record owns, audit events
        written before their free text was indexed for redaction, and the free text of audit
        events older than ARCHIVE_AUDIT_TEXT_MAX_AGE."""
        async with self.busy:
            removed = await remove_orphans(quiet_period=self.policy.blob_quiet_period)
            now = self.clock()
            expired = await remove_expired_exports(now=now)
            files = 0
            if self.policy.data_dir is not None:
                files = await remove_orphan_export_files(
                    directory=self.policy.data_dir / "exports", now=now, min_age=EXPORT_FILE_AGE
                )
            indexed = await index_audit_mentions()
            aged = await forget_free_text(before=now - self.policy.audit_text_max_age)
            await forget_gone_indexes(now=now)
            retired = await retire_search_terms()
            compacted = repaired = 0
            if self.index is not None and self.index.ready:
                # Deleted documents leave the index files only when their segments are
                # rewritten: within one housekeeping period, as retention promises.
                compacted = await self.index.request("compact")
                repaired = await self.index.request("reconcile")
        if compacted or repaired or retired:
            log.info("housekeeping: search index rewritten with %d messages (it held deleted "
                     "ones), %d days reconciled; search terms removed from %d messages",
                     compacted, repaired, retired)  # fmt: skip
        if removed or expired or files or indexed or aged:
            log.info("housekeeping removed %d orphan blobs/chunks, %d expired exports, %d "
                     "unowned export files; indexed %d audit events, redacted the free text of "
                     "%d", removed, expired, files, indexed, aged)  # fmt: skip

    async def stop(self, *, grace: float = 30.0) -> None:
        """Wait for the job in flight (at most ``grace`` seconds), then give up the lease."""
        try:
            await asyncio.wait_for(self.busy.acquire(), grace)
        except TimeoutError:
            log.warning("a job is still running after %.0fs; stopping anyway", grace)
        await lease.release(name=SWEEP_LEASE, holder=self.holder)


class LeaseLost(RuntimeError):
    """Another process took the lease (this one stalled past its expiry): stop sweeping."""
