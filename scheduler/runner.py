"""The APScheduler (AsyncIOScheduler) on the service's event loop, started and stopped in order."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from scheduler.jobs import Jobs, guarded

log = logging.getLogger("archive.scheduler")

HOUSEKEEPING_EVERY = timedelta(days=1)


@asynccontextmanager
async def scheduler(jobs: Jobs) -> AsyncIterator[AsyncIOScheduler]:
    """Run the purge sweep every interval and housekeeping daily, both once at start (a
    service restarted more often than daily must still reach its orphans)."""
    runner = AsyncIOScheduler(timezone="UTC")
    runner.add_job(
        guarded("purge_sweep")(jobs.purge_sweep), "interval",
        seconds=jobs.interval.total_seconds(), id="purge_sweep", max_instances=1,
        coalesce=True, next_run_time=jobs.clock(),
    )  # fmt: skip
    runner.add_job(
        guarded("housekeeping")(jobs.housekeeping), "interval",
        seconds=HOUSEKEEPING_EVERY.total_seconds(), id="housekeeping", max_instances=1,
        coalesce=True, next_run_time=jobs.clock(),
    )  # fmt: skip
    runner.start()
    log.info("scheduler started: purge sweep every %s", jobs.interval)
    try:
        yield runner
    finally:
        runner.shutdown(wait=False)
        await jobs.stop()
        log.info("scheduler stopped")
