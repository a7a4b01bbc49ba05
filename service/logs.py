"""Log set-up: one line per event with a subsystem prefix (``[smtp]``, ``[api]``, ``[purge]``),
as text for a terminal or JSON lines for a log pipeline.

Logs carry ids, counts, codes and durations, never personal data: logs are kept and shipped
outside the archive's retention. So the HTTP access log writes no query strings (search text,
addresses), and a traceback is written without exception messages (a message may quote the
address or header it failed on); the frames and the exception's type say where and what.
"""

from __future__ import annotations

import errno
import json
import logging
import sys
import traceback
from datetime import UTC, datetime
from types import TracebackType

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]

# Attributes every LogRecord has; anything else was passed with ``extra=`` and is kept.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


def subsystem(record: logging.LogRecord) -> str:
    return record.name.removeprefix("archive.").split(".")[0]


def _code(exc: BaseException) -> str:
    """What identifies the error without quoting data: an errno name, a numeric code."""
    number = getattr(exc, "errno", None)
    if isinstance(number, int) and number in errno.errorcode:
        return f" [{errno.errorcode[number]}]"
    code = getattr(exc, "code", None) or getattr(exc, "status", None)
    return f" [code {code}]" if isinstance(code, int) and not isinstance(code, bool) else ""


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and those it was raised from or during, oldest first."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )
    return chain[::-1]


def safe_traceback(exc: BaseException) -> str:
    """A traceback with the frames and the exception types, without their messages."""
    parts = []
    for item in _chain(exc):
        frames = "".join(traceback.format_tb(item.__traceback__))
        parts.append(
            f"Traceback (most recent call last):\n{frames}"
            f"{type(item).__module__}.{type(item).__qualname__}{_code(item)} (message not logged)"
        )
    return "\n\nwhich led to:\n\n".join(parts)


class SafeFormatter(logging.Formatter):
    def formatException(self, ei: ExcInfo) -> str:
        return safe_traceback(ei[1]) if ei[1] is not None else ""


class AccessLogger(AbstractAccessLogger):
    """One line per request: method, path without its query, status, size, seconds. A path
    that matched no route is not written (it is whatever the client sent)."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        route = request.match_info.route if hasattr(request, "match_info") else None
        path = request.rel_url.raw_path if route is not None and route.resource else "-"
        self.logger.info(
            "%s %s %d %d %.3fs", request.method, path, response.status, response.body_length, time
        )


class TextFormatter(SafeFormatter):
    """One readable line; the ``extra=`` fields go to JSON logs only."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
        line = f"{when}Z {record.levelname:<7} [{subsystem(record)}] {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(SafeFormatter):
    def format(self, record: logging.LogRecord) -> str:
        event = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "subsystem": subsystem(record),
            "msg": record.getMessage(),
        }
        event.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            event["exc"] = self.formatException(record.exc_info)
        return json.dumps(event, default=str)


def configure_logging(*, level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Third-party chatter stays at WARNING unless asked for.
    for noisy in ("pymongo", "apscheduler", "mail.log", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
