"""A parse that kills its own process on a marked message, as a crash in a C parser or the
kernel's OOM killer would: run in the real parsing pool (the spawned worker imports it)."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

from ingest import parsing
from ingest.mime import SupportSide
from store.messages import NewEmail

MARK = b"X-Test-Poison: kills the parser"
_parse_many = parsing._parse_many  # the real one, before a test patches it


def parse_or_die(
    items: Sequence[parsing.ToParse], support: SupportSide, source: str, budget: float | None
) -> list[NewEmail]:
    if any(MARK in item.raw for item in items):
        os._exit(70)
    return _parse_many(items, support, source, budget)


def parse_or_hang(
    items: Sequence[parsing.ToParse], support: SupportSide, source: str, budget: float | None
) -> list[NewEmail]:
    """Stuck where no CPU timer reaches (asleep, as in a blocking call of a C library)."""
    if any(MARK in item.raw for item in items):
        time.sleep(3600)
    return _parse_many(items, support, source, budget)
