"""structlog set-up: JSON off a terminal, pretty on one; secrets masked before rendering."""

from __future__ import annotations

import functools
import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import orjson
import structlog

_SECRET_KEYS = re.compile(r"pass(word)?|secret|token|api[_-]?key|authorization|^key$", re.I)
_KEY_IN_TEXT = re.compile(r"\b(sk_(?:user_)?|whsec_)[A-Za-z0-9_+/=-]{6,}")


@functools.lru_cache(maxsize=1024)
def _secret_key(key: str) -> bool:
    # Log keys come from a small fixed vocabulary: the regex runs once per distinct key.
    return _SECRET_KEYS.search(key) is not None


def _mask_text(value: str) -> str:
    # Both key prefixes contain "_": text without one cannot hold a key (skips the regex).
    if "_" not in value:
        return value
    return _KEY_IN_TEXT.sub(lambda m: m.group(1) + "***", value)


def _mask(value: Any) -> Any:
    if isinstance(value, str):
        return _mask_text(value)
    if value is None or isinstance(value, int | float):  # bool is an int
        return value
    if isinstance(value, dict):
        return {k: "***" if _secret_key(str(k)) else _mask(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mask(v) for v in value]
    return value


def redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Last line of defence: mask secret-looking keys and any API key or webhook secret text."""
    for key, value in event.items():
        if _secret_key(key):
            event[key] = "***"
        elif isinstance(value, str):
            masked = _mask_text(value)
            if masked is not value:
                event[key] = masked
        elif not (value is None or isinstance(value, int | float)):
            event[key] = _mask(value)
    return event


def _orjson_dumps(obj: Any, **_: Any) -> bytes:
    return orjson.dumps(obj, default=str)


def _orjson_text(obj: Any, **_: Any) -> str:
    return orjson.dumps(obj, default=str).decode()


def configure(fmt: str | None = None, level: str = "info") -> None:
    if fmt is None:
        fmt = "console" if sys.stderr.isatty() else "json"
    # JSON goes through orjson straight to bytes: the per-line cost matters on hot paths.
    binary = getattr(sys.stderr, "buffer", None)
    renderer: Any = (
        structlog.dev.ConsoleRenderer()
        if fmt == "console"
        else structlog.processors.JSONRenderer(
            serializer=_orjson_dumps if binary is not None else _orjson_text
        )
    )
    factory: Any = (
        structlog.BytesLoggerFactory(file=binary)
        if fmt == "json" and binary is not None
        else structlog.PrintLoggerFactory(file=sys.stderr)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(name)
    return logger
