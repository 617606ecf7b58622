"""Settings from MAILGW_* variables: parsing, schedules, masking, failures naming the variable."""

from __future__ import annotations

import pytest

from gateway.config import SettingsError, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("MAILGW_"):
            monkeypatch.delenv(name)


def test_defaults_and_env_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    s = load_settings()
    assert s.http_port == 8025 and s.max_body_bytes == 1024 * 1024
    assert s.smtp_retry_schedule == [60, 300, 1800, 7200, 21600, 43200, 86400]
    assert s.webhook_retry_schedule[0] == 5 and s.webhook_retry_schedule[-1] == 86400
    monkeypatch.setenv("MAILGW_HTTP_PORT", "9000")
    monkeypatch.setenv("MAILGW_WEBHOOKS_ALLOW_PRIVATE", "true")
    monkeypatch.setenv("MAILGW_SMTP_RETRY_SCHEDULE", " 5, 10 ,20")
    monkeypatch.setenv("MAILGW_PUBLIC_URL", "https://mail.example.com/")
    s = load_settings()
    assert s.http_port == 9000 and s.webhooks_allow_private is True
    assert s.smtp_retry_schedule == [5, 10, 20]
    assert s.public_url == "https://mail.example.com"


def test_env_file(tmp_path: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "mailgw.env"
    path.write_text("MAILGW_HTTP_PORT=8111\n")
    assert load_settings(str(path)).http_port == 8111


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MAILGW_HTTP_PORT", "eighty"),
        ("MAILGW_HTTP_PORT", "70000"),
        ("MAILGW_SMTP_RETRY_SCHEDULE", "5,-1"),
        ("MAILGW_WEBHOOK_RETRY_SCHEDULE", "soon"),
        ("MAILGW_LOG_FORMAT", "xml"),
        ("MAILGW_MAX_BODY_BYTES", "0"),
    ],
)
def test_invalid_value_names_the_variable(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as exc:
        load_settings()
    assert name in str(exc.value)


def test_production_requires_secret_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILGW_ENV", "production")
    with pytest.raises(SettingsError) as exc:
        load_settings()
    assert "MAILGW_SECRET_KEY" in str(exc.value)
    monkeypatch.setenv("MAILGW_SECRET_KEY", "k1,k2")
    assert load_settings().secret_keys() == ["k1", "k2"]


def test_masked_hides_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILGW_SECRET_KEY", "very-secret-value")
    monkeypatch.setenv("MAILGW_DATABASE_URL", "postgresql://mg:dbpass123@db.internal:5432/mailgw")
    monkeypatch.setenv("MAILGW_AMQP_URL", "amqp://mg:mqpass456@mq.internal/")
    masked = load_settings().masked()
    text = str(masked)
    for secret in ("very-secret-value", "dbpass123", "mqpass456"):
        assert secret not in text
    assert masked["MAILGW_SECRET_KEY"] == "********"
    assert masked["MAILGW_DATABASE_URL"] == "postgresql://mg:********@db.internal:5432/mailgw"
    assert masked["MAILGW_HTTP_PORT"] == 8025
