"""The ``support-archive`` command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Sequence

from service.logs import configure_logging
from service.serve import Roles, serve
from service.settings import Settings, SettingsError, load_settings
from store.embedded import MongodFailed, MongodNotFound

log = logging.getLogger("archive.service")

EXIT_BAD_SETTINGS = 2
EXIT_FAILED = 1

Command = Callable[[Settings, argparse.Namespace], int]


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    roles = Roles(http=not args.no_http)
    asyncio.run(serve(settings, roles))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="support-archive",
        description=(
            "Support Archive keeps support emails and chats, searchable and linked to accounts, "
            "and deletes them on time. Configured by ARCHIVE_* environment variables "
            "(see README.md)."
        ),
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve_cmd = commands.add_parser(
        "serve",
        help="run the service (HTTP API and webhooks, SMTP, scheduler) until Ctrl-C",
        description="Run the service. With ARCHIVE_MONGODB_URI unset it starts its own mongod.",
    )
    serve_cmd.add_argument("--no-http", action="store_true", help="do not serve the HTTP API")
    serve_cmd.set_defaults(run=_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"support-archive: {exc}", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    configure_logging(level=settings.log_level, fmt=settings.log_format)
    run: Command = args.run
    try:
        return run(settings, args)
    except (MongodNotFound, MongodFailed) as exc:
        print(f"support-archive: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
