"""The ``support-archive`` command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from bson import ObjectId
from tqdm import tqdm

from api.params import EMAIL_PATTERN
from ingest.chat.backfill import ChatwootApiError
from ingest.mailbox import MailboxKind
from retention.residue import describe
from search.index import IndexBusy
from service import commands
from service.logs import configure_logging
from service.serve import NoDatabase, PortBusy, Roles, serve
from service.settings import Settings, SettingsError, load_settings
from store.accounts import ACCOUNT_ID_RULE, is_account_id
from store.database import UnusableDatabase
from store.documents import Role
from store.embedded import MongodFailed, MongodNotFound
from store.errors import Conflict, NotFound, is_transient

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
                warn=lambda text: print(f"support-archive: warning: {text}", file=sys.stderr),
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


def _verify_purge(settings: Settings, args: argparse.Namespace) -> int:
    check = asyncio.run(commands.verify_purge(
        settings, account_id=args.account, emails=args.email or [], names=args.name or [],
    ))  # fmt: skip
    records, residue = check.records, check.residue
    if not check.known:
        print(f"the archive knows no account {args.account!r}; scanning only for the addresses "
              "and names given")  # fmt: skip
    elif not records:
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
    return residue.verdict.exit_status


def _erase(settings: Settings, args: argparse.Namespace) -> int:
    erasure = asyncio.run(commands.erase_person(settings, emails=args.email, names=args.name or []))
    others = ", ".join(erasure.accounts) or "none"
    print(f"erasure requested: the person's unlinked content is filed under {erasure.person}; "
          f"accounts with these addresses erased too: {others}")  # fmt: skip
    # The addresses are not printed (a job's output ends up in logs): the ids are.
    for account_id in [erasure.person, *erasure.accounts]:
        print(f"  after the next sweep: support-archive verify-purge --account {account_id} "
              "--email ADDRESS ...")  # fmt: skip
    return 0


def _reindex(settings: Settings, args: argparse.Namespace) -> int:
    with tqdm(unit="msg", desc="rebuilding the search index", leave=False) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        def waiting() -> None:
            bar.set_description("the running serve is rebuilding its search index")
            bar.refresh()

        result = asyncio.run(commands.reindex(settings, progress=progress, waiting=waiting))
    where = "by the running serve" if result.by_serve else "here; the next serve resumes from it"
    print(f"search index rebuilt from {result.messages} messages ({where})")
    return 0


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
    if problem := _unwritable(args.out, force=args.force):
        print(f"support-archive: {problem}", file=sys.stderr)
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


def _unwritable(out: Path, *, force: bool) -> str | None:
    """Why the export cannot go to ``out``, checked before anything is built (None: it can)."""
    if out.is_dir():
        return f"{out} is a directory: give the path of the zip file to write"
    if out.exists() and not force:
        return f"{out} exists already: choose another path, or add --force to replace it"
    if not out.parent.is_dir():
        return f"the directory {out.parent} does not exist: create it first"
    if not os.access(out.parent, os.W_OK):
        return f"the directory {out.parent} is not writable"
    return None


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


def _account_id(text: str) -> str:
    """An id as the API takes it: one the API could not name would be stranded."""
    if not is_account_id(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not an account id: {ACCOUNT_ID_RULE}")
    return text


def _address(text: str) -> str:
    """An email address, as the API takes one."""
    if not re.fullmatch(EMAIL_PATTERN, text.strip()):
        raise argparse.ArgumentTypeError(f"{text!r} is not an email address: name@domain")
    return text.strip().lower()


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
            "and deletes them on time. serve runs the service; the one-shot commands (all the "
            "others) use the running serve's database, found through ARCHIVE_DATA_DIR (default "
            "~/.local/share/support-archive, or $XDG_DATA_HOME/support-archive), or the one "
            "ARCHIVE_MONGODB_URI names, and refuse if there is neither. Configured by ARCHIVE_* "
            "environment variables and the env file ARCHIVE_CONFIG names, read by serve and the "
            "one-shot commands alike (the environment overrides it); see README.md."
        ),
    )
    debug_help = "on an unexpected error, show its traceback"
    parser.add_argument("--debug", action="store_true", help=debug_help)
    # Also after the command (``keys list --debug``). SUPPRESS: a subcommand's default would
    # otherwise overwrite a --debug given before it.
    common = _Parser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug_help)
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(group: argparse._SubParsersAction[_Parser], name: str, **kwargs: Any) -> _Parser:
        return group.add_parser(name, parents=[common], **kwargs)

    serve_cmd = command(
        subcommands,
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

    import_cmd = command(
        subcommands,
        "import",
        help="import an existing mailbox (mbox file or Maildir) into the archive",
        description=(
            "Import every message of an mbox file or a Maildir through the same path as SMTP "
            "(parsing, threading, account linking). Safe to run again: messages already in the "
            "archive are skipped. Uses the running serve's database (or ARCHIVE_MONGODB_URI) "
            "and refuses without one. Mail is filed as SMTP files it only with serve's "
            "ARCHIVE_SUPPORT_ADDRESSES (without any, agents' replies are filed as inbound, with "
            "a warning): give both the same ARCHIVE_CONFIG."
        ),
    )
    import_cmd.add_argument("kind", choices=[k.value for k in MailboxKind], help="mailbox format")
    import_cmd.add_argument("path", type=Path, help="the mbox file or Maildir directory")
    import_cmd.add_argument(
        "--account", metavar="ID", type=_account_id,
        help="link every imported conversation to this account",
    )  # fmt: skip
    import_cmd.add_argument(
        "--create-account", action="store_true",
        help="make the --account if the archive does not know it (else that is refused)",
    )  # fmt: skip
    import_cmd.set_defaults(run=_import)

    keys_cmd = command(subcommands, "keys", help="create, list and revoke API keys")
    keys_sub = keys_cmd.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    create = command(
        keys_sub,
        "create",
        help="create a key and print its token (shown once; only a hash is stored)",
        description="Roles: agent (search, read), platform (accounts, deletions), compliance "
        "(agent + holds, erasure, exports, purge records, forecast), admin (everything).",
    )
    create.add_argument("--name", required=True, type=_key_name,
                        help="a unique name, shown in the audit trail")  # fmt: skip
    create.add_argument("--role", required=True, choices=[r.value for r in Role])
    create.set_defaults(run=_keys_create)
    command(
        keys_sub,
        "list",
        help="list keys (never their tokens)",
        description="Lists every key, live or revoked: its name, role, the first characters of "
        "its token (to tell which one a client holds), when it was created and last used; "
        "never its token: only a hash of it is stored.",
    ).set_defaults(run=_keys_list)
    revoke = command(
        keys_sub,
        "revoke",
        help="revoke a key by name",
        description="Revokes the live key of that name: from now on, a request with its token "
        "is answered 401. It stays listed, as revoked, and the audit trail keeps its name.",
    )
    revoke.add_argument("name", help="the key's name, as 'keys list' shows it")
    revoke.set_defaults(run=_keys_revoke)

    purge = command(
        subcommands,
        "purge",
        help="run one purge sweep now (--dry-run: show what is due when, and what holds block)",
        description="A sweep purges deleted accounts past their deadline and content past the "
        "maximum age, never anything a hold covers. serve runs one every "
        "ARCHIVE_PURGE_INTERVAL; this runs one now, under the same lease: if a sweep is in "
        "progress (serve's, or another purge's), it waits for it to finish, then sweeps.",
    )
    purge.add_argument("--dry-run", action="store_true", help="print the forecast; delete nothing")
    purge.set_defaults(run=_purge)

    verify = command(
        subcommands,
        "verify-purge",
        help="check that nothing of a purged account remains anywhere (the residue scan)",
        description="Prints the account's purge records and searches every collection and "
        "every file under ARCHIVE_DATA_DIR for what identifies it: its id, and the addresses "
        "and names you give (a purged account keeps none). An id the archive does not know is "
        "refused (a purged account keeps its id), unless --email or --name is given: then "
        "those are scanned for. It ends in one word and its exit status: clean 0 (nothing "
        "remains, nothing pending; records kept by design aside), pending 3 (on its way out: "
        "blobs in their quiet period), kept 3 (a hold keeps content), remains 1 (something "
        "should be gone and is not); 1 also when the id is unknown.",
    )
    verify.add_argument("--account", metavar="ID", required=True, type=_account_id,
                        help="the account's id")  # fmt: skip
    verify.add_argument("--email", action="append", metavar="ADDRESS",
                        help="an address the customer used (repeatable)")  # fmt: skip
    verify.add_argument("--name", action="append", metavar="NAME",
                        help="a name the customer used (repeatable)")  # fmt: skip
    verify.set_defaults(run=_verify_purge)

    erase = command(
        subcommands,
        "erase",
        help="erase a person known by address: their accounts and their unlinked content",
        description="For a data subject the archive may know only by address (never "
        "registered, or purged before), as POST /api/v1/erasures: every account that has or "
        "had one of the addresses is erased (again), and their unlinked conversations are "
        "filed under an account of their own, erased too. Everything is due at once (holds "
        "apply); the next sweep purges it (or run 'support-archive purge'). Prints the ids to "
        "check with verify-purge.",
    )
    erase.add_argument("--email", action="append", metavar="ADDRESS", required=True,
                       type=_address, help="an address of the person (repeatable)")  # fmt: skip
    erase.add_argument("--name", action="append", metavar="NAME",
                       help="a name of the person (repeatable)")  # fmt: skip
    erase.set_defaults(run=_erase)

    export = command(
        subcommands,
        "export",
        help="export an account's data (subject access) or a hold's scope (disclosure) as a zip",
        description="Writes the same zip as POST /api/v1/exports: conversations.json, the "
        "original .eml files, attachments, README.txt and manifest.json (SHA-256 of each). "
        "The file is readable by its owner only.",
    )
    export.add_argument("--account", metavar="ID", type=_account_id,
                        help="everything about this account")  # fmt: skip
    export.add_argument("--hold", metavar="ID", help="what this hold covers (a disclosure)")
    export.add_argument("--authority", help="who the disclosure is for (with --hold)")
    export.add_argument("--legal-basis", help="the order or law it answers (with --hold)")
    export.add_argument("--out", type=Path, required=True, help="the zip file to write")
    export.add_argument("--force", action="store_true", help="replace --out if it exists")
    export.set_defaults(run=_export)

    chatwoot = command(subcommands, "chatwoot", help="Chatwoot: fill what its webhooks dropped")
    chatwoot_sub = chatwoot.add_subparsers(dest="chatwoot_command", required=True, metavar="ACTION")
    backfill = command(
        chatwoot_sub,
        "backfill",
        help="pull conversations and messages from Chatwoot's API that the archive lacks",
        description="Chatwoot never retries a webhook: what it sent while the archive was down "
        "is lost. This reads every conversation active since --since from Chatwoot's API (an "
        "administrator's token) and files the messages the archive does not have; attachments "
        "are fetched as for webhooks. Safe to run again: nothing is stored twice. Needs "
        "ARCHIVE_CHATWOOT_API_URL_<NAME>, ..._ACCOUNT_<NAME> and ..._TOKEN_<NAME> for the "
        "source, in the environment or ARCHIVE_CONFIG (see docs/chatwoot.md).",
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

    command(
        subcommands,
        "reindex",
        help="rebuild the search index from MongoDB",
        description="Rebuild the search index from MongoDB, the truth it copies (after a "
        "restore, or when search looks wrong). A running serve keeps its own index: it is "
        "asked to rebuild, and this waits until it has (searches keep answering from the old "
        "index meanwhile). Without one, the index under ARCHIVE_DATA_DIR/search is rebuilt "
        "here, and the next serve follows on from it.",
    ).set_defaults(run=_reindex)
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
    IndexBusy, PortBusy,
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
