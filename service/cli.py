"""The ``support-archive`` command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

from bson import ObjectId

from ingest.chat.backfill import ChatwootApiError
from ingest.mailbox import MailboxKind
from service import commands
from service.logs import configure_logging
from service.serve import NoDatabase, Roles, serve
from service.settings import Settings, SettingsError, load_settings
from store.database import UnusableDatabase
from store.documents import Role
from store.embedded import MongodFailed, MongodNotFound
from store.errors import Conflict, NotFound, is_transient
from store.residue import describe

log = logging.getLogger("archive.service")

EXIT_BAD_SETTINGS = 2
EXIT_BAD_USAGE = 2
EXIT_FAILED = 1

Command = Callable[[Settings, argparse.Namespace], int]


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    roles = Roles(http=not args.no_http, smtp=not args.no_smtp, scheduler=not args.no_scheduler)
    asyncio.run(serve(settings, roles))
    return 0


def _import(settings: Settings, args: argparse.Namespace) -> int:
    try:
        report = asyncio.run(
            commands.import_mailbox(
                settings,
                kind=MailboxKind(args.kind),
                path=args.path,
                account_id=args.account,
                create_account=args.create_account,
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


def _keys_create(settings: Settings, args: argparse.Namespace) -> int:
    key, token = asyncio.run(commands.create_key(settings, name=args.name, role=Role(args.role)))
    print(f"created key {key.name!r} with role {key.role}. Its token, shown only this once:")
    print(token)
    return 0


def _keys_list(settings: Settings, args: argparse.Namespace) -> int:
    found = asyncio.run(commands.list_keys(settings))
    print(f"{'NAME':<24} {'ROLE':<11} {'TOKEN STARTS':<13} {'CREATED':<17} {'LAST USED':<17} STATE")
    for key in found:
        state = f"revoked {_when(key.revoked_at)}" if key.revoked_at else "live"
        print(
            f"{key.name:<24} {key.role:<11} {key.prefix:<13} {_when(key.created_at):<17} "
            f"{_when(key.last_used_at):<17} {state}"
        )
    return 0


def _keys_revoke(settings: Settings, args: argparse.Namespace) -> int:
    key = asyncio.run(commands.revoke_key(settings, name=args.name))
    print(f"revoked key {key.name!r}; requests with it are refused from now on")
    return 0


def _purge(settings: Settings, args: argparse.Namespace) -> int:
    if args.dry_run:
        items = asyncio.run(commands.forecast(settings))
        if not items:
            print("nothing is due or scheduled for purging")
            return 0
        print(f"{'DUE':<17} {'RULE':<17} {'ACCOUNT':<24} {'MESSAGES':>9} {'HELD':>6}  BLOCKED BY")
        for item in items:
            print(
                f"{_when(item.due_at):<17} {item.rule:<17} {item.account_id or '-':<24} "
                f"{item.messages:>9} {item.held_messages:>6}  {', '.join(item.blocked_by) or '-'}"
            )
        return 0
    report = asyncio.run(commands.sweep_once(settings))
    if report is None:
        print("support-archive: a sweep is still running in another process (serve's log "
              "shows its [purge] lines); run purge again once it has finished",
              file=sys.stderr)  # fmt: skip
        return EXIT_FAILED
    print(
        f"purged {report.messages} messages, {report.conversations} conversations, "
        f"{report.blobs} blobs ({report.bytes} bytes); {report.accounts_purged} accounts done, "
        f"{report.accounts_blocked} blocked by holds; {report.seconds:.2f}s"
    )
    return 0


# verify-purge: content remains, but a hold or the blob quiet period explains it.
EXIT_HELD = 3


def _verify_purge(settings: Settings, args: argparse.Namespace) -> int:
    records, residue = asyncio.run(commands.verify_purge(
        settings, account_id=args.account, emails=args.email or [], names=args.name or [],
    ))  # fmt: skip
    if not records:
        print(f"no purge record names account {args.account!r}")
    for r in records:
        state = f"done {_when(r.done_at)}" if r.done_at else "in progress"
        pending = f", {len(r.pending_blobs)} blobs pending" if r.pending_blobs else ""
        print(
            f"{r.rule.value} purge due {_when(r.due_at)}, {state}: {r.counts.messages} messages, "
            f"{r.counts.conversations} conversations, {r.counts.blobs} blobs "
            f"({r.counts.bytes} bytes){pending}"
        )
    print(describe(residue))
    for line in residue.lines():
        print(f"  {line}")
    if not residue.clean:
        return EXIT_FAILED
    return EXIT_HELD if residue.content_remains else 0


def _export(settings: Settings, args: argparse.Namespace) -> int:
    if (args.account is None) == (args.hold is None):
        print("support-archive: give --account ID or --hold ID", file=sys.stderr)
        return EXIT_BAD_USAGE
    if args.hold is not None and not ObjectId.is_valid(args.hold):
        print(f"support-archive: {args.hold!r} is not a hold id (24 hexadecimal digits, as "
              "GET /api/v1/holds lists them)", file=sys.stderr)  # fmt: skip
        return EXIT_BAD_USAGE
    if args.hold and not (args.authority and args.legal_basis):
        print("support-archive: a disclosure (--hold) needs --authority and --legal-basis",
              file=sys.stderr)  # fmt: skip
        return EXIT_BAD_USAGE
    try:
        written = asyncio.run(commands.export(
            settings, out=args.out, account_id=args.account, hold_id=args.hold,
            authority=args.authority, legal_basis=args.legal_basis,
        ))  # fmt: skip
    except asyncio.CancelledError:  # SIGTERM
        print("support-archive: export interrupted; nothing was written", file=sys.stderr)
        return 143
    except OSError as exc:
        print(f"support-archive: cannot write {args.out}: {exc.strerror}", file=sys.stderr)
        return EXIT_FAILED
    print(f"wrote {args.out}: {written.size} bytes; "
          f"manifest SHA-256 {written.manifest_sha256}")  # fmt: skip
    return 0


def _backfill(settings: Settings, args: argparse.Namespace) -> int:
    try:
        commands.chatwoot_endpoint(settings, args.source)  # before anything starts
        report = asyncio.run(
            commands.chatwoot_backfill(settings, source=args.source, since=args.since)
        )
    except (commands.BadSource, ChatwootApiError) as exc:
        print(f"support-archive: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(
        f"{report.conversations} conversations active since {args.since:%Y-%m-%d %H:%M} UTC, "
        f"{report.messages} messages: {report.stored} stored, {report.duplicates} already in "
        f"the archive; {report.not_fetched} attachments kept as metadata only"
    )
    return 0


def _since(text: str) -> datetime:
    """``YYYY-MM-DD`` or an ISO 8601 time; UTC unless it says otherwise."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date like 2026-11-24 or a time like 2026-11-24T09:00"
        ) from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _key_name(text: str) -> str:
    if not text.strip() or text != text.strip() or len(text) > 100:
        raise argparse.ArgumentTypeError(
            "a key needs a name of 1 to 100 characters, without surrounding spaces"
        )
    return text


def _when(at: datetime | None) -> str:
    return at.strftime("%Y-%m-%d %H:%M") if at else "-"


class _Parser(argparse.ArgumentParser):
    """Usage mistakes as one line, like every other error (the usage is one --help away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="support-archive",
        description=(
            "Support Archive keeps support emails and chats, searchable and linked to accounts, "
            "and deletes them on time. Configured by ARCHIVE_* environment variables "
            "(see README.md)."
        ),
    )
    parser.add_argument(
        "--debug", action="store_true", help="on an unexpected error, show its traceback"
    )
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve_cmd = subcommands.add_parser(
        "serve",
        help="run the service (HTTP API and webhooks, SMTP, scheduler) until Ctrl-C",
        description="Run the service. With ARCHIVE_MONGODB_URI unset it starts its own mongod.",
    )
    serve_cmd.add_argument("--no-http", action="store_true", help="do not serve the HTTP API")
    serve_cmd.add_argument("--no-smtp", action="store_true", help="do not accept mail over SMTP")
    serve_cmd.add_argument(
        "--no-scheduler", action="store_true", help="do not run purge sweeps (another process does)"
    )
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
    import_cmd.add_argument(
        "--create-account", action="store_true",
        help="make the --account if the archive does not know it (else that is refused)",
    )  # fmt: skip
    import_cmd.set_defaults(run=_import)

    keys_cmd = subcommands.add_parser("keys", help="create, list and revoke API keys")
    keys_sub = keys_cmd.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    create = keys_sub.add_parser(
        "create",
        help="create a key and print its token (shown once; only a hash is stored)",
        description="Roles: agent (search, read), platform (accounts, deletions), compliance "
        "(agent + holds, erasure, exports, purge records, forecast), admin (everything).",
    )
    create.add_argument("--name", required=True, type=_key_name,
                        help="a unique name, shown in the audit trail")  # fmt: skip
    create.add_argument("--role", required=True, choices=[r.value for r in Role])
    create.set_defaults(run=_keys_create)
    keys_sub.add_parser("list", help="list keys (never their tokens)").set_defaults(run=_keys_list)
    revoke = keys_sub.add_parser("revoke", help="revoke a key by name")
    revoke.add_argument("name")
    revoke.set_defaults(run=_keys_revoke)

    purge = subcommands.add_parser(
        "purge",
        help="run one purge sweep now (--dry-run: show what is due when, and what holds block)",
        description="A sweep purges deleted accounts past their deadline and content past the "
        "maximum age, never anything a hold covers. serve runs one every "
        "ARCHIVE_PURGE_INTERVAL; this runs one now, under the same lease.",
    )
    purge.add_argument("--dry-run", action="store_true", help="print the forecast; delete nothing")
    purge.set_defaults(run=_purge)

    verify = subcommands.add_parser(
        "verify-purge",
        help="check that nothing of a purged account remains anywhere (the residue scan)",
        description="Prints the account's purge records and searches every collection and "
        "every file under ARCHIVE_DATA_DIR for what identifies it: its id, and the addresses "
        "and names you give (a purged account keeps none). Exit status: 0 nothing remains "
        "(records kept by design aside), 3 content remains that a hold or the blob quiet "
        "period explains, 1 something remains that should not.",
    )
    verify.add_argument("--account", metavar="ID", required=True, help="the account's id")
    verify.add_argument("--email", action="append", metavar="ADDRESS",
                        help="an address the customer used (repeatable)")  # fmt: skip
    verify.add_argument("--name", action="append", metavar="NAME",
                        help="a name the customer used (repeatable)")  # fmt: skip
    verify.set_defaults(run=_verify_purge)

    export = subcommands.add_parser(
        "export",
        help="export an account's data (subject access) or a hold's scope (disclosure) as a zip",
        description="Writes the same zip as POST /api/v1/exports: conversations.json, the "
        "original .eml files, attachments, README.txt and manifest.json (SHA-256 of each).",
    )
    export.add_argument("--account", metavar="ID", help="everything about this account")
    export.add_argument("--hold", metavar="ID", help="what this hold covers (a disclosure)")
    export.add_argument("--authority", help="who the disclosure is for (with --hold)")
    export.add_argument("--legal-basis", help="the order or law it answers (with --hold)")
    export.add_argument("--out", type=Path, required=True, help="the zip file to write")
    export.set_defaults(run=_export)

    chatwoot = subcommands.add_parser("chatwoot", help="Chatwoot: fill what its webhooks dropped")
    chatwoot_sub = chatwoot.add_subparsers(dest="chatwoot_command", required=True, metavar="ACTION")
    backfill = chatwoot_sub.add_parser(
        "backfill",
        help="pull conversations and messages from Chatwoot's API that the archive lacks",
        description="Chatwoot never retries a webhook: what it sent while the archive was down "
        "is lost. This reads every conversation active since --since from Chatwoot's API (an "
        "administrator's token) and files the messages the archive does not have; attachments "
        "are fetched as for webhooks. Safe to run again: nothing is stored twice. Needs "
        "ARCHIVE_CHATWOOT_API_URL_<NAME>, ..._ACCOUNT_<NAME> and ..._TOKEN_<NAME> for the "
        "source (see docs/chatwoot.md).",
    )
    backfill.add_argument(
        "--source",
        required=True,
        metavar="NAME",
        help="a chatwoot source of ARCHIVE_WEBHOOK_SOURCES",
    )
    backfill.add_argument(
        "--since", required=True, type=_since, metavar="DATE",
        help="from when: 2026-11-24, or 2026-11-24T09:00 (UTC unless an offset is given); "
        "take it a little before the archive stopped receiving",
    )  # fmt: skip
    backfill.set_defaults(run=_backfill)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"support-archive: {exc}", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    # One-shot commands speak through their output; only serve narrates what it does.
    quiet = args.command != "serve" and "ARCHIVE_LOG_LEVEL" not in os.environ
    configure_logging(level="WARNING" if quiet else settings.log_level, fmt=settings.log_format)
    run: Command = args.run
    try:
        return run(settings, args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if args.debug:
            raise
        print(f"support-archive: {one_line(exc)}", file=sys.stderr)
        return EXIT_FAILED


# Errors whose message is written to be shown as it is: what is wrong and what to do.
_SAYS_WHAT_TO_DO = (
    MongodNotFound, MongodFailed, NoDatabase, UnusableDatabase, NotFound, Conflict, ValueError,
)  # fmt: skip


def one_line(exc: Exception) -> str:
    """What to tell the operator about ``exc``, on one line and without a traceback."""
    if isinstance(exc, _SAYS_WHAT_TO_DO):
        text = str(exc)
    elif is_transient(exc):
        text = "the database did not answer within ARCHIVE_DB_TIMEOUT; try again when it is back"
    else:
        text = (
            f"unexpected error ({type(exc).__name__}); "
            "run again with --debug for the traceback, and report it"
        )
    return " ".join(text.split())


if __name__ == "__main__":
    sys.exit(main())
