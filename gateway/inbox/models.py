"""Request bodies of the inbox API, shared by the HTTP handlers and the AMQP commands."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field

from gateway.timefmt import parse_iso
from gateway.validation import Body, Email, Query

MAX_RECIPIENTS = 50
MAX_ATTACHMENTS = 20


def _timestamp(value: object) -> datetime:
    if not isinstance(value, str):
        raise ValueError("Must be an ISO 8601 timestamp string")
    try:
        return parse_iso(value)
    except ValueError:
        raise ValueError("Must be an ISO 8601 timestamp with a UTC offset") from None


def _tag(value: str) -> str:
    if not value.strip():
        raise ValueError("Tags must not be blank")
    return value


Timestamp = Annotated[datetime, BeforeValidator(_timestamp)]
Tag = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_tag)]


class AttachmentRef(Body):
    """An upload reference: `key` decides; `url` is accepted (what upload returned) and ignored."""

    key: str = Field(min_length=1, max_length=1024)
    url: str | None = Field(default=None, max_length=4096)
    filename: str | None = Field(default=None, min_length=1, max_length=255)


class ReplyRequest(Body):
    body: str = Field(min_length=1, max_length=1_000_000)
    cc: list[Email] = Field(default_factory=list, max_length=MAX_RECIPIENTS)
    bcc: list[Email] = Field(default_factory=list, max_length=MAX_RECIPIENTS)
    scheduledFor: Timestamp | None = None
    mailboxId: str | None = Field(default=None, min_length=1, max_length=100)
    attachments: list[AttachmentRef] = Field(default_factory=list, max_length=MAX_ATTACHMENTS)


class ForwardRequest(Body):
    toEmails: list[Email] = Field(min_length=1, max_length=MAX_RECIPIENTS)
    body: str | None = Field(default=None, max_length=1_000_000)
    plainText: str | None = Field(default=None, max_length=1_000_000)
    fromMailboxId: str | None = Field(default=None, min_length=1, max_length=100)
    attachments: list[AttachmentRef] = Field(default_factory=list, max_length=MAX_ATTACHMENTS)


class ConversationPatch(Body):
    markRead: bool | None = None
    aiTag: str | None = Field(default=None, min_length=1, max_length=64)
    tags: list[Tag] | None = Field(default=None, max_length=50)
    status: Literal["active", "closed"] | None = None


class InboxQuery(Query):
    limit: int = Field(default=50, ge=1, le=100)
    cursor: str | None = None
    identity: str | None = None
    unread: bool | None = None
    aiTag: str | None = None
    tag: str | None = None
    status: Literal["active", "closed"] | None = None
    q: str | None = Field(default=None, max_length=200)
