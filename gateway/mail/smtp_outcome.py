"""The single place that decides whether an SMTP result is sent, transient or permanent."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import aiosmtplib

OutcomeKind = Literal["sent", "transient", "permanent"]

# RFC 3463 enhanced status code at the start of a reply line, e.g. "5.1.1 <x>: unknown".
_ENHANCED = re.compile(r"^\s*(?:\d{3}[ -])?([245]\.\d{1,3}\.\d{1,3})\b", re.MULTILINE)


@dataclass(frozen=True)
class RefusedRecipient:
    """One recipient the server refused (RCPT TO)."""

    email: str
    code: int
    message: str


@dataclass(frozen=True)
class SmtpOutcome:
    """Classified SMTP result; `auth_failure` tells mailbox health the account is at fault."""

    kind: OutcomeKind
    code: int | None
    message: str
    enhanced: str | None = None
    auth_failure: bool = False
    refused: tuple[RefusedRecipient, ...] = ()

    @property
    def retryable(self) -> bool:
        return self.kind == "transient"


def enhanced_status(message: str) -> str | None:
    """The first RFC 3463 enhanced status code in a server reply, if any."""
    found = _ENHANCED.search(message or "")
    return found.group(1) if found else None


def _kind_for_code(code: int) -> OutcomeKind:
    if 200 <= code < 400:
        return "sent"
    if 500 <= code < 600:
        # Includes 552 quota/size errors: RFC 5321 makes them permanent; callers can look at
        # `enhanced` (e.g. 5.2.2 mailbox full) to treat the recipient more gently.
        return "permanent"
    # 4xx, and aiosmtplib's -1 "invalid response": the server may answer better next time.
    return "transient"


def _from_code(code: int, message: str) -> SmtpOutcome:
    return SmtpOutcome(_kind_for_code(code), code, message.strip(), enhanced_status(message))


def _from_refused(exc: aiosmtplib.SMTPRecipientsRefused) -> SmtpOutcome:
    refused = tuple(RefusedRecipient(r.recipient, r.code, r.message) for r in exc.recipients)
    if not refused:
        return SmtpOutcome("transient", None, "all recipients refused")
    # Retry if any refusal may clear up (4xx); fail at once only when every one is final.
    transient = [r for r in refused if _kind_for_code(r.code) != "permanent"]
    pick = transient[0] if transient else refused[0]
    kind: OutcomeKind = "transient" if transient else "permanent"
    return SmtpOutcome(kind, pick.code, pick.message.strip(), enhanced_status(pick.message), refused=refused)


def _from_exception(exc: BaseException) -> SmtpOutcome:
    message = str(getattr(exc, "message", "") or str(exc) or type(exc).__name__)
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        # Bad credentials say nothing about the message: retry it, but let health react.
        return SmtpOutcome(
            "transient", exc.code, exc.message.strip(), enhanced_status(exc.message), auth_failure=True
        )
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        return _from_refused(exc)
    if isinstance(exc, aiosmtplib.SMTPConnectResponseError):
        # A refused greeting is about the server or account, never about this message.
        return SmtpOutcome("transient", exc.code, exc.message.strip(), enhanced_status(message))
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return _from_code(exc.code, exc.message)
    if isinstance(exc, aiosmtplib.SMTPNotSupported):
        # E.g. SMTPUTF8 or STARTTLS missing: resending the same message cannot succeed.
        return SmtpOutcome("permanent", None, message)
    if isinstance(
        exc,
        (
            aiosmtplib.SMTPServerDisconnected,
            aiosmtplib.SMTPConnectError,
            aiosmtplib.SMTPTimeoutError,
            aiosmtplib.SMTPException,
        ),
    ):
        return SmtpOutcome("transient", None, message)
    if isinstance(exc, (OSError, TimeoutError)):  # asyncio.TimeoutError is TimeoutError
        return SmtpOutcome("transient", None, message)
    # Unknown faults are retried; the bounded retry budget turns them into failures later.
    return SmtpOutcome("transient", None, f"{type(exc).__name__}: {message}")


def classify(
    result: BaseException | tuple[int, str] | tuple[Mapping[str, object], str] | int,
) -> SmtpOutcome:
    """Classify an aiosmtplib exception, a (code, message) reply, or aiosmtplib's send result."""
    if isinstance(result, BaseException):
        return _from_exception(result)
    if isinstance(result, int):
        return _from_code(result, "")
    first, message = result
    if isinstance(first, Mapping):
        # aiosmtplib.send() returns ({recipient: SMTPResponse} for refusals, DATA reply text):
        # reaching DATA means the server accepted the message for the remaining recipients.
        refused = tuple(
            RefusedRecipient(str(rcpt), int(getattr(resp, "code", 0)), str(getattr(resp, "message", "")))
            for rcpt, resp in first.items()
        )
        return SmtpOutcome("sent", None, str(message).strip(), enhanced_status(str(message)), refused=refused)
    return _from_code(int(first), str(message))
