"""The command line as an operator meets it: the one-shot commands find the archive that serve
keeps (from any directory) or refuse, purge works while serve sweeps, and every mistake is one
line saying what to do."""

from __future__ import annotations

import asyncio
import getpass
import mailbox
import os
import re
import sys
import uuid
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from bson import ObjectId

from store.database import open_database
from store.documents import Account, AccountStatus, AuditEvent, Message, utcnow
from store.embedded import EmbeddedMongo, find_mongod
from tests.factories import email
from tests.helpers import eventually, free_port, mongod_pids_using
from tests.mail import make_email

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-m", "service.cli"]
REPOSITORY = Path(__file__).resolve().parent.parent
START_TIMEOUT = 90.0


def clean_environment(**variables: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARCHIVE_")}
    # The working directory is not the repository: the package is found through PYTHONPATH.
    env["PYTHONPATH"] = str(REPOSITORY)
    return env | variables


async def run(env: dict[str, str], *args: str, cwd: Path | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *CLI, *args, env=env, cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@dataclass
class Serve:
    env: dict[str, str]
    base: str
    process: asyncio.subprocess.Process

    async def api(self, method: str, path: str, token: str, **kwargs: object) -> tuple[int, object]:
        headers = {"Authorization": f"Bearer {token}"}
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, self.base + path, headers=headers, **kwargs) as response,  # type: ignore[arg-type]
        ):
            body = await response.json() if response.content_type.endswith("json") else None
            return response.status, body


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Serve]:
    """serve on its embedded mongod, its data in the default place of a user whose
    XDG_DATA_HOME is under tmp_path, started from a directory of its own."""
    home = tmp_path / "serve-cwd"
    home.mkdir()
    port = free_port()
    env = clean_environment(
        XDG_DATA_HOME=str(tmp_path / "xdg"), ARCHIVE_HTTP_PORT=str(port),
        ARCHIVE_SMTP_PORT=str(free_port()), ARCHIVE_PURGE_INTERVAL="1s",
    )  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        *CLI, "serve", env=env, cwd=home,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    running = Serve(env=env, base=f"http://127.0.0.1:{port}", process=process)

    async def ready() -> bool:
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.get(running.base + "/readyz") as response,
            ):
                return response.status == 200
        except aiohttp.ClientError:
            return False

    try:
        await eventually(ready, timeout=START_TIMEOUT)
        yield running
    finally:
        process.terminate()
        await process.wait()


async def test_each_command_run_from_another_directory_uses_the_running_serves_database(
    serve: Serve, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = serve.env

    code, out, err = await run(env, "keys", "create", "--name", "ops", "--role", "admin",
                               cwd=elsewhere)  # fmt: skip
    assert code == 0, err
    token = out.strip().splitlines()[-1]
    assert (await serve.api("GET", "/api/v1/audit", token))[0] == 200  # serve knows the key

    code, out, _ = await run(env, "keys", "list", cwd=elsewhere)
    assert code == 0 and "admin" in out and "ops" in out  # serve's first key is listed

    status, _ = await serve.api("PUT", "/api/v1/accounts/acct-ann", token,
                                json={"emails": ["ann@example.com"]})  # fmt: skip
    assert status == 201
    box = mailbox.mbox(elsewhere / "ann.mbox")
    box.add(make_email(message_id="<imported@example.com>"))
    box.close()
    code, _, err = await run(env, "import", "mbox", "ann.mbox", "--account", "acct-ann",
                             cwd=elsewhere)  # fmt: skip
    assert code == 0, err
    status, account = await serve.api("GET", "/api/v1/accounts/acct-ann", token)
    assert status == 200 and isinstance(account, dict)
    assert account["counts"]["messages"] == 1

    code, _, err = await run(env, "export", "--account", "acct-ann", "--out", "ann.zip",
                             cwd=elsewhere)  # fmt: skip
    assert code == 0, err
    with zipfile.ZipFile(elsewhere / "ann.zip") as archive:
        assert [n for n in archive.namelist() if n.endswith(".eml")]  # not an empty export

    code, out, err = await run(env, "purge", "--dry-run", cwd=elsewhere)
    assert code == 0, err
    code, out, err = await run(env, "verify-purge", "--account", "acct-ann", cwd=elsewhere)
    assert "no purge record names account 'acct-ann'" in out, err

    code, _, err = await run(env, "keys", "revoke", "ops", cwd=elsewhere)
    assert code == 0, err
    assert (await serve.api("GET", "/api/v1/audit", token))[0] == 401
    assert not (elsewhere / "var").exists()


async def test_purge_succeeds_ten_times_in_a_row_while_serve_sweeps_every_second(
    serve: Serve,
) -> None:
    for _ in range(10):
        code, out, err = await run(serve.env, "purge")
        assert code == 0, err
        assert out.startswith("purged ")


async def test_a_second_serve_on_the_same_data_directory_says_it_is_in_use(serve: Serve) -> None:
    env = serve.env | {"ARCHIVE_HTTP_PORT": str(free_port()), "ARCHIVE_SMTP_PORT": str(free_port())}
    code, _, err = await run(env, "serve")
    assert code == 1
    [line] = err.strip().splitlines()
    assert "is in use by another serve" in line and "ARCHIVE_DATA_DIR" in line


@pytest.mark.parametrize(
    "command",
    [["keys", "list"], ["purge", "--dry-run"], ["export", "--account", "a", "--out", "a.zip"]],
)
async def test_without_serve_or_uri_a_command_refuses_with_one_line_and_starts_nothing(
    tmp_path: Path, command: list[str]
) -> None:
    env = clean_environment(ARCHIVE_DATA_DIR=str(tmp_path / "data"))
    code, _, err = await run(env, *command, cwd=tmp_path)
    assert code == 1
    [line] = err.strip().splitlines()
    assert "no running serve" in line and "ARCHIVE_MONGODB_URI" in line
    assert not (tmp_path / "data").exists()
    assert not (tmp_path / "a.zip").exists()
    assert mongod_pids_using(tmp_path) == []


@pytest.fixture
def env(mongo: EmbeddedMongo, tmp_path: Path) -> dict[str, str]:
    return clean_environment(
        ARCHIVE_MONGODB_URI=mongo.uri, ARCHIVE_DB_NAME=f"test_{uuid.uuid4().hex[:12]}",
        ARCHIVE_DATA_DIR=str(tmp_path),
    )  # fmt: skip


async def test_an_unreachable_database_is_one_line_and_debug_shows_the_traceback(
    tmp_path: Path,
) -> None:
    env = clean_environment(
        ARCHIVE_MONGODB_URI=f"mongodb://127.0.0.1:{free_port()}/?replicaSet=rs0",
        ARCHIVE_DB_TIMEOUT="1s", ARCHIVE_DATA_DIR=str(tmp_path),
    )  # fmt: skip
    code, _, err = await run(env, "keys", "list")
    assert code == 1
    assert err.strip().splitlines() == [
        "support-archive: MongoDB did not answer (ARCHIVE_MONGODB_URI): check its address and "
        "that it runs"
    ]
    code, _, err = await run(env, "--debug", "keys", "list")
    assert code == 1 and "Traceback" in err


async def test_a_standalone_mongod_is_refused_with_one_line(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "db").mkdir()
    mongod = await asyncio.create_subprocess_exec(
        str(find_mongod()), "--dbpath", str(tmp_path / "db"), "--port", str(port),
        "--bind_ip", "127.0.0.1", "--logpath", str(tmp_path / "mongod.log"),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        env = clean_environment(
            ARCHIVE_MONGODB_URI=f"mongodb://127.0.0.1:{port}/", ARCHIVE_DB_TIMEOUT="20s",
            ARCHIVE_DATA_DIR=str(tmp_path),
        )  # fmt: skip
        code, _, err = await run(env, "keys", "list")
    finally:
        mongod.terminate()
        await mongod.wait()
    assert code == 1
    [line] = err.strip().splitlines()
    assert "standalone server" in line and "--replSet" in line


async def test_an_export_of_a_malformed_or_unknown_hold_is_one_line(
    env: dict[str, str], tmp_path: Path
) -> None:
    args = ["--authority", "Court", "--legal-basis", "Order 1", "--out", str(tmp_path / "h.zip")]
    code, _, err = await run(env, "export", "--hold", "nothex", *args)
    assert code == 2
    assert err.strip().splitlines() == [
        "support-archive: 'nothex' is not a hold id (24 hexadecimal digits, as GET "
        "/api/v1/holds lists them)"
    ]
    unknown = str(ObjectId())
    code, _, err = await run(env, "export", "--hold", unknown, *args)
    assert (code, err.strip()) == (
        1, f"support-archive: no hold {unknown}: check the id; GET /api/v1/holds lists the holds",
    )  # fmt: skip
    assert not (tmp_path / "h.zip").exists()


@pytest.mark.parametrize(
    "command",
    [
        ["import", "mbox", "in.mbox", "--create-account"],
        ["export", "--out", "x.zip"],
        ["verify-purge"],
    ],
)
async def test_a_malformed_account_id_is_refused_with_one_line_naming_the_option(
    env: dict[str, str], tmp_path: Path, command: list[str]
) -> None:
    box = mailbox.mbox(tmp_path / "in.mbox")
    box.add(make_email())
    box.close()
    code, _, err = await run(env, *command, "--account", "bad id!", cwd=tmp_path)
    assert code == 2
    [line] = err.strip().splitlines()
    assert "argument --account: 'bad id!' is not an account id" in line
    async with open_database(env["ARCHIVE_MONGODB_URI"], name=env["ARCHIVE_DB_NAME"]):
        assert await Account.find().count() == 0
    assert not (tmp_path / "x.zip").exists()


async def test_an_id_the_api_accepts_is_accepted_by_the_command_line(
    env: dict[str, str], tmp_path: Path
) -> None:
    box = mailbox.mbox(tmp_path / "in.mbox")
    box.add(make_email())
    box.close()
    code, _, err = await run(env, "import", "mbox", str(tmp_path / "in.mbox"),
                             "--account", "Org.7:user+1@x-y_z", "--create-account")  # fmt: skip
    assert code == 0, err
    async with open_database(env["ARCHIVE_MONGODB_URI"], name=env["ARCHIVE_DB_NAME"]):
        assert await Account.get("Org.7:user+1@x-y_z") is not None


async def test_verify_purge_of_an_account_the_archive_never_knew_is_refused(
    env: dict[str, str],
) -> None:
    code, out, err = await run(env, "verify-purge", "--account", "nobody")
    assert (code, out) == (1, "")
    [line] = err.strip().splitlines()
    assert line.startswith("support-archive: no account 'nobody' in the archive")
    assert "check the id" in line and "GET /api/v1/accounts" in line and "--email" in line


async def test_verify_purge_of_an_unknown_id_scans_for_the_addresses_and_names_given(
    env: dict[str, str],
) -> None:
    code, out, err = await run(env, "verify-purge", "--account", "nobody",
                               "--email", "ann@example.com")  # fmt: skip
    assert code == 0, err
    assert out.splitlines()[0] == (
        "the archive knows no account 'nobody'; scanning only for the addresses and names given"
    )
    assert ": clean: nothing of it remains and nothing is pending" in out


async def test_verify_purge_of_a_purged_account_reads_its_tombstone(env: dict[str, str]) -> None:
    async with open_database(env["ARCHIVE_MONGODB_URI"], name=env["ARCHIVE_DB_NAME"]):
        now = utcnow()
        await Account(id="acct-gone", status=AccountStatus.DELETED, deleted_at=now,
                      purged_at=now).insert()  # fmt: skip
    code, out, err = await run(env, "verify-purge", "--account", "acct-gone")
    assert code == 0, err
    assert "no purge record names account 'acct-gone'" in out


def an_mbox(path: Path) -> Path:
    box = mailbox.mbox(path)
    box.add(make_email())
    box.close()
    return path


async def test_import_without_support_addresses_warns_that_replies_are_filed_as_inbound(
    env: dict[str, str], tmp_path: Path
) -> None:
    code, _, err = await run(env, "import", "mbox", str(an_mbox(tmp_path / "in.mbox")))
    assert code == 0, err
    [warning] = [line for line in err.splitlines() if "warning" in line]
    assert warning.startswith("support-archive: warning: ARCHIVE_SUPPORT_ADDRESSES is not set")
    assert "inbound" in warning and "ARCHIVE_CONFIG" in warning


async def test_import_with_support_addresses_gives_no_warning(
    env: dict[str, str], tmp_path: Path
) -> None:
    config = tmp_path / "archive.env"
    config.write_text("ARCHIVE_SUPPORT_ADDRESSES=@shop.example\n")
    code, _, err = await run(env | {"ARCHIVE_CONFIG": str(config)},
                             "import", "mbox", str(an_mbox(tmp_path / "in.mbox")))  # fmt: skip
    assert code == 0, err
    assert "warning" not in err


async def test_a_key_needs_a_name(env: dict[str, str]) -> None:
    code, _, err = await run(env, "keys", "create", "--name", "", "--role", "agent")
    assert code == 2
    [line] = err.strip().splitlines()
    assert "--name" in line and "1 to 100 characters" in line


async def test_importing_into_an_unknown_account_needs_create_account(
    env: dict[str, str], tmp_path: Path
) -> None:
    box = mailbox.mbox(tmp_path / "in.mbox")
    box.add(make_email())
    box.close()
    code, out, err = await run(env, "import", "mbox", str(tmp_path / "in.mbox"),
                               "--account", "acct-nobody")  # fmt: skip
    assert (code, err.strip()) == (
        1, "support-archive: no account 'acct-nobody': check the id (GET /api/v1/accounts lists "
        "the accounts), or add --create-account to import into a new account",
    )  # fmt: skip
    code, out, err = await run(env, "import", "mbox", str(tmp_path / "in.mbox"),
                               "--account", "acct-nobody", "--create-account")  # fmt: skip
    assert code == 0, err
    assert "1 stored" in out


async def test_cli_actions_are_audited_as_the_operator(env: dict[str, str], tmp_path: Path) -> None:
    box = mailbox.mbox(tmp_path / "in.mbox")
    box.add(make_email())
    box.close()
    steps = [
        ["keys", "create", "--name", "maya", "--role", "agent"],
        ["keys", "revoke", "maya"],
        ["import", "mbox", str(tmp_path / "in.mbox"), "--account", "acct-9", "--create-account"],
        ["export", "--account", "acct-9", "--out", str(tmp_path / "e.zip")],
        ["purge"],
    ]
    for step in steps:
        code, _, err = await run(env, *step)
        assert code == 0, err
    async with open_database(env["ARCHIVE_MONGODB_URI"], name=env["ARCHIVE_DB_NAME"]):
        events = await AuditEvent.find().sort("+at").to_list()
    assert [e.action for e in events] == [
        "key.create", "key.revoke", "mailbox.import", "export.create", "purge.sweep",
    ]  # fmt: skip
    assert {e.actor for e in events} == {f"cli:{getpass.getuser()}"}


async def test_erase_by_address_files_and_erases_a_persons_unlinked_content(
    env: dict[str, str],
) -> None:
    async with open_database(env["ARCHIVE_MONGODB_URI"], name=env["ARCHIVE_DB_NAME"]):
        mail = await email(sender="Quinn Quuxley <quinn@example.net>", subject="my case")
    env = env | {"ARCHIVE_BLOB_QUIET_PERIOD": "0s"}
    code, out, err = await run(env, "erase", "--email", "Quinn@example.net",
                               "--name", "Quinn Quuxley")  # fmt: skip
    assert code == 0, err
    person = re.search(r"filed under (person-[0-9a-f]+)", out)
    assert person is not None, out
    assert f"support-archive verify-purge --account {person[1]} --email ADDRESS" in out
    assert "quinn" not in out.lower()  # the addresses being erased are not printed
    code, _, err = await run(env, "purge")
    assert code == 0, err
    code, out, _ = await run(env, "verify-purge", "--account", person[1],
                             "--email", "quinn@example.net", "--name", "Quinn Quuxley")  # fmt: skip
    assert code == 0, out
    assert ": clean: nothing of it remains and nothing is pending" in out
    async with open_database(env["ARCHIVE_MONGODB_URI"], name=env["ARCHIVE_DB_NAME"]):
        assert await Message.get(mail.id) is None


async def test_erase_refuses_what_is_not_an_address_in_one_line(env: dict[str, str]) -> None:
    code, out, err = await run(env, "erase", "--email", "not an address")
    assert (code, out) == (2, "")
    assert "'not an address' is not an email address: name@domain" in err
