"""The one settings object of the service: read once from ``ARCHIVE_*`` variables and validated."""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NamedTuple

from pydantic import (
    BaseModel,
    BeforeValidator,
    ByteSize,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from yarl import URL

ENV_PREFIX = "ARCHIVE_"

_ADDRESS_LOCAL = re.compile(r"[^\s@<>()\[\],;:\"]{1,64}")
_DOMAIN = re.compile(r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}", re.I)
_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h|d)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

# The privacy policy promises deletion "after a period of up to 6 months" after account deletion.
MAX_RETENTION_GRACE = timedelta(days=183)

# An env file (``ARCHIVE_*=value`` lines) read by ``serve`` and the one-shot commands alike, so
# that both file mail and find the database the same way; the environment overrides it.
CONFIG_VARIABLE = f"{ENV_PREFIX}CONFIG"
APP_NAME = "support-archive"


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/support-archive`` (``~/.local/share/support-archive``): a fixed place,
    so that a command run from any directory finds the archive ``serve`` keeps there."""
    base = os.environ.get("XDG_DATA_HOME") or ""
    root = Path(base) if Path(base).is_absolute() else Path.home() / ".local" / "share"
    return root / APP_NAME


def parse_duration(value: Any) -> timedelta:
    """``90s``, ``10m``, ``6h``, ``180d`` (or a timedelta, or plain seconds) to a timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a duration like 90s, 10m, 6h or 180d")
    return timedelta(seconds=int(match[1]) * _UNIT_SECONDS[match[2]])


def parse_size(value: Any) -> int:
    """``1GB``, ``512MB``, ``64KiB`` or a number of bytes, to bytes (KB, MB, GB are powers of
    1000; KiB, MiB, GiB powers of 1024)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    try:
        return int(TypeAdapter(ByteSize).validate_python(str(value).strip()))
    except ValidationError:
        raise ValueError(f"{value!r} is not a size like 1GB, 512MB or 64KiB") from None


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
Size = Annotated[int, BeforeValidator(parse_size)]
CsvList = Annotated[list[str], NoDecode, BeforeValidator(_split_csv)]


# What each bounded duration bounds, for the error that refuses it.
_BOUNDED = {
    "parse_budget": "the CPU one message's parse may take",
    "webhook_fetch_timeout": "one attachment's fetch, all attempts",
}


class Environment(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


class WebhookSource(StrEnum):
    GENERIC = "generic"
    CHATWOOT = "chatwoot"


class WebhookSourceSpec(NamedTuple):
    """One entry of ``ARCHIVE_WEBHOOK_SOURCES``: ``name:format:secret[:trusted]``."""

    name: str
    format: WebhookSource
    secret: bytes
    # Chatwoot: the contact's identifier names the account even when Chatwoot did not verify it
    # (identity validation off), because only the company's own systems set it.
    trusted: bool


def parse_webhook_source(entry: str) -> WebhookSourceSpec:
    name, _, rest = entry.partition(":")
    fmt, _, secret = rest.partition(":")
    secret, trusted = (secret[: -len(":trusted")], True) if secret.endswith(":trusted") else (
        secret, False)  # fmt: skip
    return WebhookSourceSpec(name, WebhookSource(fmt), secret.encode(), trusted)


CHATWOOT_API_PREFIX = f"{ENV_PREFIX}CHATWOOT_API_"
_CHATWOOT_API_PARTS = {"URL": "url", "ACCOUNT": "account", "TOKEN": "token"}


def env_suffix(source: str) -> str:
    """The ``<NAME>`` of a source in per-source variables: ``help-desk`` -> ``HELP_DESK``."""
    return source.upper().replace("-", "_")


class ChatwootApi(BaseModel):
    """Where ``chatwoot backfill`` reads a source's Chatwoot: ``ARCHIVE_CHATWOOT_API_URL_<NAME>``
    (the address agents open), ``..._ACCOUNT_<NAME>`` (the number in ``/app/accounts/N``) and
    ``..._TOKEN_<NAME>`` (an administrator's access token, from the profile settings page)."""

    model_config = ConfigDict(frozen=True)

    url: str
    account: int = Field(ge=1)
    token: str = Field(min_length=1, repr=False)

    @field_validator("url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        url = URL(value)
        if url.scheme not in {"http", "https"} or not url.host or url.query_string or url.fragment:
            raise ValueError("must be Chatwoot's http(s) address, like https://chat.example.com")
        return str(url).rstrip("/")


class _ChatwootApiVariables(PydanticBaseSettingsSource):
    """Collects the per-source ``ARCHIVE_CHATWOOT_API_{URL,ACCOUNT,TOKEN}_<NAME>`` variables into
    the ``chatwoot_api`` setting (pydantic-settings knows only fixed variable names), from the
    ``ARCHIVE_CONFIG`` file and the environment, which overrides it variable by variable."""

    def __init__(self, settings_cls: type[BaseSettings], *, config: DotEnvSettingsSource) -> None:
        super().__init__(settings_cls)
        self._config = config

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        # The file's names come lowercased (its source is case-insensitive, as for the others).
        from_file = {k.upper(): v for k, v in self._config.env_vars.items() if v is not None}
        found: dict[str, dict[str, str]] = {}
        for key, value in (from_file | dict(os.environ)).items():
            part, _, name = key.removeprefix(CHATWOOT_API_PREFIX).partition("_")
            if key.startswith(CHATWOOT_API_PREFIX) and part in _CHATWOOT_API_PARTS and name:
                found.setdefault(name, {})[_CHATWOOT_API_PARTS[part]] = value
        return {"chatwoot_api": found} if found else {}


class Settings(BaseSettings):
    """Everything the service can be told, with the defaults of SPEC.md "Configuration"."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    env: Environment = Environment.DEVELOPMENT
    mongodb_uri: str | None = None
    db_name: str = Field(default="support_archive", pattern=r"^[A-Za-z0-9_-]{1,63}$")
    data_dir: Path = Field(default_factory=default_data_dir)
    mongod_bin: Path | None = None
    db_timeout: Duration = timedelta(seconds=10)

    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=0, le=65535)
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=2525, ge=0, le=65535)
    smtp_max_message_bytes: int = Field(default=26_214_400, ge=1024)
    smtp_allowed_clients: CsvList = ["127.0.0.0/8", "::1"]
    smtp_idle_timeout: Duration = timedelta(minutes=5)
    smtp_max_connections_per_client: int = Field(default=50, ge=1, le=10_000)
    # Per /24 (IPv6 /64): one host holding many addresses of its network counts once.
    smtp_max_connections_per_network: int = Field(default=200, ge=1, le=100_000)
    smtp_max_connections: int = Field(default=1000, ge=1, le=100_000)
    # RFC 5321 4.5.3.1.8 asks a server to take at least 100; past this, RCPT gets 452 4.5.3.
    smtp_max_recipients: int = Field(default=1000, ge=100, le=100_000)
    smtp_tls_cert: Path | None = None
    smtp_tls_key: Path | None = None
    support_addresses: CsvList = []
    # Processes that parse mail beside serve's event loop (0: parse in serve's own process).
    parse_workers: int = Field(
        default_factory=lambda: max(1, (os.cpu_count() or 2) - 1), ge=0, le=64
    )  # one per core beyond the event loop's
    # CPU each step of a message's parse may take (MIME and HTML, then its attachments' text):
    # past it, the message is filed raw-only, or without its attachments' text, reason noted.
    parse_budget: Duration = timedelta(seconds=10)
    webhook_sources: CsvList = []
    webhook_max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    # Origins (scheme://host[:port]) whose attachment URLs a webhook may make the archive fetch.
    webhook_fetch_origins: CsvList = []
    # One attachment's fetch, all its attempts together; past it the attachment is kept as
    # metadata with the reason.
    webhook_fetch_timeout: Duration = timedelta(seconds=30)
    # How long an attachment whose server did not answer is fetched again (after 1 min, then
    # four times longer each time, at most 6 h apart); 0: never, it stays metadata at once.
    webhook_refetch_for: Duration = timedelta(days=1)
    # Per chatwoot source (by its <NAME>): its Chatwoot API, for ``chatwoot backfill``.
    chatwoot_api: dict[str, ChatwootApi] = {}

    retention_grace: Duration = timedelta(days=180)
    retention_max_age: Duration = timedelta(days=1095)
    purge_interval: Duration = timedelta(minutes=10)
    audit_max_age: Duration = timedelta(days=395)
    # The free text of audit events (search terms, filters) is redacted after this.
    audit_text_max_age: Duration = timedelta(days=30)
    # A blob referenced this recently is not deleted by a purge (a message may be about to
    # reference it); housekeeping removes it later if nothing does.
    blob_quiet_period: Duration = timedelta(minutes=5)
    export_max_age: Duration = timedelta(days=7)
    secret_key: str | None = Field(default=None, min_length=32)

    # The local journal of webhook calls taken while MongoDB is away; past it, 503.
    journal_max_bytes: Size = Field(default=1_000_000_000, ge=1_000_000)

    log_level: str = Field(default="INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")
    log_format: str = Field(default="text", pattern=r"^(text|json)$")

    @field_validator("smtp_allowed_clients")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        for cidr in value:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError(f"{cidr!r} is not an IP network (CIDR)") from None
        return value

    @field_validator("parse_budget", "webhook_fetch_timeout")
    @classmethod
    def _one_message_bound(cls, value: timedelta, info: ValidationInfo) -> timedelta:
        """The time one message's parse, or one attachment's fetch, may take."""
        if not timedelta(seconds=1) <= value <= timedelta(minutes=10):
            raise ValueError(f"must be between 1s and 10m ({_BOUNDED[info.field_name or '']})")
        return value

    @field_validator("webhook_refetch_for")
    @classmethod
    def _refetch_window(cls, value: timedelta) -> timedelta:
        if not timedelta(0) <= value <= timedelta(days=30):
            raise ValueError("must be between 0 and 30d (how long an attachment is fetched again)")
        return value

    @field_validator("support_addresses")
    @classmethod
    def _support_side(cls, value: list[str]) -> list[str]:
        for entry in value:
            local, _, domain = entry.rpartition("@")
            if not local:  # a domain, written @example.com or example.com
                local = "x"
            if not _ADDRESS_LOCAL.fullmatch(local) or not _DOMAIN.fullmatch(domain):
                raise ValueError(
                    f"{entry!r} is not an address (support@example.com) or a domain (@example.com)"
                )
        return value

    @field_validator("webhook_sources")
    @classmethod
    def _sources(cls, value: list[str]) -> list[str]:
        names: set[str] = set()
        for entry in value:
            name, _, rest = entry.partition(":")
            fmt, _, secret = rest.partition(":")
            secret = secret.removesuffix(":trusted")
            if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,62}", name):
                raise ValueError(f"source name {name!r} must be lowercase letters, digits, - or _")
            if fmt not in {f.value for f in WebhookSource}:
                raise ValueError(f"source {name!r}: format must be generic or chatwoot")
            if len(secret) < 16:
                raise ValueError(f"source {name!r}: secret must be at least 16 characters")
            if name in names:
                raise ValueError(f"source {name!r} is listed twice")
            names.add(name)
        return value

    @field_validator("webhook_fetch_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        origins = []
        for entry in value:
            url = URL(entry)
            if (
                url.scheme not in {"http", "https"} or not url.host or url.path not in {"", "/"}
                or url.query_string or url.fragment or url.user is not None
            ):  # fmt: skip
                raise ValueError(f"{entry!r} is not an origin like https://chat.example.com")
            origins.append(str(url.origin()))
        return origins

    @field_validator("retention_grace")
    @classmethod
    def _grace(cls, value: timedelta) -> timedelta:
        if value > MAX_RETENTION_GRACE:
            raise ValueError("must be at most 183d: the privacy policy promises up to 6 months")
        return value

    @model_validator(mode="after")
    def _production_needs_secret(self) -> Settings:
        if self.env is Environment.PRODUCTION and self.secret_key is None:
            raise ValueError("ARCHIVE_SECRET_KEY must be set when ARCHIVE_ENV=production")
        if (self.smtp_tls_cert is None) != (self.smtp_tls_key is None):
            raise ValueError("ARCHIVE_SMTP_TLS_CERT and ARCHIVE_SMTP_TLS_KEY go together")
        return self

    @model_validator(mode="after")
    def _chatwoot_api_names_a_chatwoot_source(self) -> Settings:
        chatwoot = {
            env_suffix(s.name) for s in self.webhook_source_specs()
            if s.format is WebhookSource.CHATWOOT
        }  # fmt: skip
        for name in self.chatwoot_api:
            if name not in chatwoot:
                raise ValueError(
                    f"{CHATWOOT_API_PREFIX}URL_{name}: no chatwoot source of that name is in "
                    f"{ENV_PREFIX}WEBHOOK_SOURCES"
                )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        assert isinstance(dotenv_settings, DotEnvSettingsSource)
        chatwoot_api = _ChatwootApiVariables(settings_cls, config=dotenv_settings)
        return (init_settings, env_settings, chatwoot_api, dotenv_settings,
                file_secret_settings)  # fmt: skip

    @property
    def embedded(self) -> bool:
        return self.mongodb_uri is None

    def webhook_source_specs(self) -> list[WebhookSourceSpec]:
        """The entries of ``ARCHIVE_WEBHOOK_SOURCES``, parsed."""
        return [parse_webhook_source(entry) for entry in self.webhook_sources]

    def webhook_source_table(self) -> dict[str, tuple[WebhookSource, bytes]]:
        """``{name: (format, secret)}`` of ``ARCHIVE_WEBHOOK_SOURCES``."""
        return {s.name: (s.format, s.secret) for s in self.webhook_source_specs()}

    def chatwoot_api_of(self, source: str) -> ChatwootApi | None:
        return self.chatwoot_api.get(env_suffix(source))

    def resolved_secret_key(self) -> bytes:
        """The HMAC key; in development one is generated once into the data directory."""
        if self.secret_key is not None:
            return self.secret_key.encode()
        path = self.data_dir / "secret_key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_urlsafe(48))
            path.chmod(0o600)
        return path.read_text().strip().encode()


_SECRET_FIELDS = {"secret_key", "webhook_sources", "mongodb_uri", "chatwoot_api"}


class SettingsError(Exception):
    """A setting is invalid; the message is one line that names the variable."""


def load_settings(**overrides: Any) -> Settings:
    """Read and validate the settings once, turning pydantic's report into one clear line."""
    config = os.environ.get(CONFIG_VARIABLE)
    if config is not None and not Path(config).is_file():
        raise SettingsError(f"invalid setting: {CONFIG_VARIABLE}={config!r}: no such file")
    try:
        return Settings(_env_file=config, **overrides)
    except ValidationError as exc:
        raise SettingsError(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        loc = error.get("loc") or ()
        field = str(loc[0]) if loc else ""
        if field == "chatwoot_api" and len(loc) >= 3:  # name the per-source variable
            field = f"chatwoot_api_{loc[2]}_{loc[1]}"
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        if field:
            value = error.get("input")
            secret = field in _SECRET_FIELDS
            shown = f"={value!r}" if isinstance(value, str | int) and not secret else ""
            parts.append(f"{ENV_PREFIX}{field.upper()}{shown}: {message}")
        else:
            parts.append(message)
    return "invalid setting: " + "; ".join(parts)
