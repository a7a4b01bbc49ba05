"""The ``support-archive`` command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from ingest.mailbox import MailboxKind
from service import commands
from service.logs import configure_logging
from service.serve import Roles, serve
from service.settings import Settings, SettingsError, load_settings
from store.embedded import MongodFailed, MongodNotFound

log = logging.getLogger("archive.service")

EXIT_BAD_SETTINGS = 2
EXIT_FAILED = 1

Command = Callable[[Settings, argparse.Namespace], int]


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    roles = Roles(http=not args.no_http, smtp=not args.no_smtp)
    asyncio.run(serve(settings, roles))
    return 0


def _import(settings: Settings, args: argparse.Namespace) -> int:
    try:
        report = asyncio.run(
            commands.import_mailbox(
                settings, kind=MailboxKind(args.kind), path=args.path, account_id=args.account
            )
        )
    except (FileNotFoundError, ValueError) as exc:
        print(f"support-archive: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(
        f"{report.total} messages read: {report.stored} stored, {report.duplicates} already in "
        f"the archive, {report.unparsed} kept raw with a parse error"
    )
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
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve_cmd = subcommands.add_parser(
        "serve",
        help="run the service (HTTP API and webhooks, SMTP, scheduler) until Ctrl-C",
        description="Run the service. With ARCHIVE_MONGODB_URI unset it starts its own mongod.",
    )
    serve_cmd.add_argument("--no-http", action="store_true", help="do not serve the HTTP API")
    serve_cmd.add_argument("--no-smtp", action="store_true", help="do not accept mail over SMTP")
    serve_cmd.set_defaults(run=_serve)

    import_cmd = subcommands.add_parser(
        "import",
        help="import an existing mailbox (mbox file or Maildir) into the archive",
        description=(
            "Import every message of an mbox file or a Maildir through the same path as SMTP "
            "(parsing, threading, account linking). Safe to run again: messages already in the "
            "archive are skipped. Uses the running service's embedded MongoDB if there is one."
        ),
    )
    import_cmd.add_argument("kind", choices=[k.value for k in MailboxKind], help="mailbox format")
    import_cmd.add_argument("path", type=Path, help="the mbox file or Maildir directory")
    import_cmd.add_argument(
        "--account", metavar="ID", help="link every imported conversation to this account"
    )
    import_cmd.set_defaults(run=_import)
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
