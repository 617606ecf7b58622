"""Settings: every MAILGW_* variable (and an optional env file) as one typed object."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_SMTP_RETRY = "60,300,1800,7200,21600,43200,86400"
DEFAULT_WEBHOOK_RETRY = "5,300,1800,7200,18000,36000,50400,72000,86400"


def _schedule(value: Any) -> list[int]:
    if isinstance(value, list):
        items = value
    else:
        items = [p.strip() for p in str(value).split(",") if p.strip()]
    out = [int(p) for p in items]
    if not out or any(v <= 0 for v in out):
        raise ValueError("must be comma-separated positive seconds")
    return out


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MAILGW_", extra="ignore", frozen=True)

    env: Literal["development", "production"] = "development"
    database_url: str = "postgresql://postgres@127.0.0.1:5432/mailgw"
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    # Prefixes every exchange and queue name: lets tests (or tenants of one broker) share a vhost.
    amqp_prefix: str = ""
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8025, ge=0, le=65535)
    public_url: str = "http://127.0.0.1:8025"
    secret_key: SecretStr | None = None
    data_dir: Path = Path("data")
    attachments_dir: Path | None = None
    webhooks_allow_private: bool = False
    log_format: Literal["json", "console"] | None = None
    log_level: str = "info"
    max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    max_attachment_bytes: int = Field(default=25 * 1024 * 1024, gt=0)
    webhook_timeout: float = Field(default=15.0, gt=0)
    webhook_retry_schedule: Annotated[list[int], NoDecode] = Field(
        default_factory=lambda: _schedule(DEFAULT_WEBHOOK_RETRY)
    )
    webhook_disable_after: float = Field(default=5 * 86400.0, gt=0)
    webhook_concurrency: int = Field(default=64, gt=0)
    webhook_concurrency_per_endpoint: int = Field(default=4, gt=0)
    smtp_retry_schedule: Annotated[list[int], NoDecode] = Field(
        default_factory=lambda: _schedule(DEFAULT_SMTP_RETRY)
    )
    smtp_timeout: float = Field(default=30.0, gt=0)
    smtp_connections_per_mailbox: int = Field(default=4, gt=0)
    mailbox_unhealthy_after: int = Field(default=5, gt=0)
    rpc_timeout: float = Field(default=10.0, gt=0)
    router_prefetch: int = Field(default=64, gt=0)
    delivery_prefetch: int = Field(default=32, gt=0)
    delivery_limit: int = Field(default=5, gt=0)
    scheduler_interval: float = Field(default=1.0, gt=0)
    outbox_grace: float = Field(default=10.0, ge=0)
    poll_interval: float = Field(default=30.0, gt=0)
    imap_folders: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["INBOX"])
    imap_idle_seconds: float = Field(default=25 * 60.0, gt=0)
    lease_seconds: float = Field(default=60.0, gt=0)
    db_pool_size: int = Field(default=10, gt=0)

    @field_validator("webhook_retry_schedule", "smtp_retry_schedule", mode="before")
    @classmethod
    def _parse_schedule(cls, value: Any) -> list[int]:
        return _schedule(value)

    @field_validator("imap_folders", mode="before")
    @classmethod
    def _parse_folders(cls, value: Any) -> list[str]:
        if isinstance(value, list):
            return [str(v) for v in value]
        return [p.strip() for p in str(value).split(",") if p.strip()]

    @field_validator("public_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @model_validator(mode="after")
    def _secret_required_in_production(self) -> Settings:
        if self.env == "production" and self.secret_key is None:
            raise ValueError("MAILGW_SECRET_KEY is required when MAILGW_ENV=production")
        return self

    @property
    def attachments_path(self) -> Path:
        return self.attachments_dir or self.data_dir / "attachments"

    def secret_keys(self) -> list[str]:
        """Encryption keys, newest first. In development a key is generated once into data_dir."""
        if self.secret_key is not None:
            return [k.strip() for k in self.secret_key.get_secret_value().split(",") if k.strip()]
        path = self.data_dir / "secret.key"
        if not path.exists():
            from cryptography.fernet import Fernet

            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(Fernet.generate_key())
        return [path.read_text().strip()]

    def masked(self) -> dict[str, Any]:
        """The effective settings with secrets (and DSN passwords) masked, for `mailgw config`."""
        out: dict[str, Any] = {}
        for name, value in self.model_dump(mode="json").items():
            key = f"MAILGW_{name.upper()}"
            if name == "secret_key":
                out[key] = "********" if value else None
            elif name in ("database_url", "amqp_url"):
                out[key] = mask_url(str(value))
            else:
                out[key] = value
        return out


def mask_url(url: str) -> str:
    """Hide the password part of a DSN."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username}:********@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


class SettingsError(Exception):
    """Start-up stops with this: names each missing or invalid variable."""


def load_settings(env_file: str | None = None, **overrides: Any) -> Settings:
    env_file = env_file or os.environ.get("MAILGW_CONFIG_FILE")
    try:
        return Settings(_env_file=env_file, **overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            name = f"MAILGW_{loc.upper()}" if loc else "settings"
            lines.append(f"{name}: {err['msg']}")
        raise SettingsError("invalid configuration: " + "; ".join(lines)) from None


def random_token(nbytes: int = 16) -> str:
    return secrets.token_hex(nbytes)
