"""The one error hierarchy: HTTP status for the API, requeue vs dead-letter for consumers."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any


class GatewayError(Exception):
    """Base error. `status` decides the HTTP answer; `transient` decides requeue vs park."""

    status: int = 500
    default_message = "An unexpected error occurred"
    transient = False

    def __init__(
        self,
        message: str | None = None,
        *,
        details: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.message = message or self.default_message
        self.details = details
        self.headers = headers or {}
        super().__init__(self.message)

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.message, self.details)


def error_body(
    status: int, message: str, details: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"error": HTTPStatus(status).phrase, "message": message, "code": status}
    if details:
        body["details"] = details
    return body


class BadRequest(GatewayError):
    status = 400
    default_message = "The request contains invalid parameters or malformed data"


class Unauthorized(GatewayError):
    status = 401
    default_message = "A valid API key is required"


class Forbidden(GatewayError):
    status = 403
    default_message = "This key may not perform this action"


class NotFound(GatewayError):
    status = 404
    default_message = "Resource not found"


class Conflict(GatewayError):
    status = 409
    default_message = "The request conflicts with the current state"


class PayloadTooLarge(GatewayError):
    status = 413
    default_message = "The request body is too large"


class UnsupportedMediaType(GatewayError):
    status = 415
    default_message = "Content-Type must be application/json"


class TooManyRequests(GatewayError):
    status = 429
    default_message = "Too many requests"


class ServiceUnavailable(GatewayError):
    status = 503
    default_message = "The service is temporarily unavailable"
    transient = True


class TransientError(GatewayError):
    """A consumer failure that may pass (broker, database, remote server): retry later."""

    status = 503
    transient = True


class PermanentError(GatewayError):
    """A consumer failure that will not change on retry: park in mailgw.dead."""

    status = 422
