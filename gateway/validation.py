"""Field types shared by every request model: addresses, timestamps, time zones, headers."""

from __future__ import annotations

import zoneinfo
from typing import Annotated, Any

import email_validator
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

# Special-use test domains (example.test, *.localhost…) are valid recipients for a gateway
# that is exercised on loopback; syntax and length are still checked, DNS never is.
email_validator.SPECIAL_USE_DOMAIN_NAMES = []

MAX_EMAIL_LENGTH = 254


def normalize_email(value: str) -> str:
    """Validate syntax and length (IDN allowed, no DNS) and lower-case the domain."""
    if not isinstance(value, str) or len(value) > MAX_EMAIL_LENGTH:
        raise ValueError("Invalid email format")
    try:
        info = email_validator.validate_email(
            value.strip(), check_deliverability=False, allow_display_name=False
        )
    except email_validator.EmailNotValidError:
        raise ValueError("Invalid email format") from None
    return f"{info.local_part}@{info.domain.lower()}"


def email_key(address: str) -> str:
    """Comparison key for an address: SPEC compares the domain part case-insensitively."""
    local, _, domain = address.strip().rpartition("@")
    return f"{local}@{domain.lower()}" if local else address.strip()


def check_timezone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError("Unknown IANA time zone") from None
    return value


Email = Annotated[str, AfterValidator(normalize_email)]
TimeZone = Annotated[str, AfterValidator(check_timezone)]
Name = Annotated[str, Field(min_length=1, max_length=200)]


class Body(BaseModel):
    """Base of every request body: unknown fields and loose types are errors."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Query(BaseModel):
    """Base of query-string models: values arrive as strings, so coercion is lax."""

    model_config = ConfigDict(extra="ignore")


def error_path(loc: tuple[int | str, ...]) -> str:
    """('toEmails', 1, 'x') -> 'toEmails[1].x' (the dotted path with indexes SPEC.md uses)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


_MESSAGES = {
    "extra_forbidden": "Unknown field",
    "missing": "Field required",
}


def error_details(errors: list[Any]) -> list[dict[str, str]]:
    details: list[dict[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for err in errors:
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        # Union branches add the branch type to loc ('to', 'str'); drop those tags.
        loc = tuple(p for p in loc if p not in ("str", "list[str]", "list[...]", "constrained-str"))
        msg = _MESSAGES.get(err["type"], str(err["msg"]))
        msg = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
        key = (error_path(loc) or "body", msg)
        if key not in seen:
            seen.add(key)
            details.append({"field": key[0], "message": msg})
    return details
