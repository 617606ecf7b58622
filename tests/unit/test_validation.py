"""Request field types: addresses (IDN, test domains), time zones, strictness, error paths."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from gateway.validation import Body, Email, TimeZone, email_key, error_details, error_path, normalize_email


class Send(Body):
    toEmails: list[Email]
    tz: TimeZone = "UTC"
    count: int = 0


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("Morgan@NorthWind.Example", "Morgan@northwind.example"),
        ("lead@example.test", "lead@example.test"),
        ("x@sub.localhost", "x@sub.localhost"),
        ("josé@bücher.example", "josé@bücher.example"),
        ("user@XN--BCHER-KVA.example", "user@bücher.example"),
    ],
)
def test_valid_addresses(given: str, stored: str) -> None:
    assert normalize_email(given) == stored


@pytest.mark.parametrize(
    "bad", ["", "plain", "a@", "@b.example", "a b@c.example", "a@b..c", "x" * 250 + "@e.co"]
)
def test_invalid_addresses(bad: str) -> None:
    with pytest.raises(ValueError, match="Invalid email format"):
        normalize_email(bad)


def test_email_key_compares_domain_case_insensitively() -> None:
    assert email_key("Bob@EXAMPLE.com") == email_key("Bob@example.COM") != email_key("bob@example.com")


def test_error_paths_and_messages() -> None:
    with pytest.raises(ValidationError) as exc:
        Send.model_validate_json(
            b'{"toEmails": ["ok@a.example", "nope", 3], "tz": "Mars/Base", "count": "1", "x": 1}'
        )
    details = error_details(exc.value.errors())
    by_field = {d["field"]: d["message"] for d in details}
    assert by_field["toEmails[1]"] == "Invalid email format"
    assert "toEmails[2]" in by_field
    assert by_field["tz"] == "Unknown IANA time zone"
    assert "count" in by_field  # strict: a string is not an int
    assert by_field["x"] == "Unknown field"
    assert len(details) == len(by_field) == 5


def test_error_path_format() -> None:
    assert error_path(("toEmails", 1)) == "toEmails[1]"
    assert error_path(("smtp", "port")) == "smtp.port"
    assert error_path(("a", 0, "b", 2)) == "a[0].b[2]"
