"""The one-shot commands, run as a user runs them: keys and purge."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from service.cli import build_parser
from store.accounts import register_account
from store.database import open_database
from store.documents import utcnow
from store.embedded import EmbeddedMongo
from tests.factories import chat


@pytest.fixture
def env(mongo: EmbeddedMongo, tmp_path: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("ARCHIVE_")}
    return base | {
        "ARCHIVE_MONGODB_URI": mongo.uri,
        "ARCHIVE_DB_NAME": f"test_{uuid.uuid4().hex[:12]}",
        "ARCHIVE_DATA_DIR": str(tmp_path),
    }


async def cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service.cli", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.mark.slow
async def test_a_key_is_created_listed_without_its_token_and_revoked(env: dict[str, str]) -> None:
    code, out, _ = await cli(env, "keys", "create", "--name", "maya", "--role", "agent")
    assert code == 0
    token = out.strip().splitlines()[-1]
    assert token.startswith("sa_") and len(token) > 40

    code, out, _ = await cli(env, "keys", "list")
    assert code == 0
    assert "maya" in out and "agent" in out and "live" in out
    assert token not in out and token[:11] in out  # the prefix, never the token

    code, out, _ = await cli(env, "keys", "revoke", "maya")
    assert code == 0
    _, out, _ = await cli(env, "keys", "list")
    assert "revoked" in out


@pytest.mark.slow
async def test_key_mistakes_are_one_clear_line(env: dict[str, str]) -> None:
    await cli(env, "keys", "create", "--name", "maya", "--role", "agent")
    code, _, err = await cli(env, "keys", "create", "--name", "maya", "--role", "agent")
    assert (code, err.strip()) == (1, "support-archive: a key named 'maya' exists already")
    code, _, err = await cli(env, "keys", "revoke", "nobody")
    assert (code, err.strip()) == (
        1, "support-archive: no live key named 'nobody': 'support-archive keys list' shows them",
    )  # fmt: skip
    code, _, err = await cli(env, "keys", "create", "--name", "x", "--role", "boss")
    assert code == 2 and "invalid choice: 'boss'" in err


@pytest.mark.slow
async def test_purge_dry_run_and_a_sweep(env: dict[str, str]) -> None:
    code, out, _ = await cli(env, "purge", "--dry-run")
    assert (code, out.strip()) == (0, "nothing is due or scheduled for purging")
    code, out, _ = await cli(env, "purge")
    assert code == 0 and out.startswith("purged 0 messages")


@pytest.mark.slow
async def test_purge_dry_run_gives_every_stored_message_a_row(env: dict[str, str]) -> None:
    """Before: 12 messages stored, one line ("max_age - 3"), 9 with no date anywhere."""
    now = utcnow()
    async with open_database(env["ARCHIVE_MONGODB_URI"], name=env["ARCHIVE_DB_NAME"]):
        await register_account(account_id="bo", emails=["bo@example.com"], name="Bo")
        for days in (0, 1, 2, 40, 41, 42, 70, 71, 72):
            await chat(f"day {days}", account_id="bo", conversation=f"bo-{days}",
                       at=now - timedelta(days=days))  # fmt: skip
        for n in range(3):
            await chat("very old", conversation=f"old-{n}",
                       at=now - timedelta(days=1095 + n))  # fmt: skip
    code, out, err = await cli(env, "purge", "--dry-run")
    assert code == 0, err
    header, *rows = out.strip().splitlines()
    assert header.split()[:4] == ["DUE", "RULE", "ACCOUNT", "MESSAGES"]
    counts = [re.search(r"\s(\d+)\s+(\d+)\s+\S+$", row) for row in rows]
    assert all(counts), rows
    assert sum(int(c[1]) for c in counts if c) == 12, rows
    assert len(rows) >= 3  # the overdue ones, and the months the others reach the maximum age


@pytest.mark.slow
async def test_an_export_is_written_to_a_file(env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "export.zip"
    async with open_database(env["ARCHIVE_MONGODB_URI"], name=env["ARCHIVE_DB_NAME"]):
        await register_account(account_id="acct-cli", emails=["cli@example.com"], name=None)
    code, out_text, err = await cli(env, "export", "--account", "acct-cli", "--out", str(out))
    assert code == 0, err
    assert "manifest SHA-256" in out_text
    import zipfile

    with zipfile.ZipFile(out) as archive:
        assert {"conversations.json", "README.txt", "manifest.json"} <= set(archive.namelist())
    code, _, err = await cli(env, "export", "--out", str(out))
    assert code == 2 and "--account ID or --hold ID" in err


@pytest.mark.slow
async def test_an_export_of_an_unknown_account_is_refused(
    env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "export.zip"
    code, _, err = await cli(env, "export", "--account", "nobody", "--out", str(out))
    assert (code, err.strip()) == (
        1, "support-archive: no account 'nobody': check the id; GET /api/v1/accounts lists the "
        "accounts",
    )  # fmt: skip
    assert not out.exists()


@pytest.mark.slow
async def test_an_export_refuses_a_target_it_cannot_take_before_building_anything(
    env: dict[str, str], tmp_path: Path
) -> None:
    async with open_database(env["ARCHIVE_MONGODB_URI"], name=env["ARCHIVE_DB_NAME"]) as db:
        await register_account(account_id="acct-cli", emails=["cli@example.com"], name=None)
        kept = tmp_path / "kept.zip"
        kept.write_bytes(b"an earlier export")
        code, _, err = await cli(env, "export", "--account", "acct-cli", "--out", str(kept))
        assert (code, err.strip()) == (
            2,
            f"support-archive: {kept} exists already: choose "
            "another path, or add --force to replace it",
        )
        assert kept.read_bytes() == b"an earlier export"
        missing = tmp_path / "no-such-dir" / "export.zip"
        code, _, err = await cli(env, "export", "--account", "acct-cli", "--out", str(missing))
        assert (code, err.strip()) == (
            2,
            f"support-archive: the directory {missing.parent} does not exist: create it first",
        )
        assert await db.db["exports"].count_documents({}) == 0, "an export was built anyway"
        code, _, err = await cli(env, "export", "--account", "acct-cli", "--out", str(kept),
                                 "--force")  # fmt: skip
        assert code == 0, err
    assert kept.read_bytes()[:2] == b"PK"


def help_of(capsys: pytest.CaptureFixture[str], *command: str) -> str:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args([*command, "--help"])
    assert exited.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines as it likes


def test_the_help_says_where_commands_find_the_archive_and_their_settings(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = help_of(capsys)
    assert "one-shot commands" in text and "running serve" in text
    assert "ARCHIVE_MONGODB_URI" in text and "ARCHIVE_CONFIG" in text
    assert "~/.local/share/support-archive" in text


def test_the_import_help_says_it_refuses_without_a_database(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = help_of(capsys, "import")
    assert "if there is one" not in text
    assert "refuses" in text and "ARCHIVE_SUPPORT_ADDRESSES" in text


def test_the_purge_help_says_it_waits_for_a_sweep_in_progress(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert "waits for it to finish" in help_of(capsys, "purge")


def test_the_verify_purge_help_says_what_an_unknown_id_does(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = help_of(capsys, "verify-purge")
    assert "the archive does not know is refused" in text


@pytest.mark.parametrize(("action", "says"), [("list", "never its token"), ("revoke", "401")])
def test_keys_list_and_revoke_have_descriptions(
    capsys: pytest.CaptureFixture[str], action: str, says: str
) -> None:
    assert says in help_of(capsys, "keys", action)


@pytest.mark.parametrize(
    "argv",
    [["--debug", "keys", "list"], ["keys", "list", "--debug"], ["keys", "--debug", "list"],
     ["purge", "--debug"], ["chatwoot", "backfill", "--source", "d", "--since", "2026-01-01",
                            "--debug"]],
)  # fmt: skip
def test_debug_is_accepted_before_or_after_the_command(argv: list[str]) -> None:
    assert build_parser().parse_args(argv).debug is True


def test_without_debug_there_is_no_debug() -> None:
    assert build_parser().parse_args(["keys", "list"]).debug is False
