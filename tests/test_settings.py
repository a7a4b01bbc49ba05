"""Settings: defaults of SPEC.md, durations, and one clear line for a bad variable."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from service.settings import SettingsError, load_settings, parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("10m", timedelta(minutes=10)),
        ("6h", timedelta(hours=6)),
        ("180d", timedelta(days=180)),
    ],
)
def test_durations_accept_seconds_minutes_hours_and_days(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "10", "1w", "-5m", "m10", "1.5h"])
def test_durations_without_a_known_unit_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_defaults_are_those_of_the_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    assert settings.embedded
    assert settings.db_name == "support_archive"
    assert (settings.http_host, settings.http_port) == ("127.0.0.1", 8080)
    assert (settings.smtp_host, settings.smtp_port) == ("127.0.0.1", 2525)
    assert settings.smtp_max_message_bytes == 26_214_400
    assert settings.smtp_allowed_clients == ["127.0.0.0/8", "::1"]
    assert settings.retention_grace == timedelta(days=180)
    assert settings.retention_max_age == timedelta(days=1095)
    assert settings.purge_interval == timedelta(minutes=10)
    assert settings.audit_max_age == timedelta(days=395)
    assert settings.journal_max_bytes == 1_000_000_000


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1GB", 10**9), ("512MB", 512 * 10**6), ("64KiB", 64 * 1024), ("2 GiB", 2 * 2**30),
     ("5000000", 5_000_000)],
)  # fmt: skip
def test_sizes_accept_units(text: str, expected: int) -> None:
    assert parse_size(text) == expected


def test_variables_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARCHIVE_HTTP_PORT", "9000")
    monkeypatch.setenv("ARCHIVE_PURGE_INTERVAL", "1s")
    monkeypatch.setenv("ARCHIVE_SMTP_ALLOWED_CLIENTS", "10.0.0.0/8, 192.168.1.7")
    monkeypatch.setenv("ARCHIVE_WEBHOOK_SOURCES", "widget:generic:0123456789abcdef")
    settings = load_settings()
    assert settings.http_port == 9000
    assert settings.purge_interval == timedelta(seconds=1)
    assert settings.smtp_allowed_clients == ["10.0.0.0/8", "192.168.1.7"]
    assert settings.webhook_source_table()["widget"][1] == b"0123456789abcdef"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ARCHIVE_HTTP_PORT", "abc"),
        ("ARCHIVE_SMTP_PORT", "70000"),
        ("ARCHIVE_PURGE_INTERVAL", "soon"),
        ("ARCHIVE_RETENTION_GRACE", "200d"),
        ("ARCHIVE_SMTP_ALLOWED_CLIENTS", "not-a-network"),
        ("ARCHIVE_WEBHOOK_SOURCES", "widget:slack:0123456789abcdef"),
        ("ARCHIVE_DB_NAME", "a/b"),
        ("ARCHIVE_JOURNAL_MAX_BYTES", "lots"),
        ("ARCHIVE_JOURNAL_MAX_BYTES", "10kB"),
        ("ARCHIVE_WEBHOOK_FETCH_TIMEOUT", "11m"),
        ("ARCHIVE_WEBHOOK_REFETCH_FOR", "31d"),
    ],
)
def test_a_bad_variable_is_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert variable in message
    assert "\n" not in message


def test_production_refuses_to_start_without_a_secret_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARCHIVE_ENV", "production")
    with pytest.raises(SettingsError, match="ARCHIVE_SECRET_KEY"):
        load_settings()


def test_secret_values_are_not_echoed_in_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARCHIVE_SECRET_KEY", "too-short-secret")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "ARCHIVE_SECRET_KEY" in str(caught.value)
    assert "too-short-secret" not in str(caught.value)


def test_development_generates_a_secret_key_once_into_the_data_dir(tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = load_settings(data_dir=tmp_path)
    first = settings.resolved_secret_key()
    assert len(first) >= 32
    assert settings.resolved_secret_key() == first
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0


def test_fetch_origins_are_normalised_origins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "ARCHIVE_WEBHOOK_FETCH_ORIGINS", "https://Chat.Example.com:443/, http://10.0.0.5:3000"
    )
    settings = load_settings()
    assert settings.webhook_fetch_origins == ["https://chat.example.com", "http://10.0.0.5:3000"]


@pytest.mark.parametrize(
    "value", ["chat.example.com", "ftp://x.example", "https://x.example/files"]
)
def test_a_fetch_origin_that_is_not_an_origin_is_refused(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("ARCHIVE_WEBHOOK_FETCH_ORIGINS", value)
    with pytest.raises(SettingsError, match=r"ARCHIVE_WEBHOOK_FETCH_ORIGINS.*is not an origin"):
        load_settings()


def test_a_source_may_be_marked_trusted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "ARCHIVE_WEBHOOK_SOURCES",
        "desk:chatwoot:0123456789abcdef:trusted,widget:generic:0123456789abcdef",
    )
    specs = {s.name: s for s in load_settings().webhook_source_specs()}
    assert (specs["desk"].trusted, specs["desk"].secret) == (True, b"0123456789abcdef")
    assert specs["widget"].trusted is False


def test_a_sources_chatwoot_api_is_read_from_its_own_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ARCHIVE_WEBHOOK_SOURCES", "help-desk:chatwoot:0123456789abcdef")
    monkeypatch.setenv("ARCHIVE_CHATWOOT_API_URL_HELP_DESK", "https://chat.example.com/")
    monkeypatch.setenv("ARCHIVE_CHATWOOT_API_ACCOUNT_HELP_DESK", "3")
    monkeypatch.setenv("ARCHIVE_CHATWOOT_API_TOKEN_HELP_DESK", "wJ2mYq8rT4nKx6vB3cZ9")
    api = load_settings().chatwoot_api_of("help-desk")
    assert api is not None
    assert (api.url, api.account, api.token) == (
        "https://chat.example.com",
        3,
        "wJ2mYq8rT4nKx6vB3cZ9",
    )


def test_a_missing_chatwoot_api_variable_is_named_and_the_token_never_shown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ARCHIVE_WEBHOOK_SOURCES", "desk:chatwoot:0123456789abcdef")
    monkeypatch.setenv("ARCHIVE_CHATWOOT_API_ACCOUNT_DESK", "three")
    monkeypatch.setenv("ARCHIVE_CHATWOOT_API_TOKEN_DESK", "wJ2mYq8rT4nKx6vB3cZ9")
    with pytest.raises(SettingsError) as error:
        load_settings()
    assert "ARCHIVE_CHATWOOT_API_URL_DESK: Field required" in str(error.value)
    assert "ARCHIVE_CHATWOOT_API_ACCOUNT_DESK" in str(error.value)
    assert "wJ2mYq8rT4nKx6vB3cZ9" not in str(error.value)


def test_a_chatwoot_api_for_no_chatwoot_source_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARCHIVE_CHATWOOT_API_URL_DESK", "https://chat.example.com")
    monkeypatch.setenv("ARCHIVE_CHATWOOT_API_ACCOUNT_DESK", "1")
    monkeypatch.setenv("ARCHIVE_CHATWOOT_API_TOKEN_DESK", "wJ2mYq8rT4nKx6vB3cZ9")
    with pytest.raises(SettingsError, match="ARCHIVE_CHATWOOT_API_URL_DESK: no chatwoot source"):
        load_settings()


def test_the_data_directory_is_a_fixed_place_of_the_user_not_the_working_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("ARCHIVE_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert load_settings().data_dir == tmp_path / "support-archive"
    monkeypatch.delenv("XDG_DATA_HOME")
    assert load_settings().data_dir == Path.home() / ".local/share/support-archive"


@pytest.mark.parametrize("entry", ["not an address", "ann@", "a@b@example.com", "@", "@localhost"])
def test_a_support_address_that_is_not_an_address_or_domain_is_refused(
    monkeypatch: pytest.MonkeyPatch, entry: str
) -> None:
    monkeypatch.setenv("ARCHIVE_SUPPORT_ADDRESSES", f"support@shop.example, {entry}")
    with pytest.raises(SettingsError, match=r"ARCHIVE_SUPPORT_ADDRESSES=.* is not an address"):
        load_settings()


def test_support_addresses_and_domains_are_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "ARCHIVE_SUPPORT_ADDRESSES", "support@shop.example,@shop.example,shop.example"
    )
    assert len(load_settings().support_addresses) == 3


def test_archive_config_is_an_env_file_the_environment_overrides(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "support-archive.env"
    config.write_text("ARCHIVE_SUPPORT_ADDRESSES=@shop.example\nARCHIVE_HTTP_PORT=9000\n")
    monkeypatch.setenv("ARCHIVE_CONFIG", str(config))
    monkeypatch.setenv("ARCHIVE_HTTP_PORT", "9100")
    settings = load_settings()
    assert settings.support_addresses == ["@shop.example"]
    assert settings.http_port == 9100


def test_a_missing_archive_config_is_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ARCHIVE_CONFIG", str(tmp_path / "nowhere.env"))
    with pytest.raises(SettingsError, match=r"ARCHIVE_CONFIG=.*nowhere.env': no such file"):
        load_settings()


def test_a_sources_chatwoot_api_is_read_from_archive_config_the_environment_overriding(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "support-archive.env"
    config.write_text(
        "ARCHIVE_WEBHOOK_SOURCES=help-desk:chatwoot:0123456789abcdef\n"
        "ARCHIVE_CHATWOOT_API_URL_HELP_DESK=https://chat.example.com\n"
        "ARCHIVE_CHATWOOT_API_ACCOUNT_HELP_DESK=3\n"
        "ARCHIVE_CHATWOOT_API_TOKEN_HELP_DESK=token-in-the-file\n"
    )
    monkeypatch.setenv("ARCHIVE_CONFIG", str(config))
    monkeypatch.setenv("ARCHIVE_CHATWOOT_API_TOKEN_HELP_DESK", "token-in-the-environment")
    api = load_settings().chatwoot_api_of("help-desk")
    assert api is not None
    assert (api.url, api.account, api.token) == (
        "https://chat.example.com", 3, "token-in-the-environment",
    )  # fmt: skip
