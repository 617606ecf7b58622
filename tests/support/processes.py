"""The environment of a `mailgw` subprocess started by a test."""

from __future__ import annotations

import os

from gateway.config import Settings


def role_env(settings: Settings, **overrides: str) -> dict[str, str]:
    """This test's database, broker prefix and data directory, JSON logs, and nothing inherited
    from the caller's MAILGW_* variables; `overrides` are further MAILGW_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILGW_")}
    env.update({
        "MAILGW_DATABASE_URL": settings.database_url,
        "MAILGW_AMQP_URL": settings.amqp_url,
        "MAILGW_AMQP_PREFIX": settings.amqp_prefix,
        "MAILGW_SECRET_KEY": "test-secret-key",
        "MAILGW_DATA_DIR": str(settings.data_dir),
        "MAILGW_LOG_FORMAT": "json",
    })
    env.update(overrides)
    return env
