"""The send request (HTTP body, and the AMQP command = body + workspaceId + identity)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, Discriminator, Field, Tag

from gateway.errors import BadRequest, Forbidden
from gateway.mail.build import validate_custom_headers
from gateway.storage import key_belongs_to
from gateway.timefmt import now, parse_iso
from gateway.validation import Body, Email


def _timestamp(value: str) -> str:
    try:
        parse_iso(value)
        return value
    except ValueError as exc:
        raise ValueError(str(exc) if "offset" in str(exc) else "Invalid ISO 8601 timestamp") from None


def _msgid(value: str) -> str:
    value = value.strip()
    if not value or len(value) > 998 or any(c in value for c in "\r\n"):
        raise ValueError("Invalid Message-ID")
    return value if value.startswith("<") else f"<{value}>"


Timestamp = Annotated[str, AfterValidator(_timestamp)]
MsgId = Annotated[str, AfterValidator(_msgid)]
Scalar = str | int | float | bool | None


def _shape(value: Any) -> str:
    return "list[str]" if isinstance(value, list) else "str"


# "a string or an array": tagged so an error's path is `to` or `to[1]` (the tags are dropped
# from paths by gateway.validation.error_details).
Recipients = Annotated[
    Annotated[Email, Tag("str")] | Annotated[list[Email], Tag("list[str]")], Discriminator(_shape)
]
MsgIds = Annotated[
    Annotated[MsgId, Tag("str")] | Annotated[list[MsgId], Tag("list[str]")], Discriminator(_shape)
]


class Lead(Body):
    email: Email | None = None
    firstName: str | None = Field(default=None, max_length=200)
    lastName: str | None = Field(default=None, max_length=200)
    companyName: str | None = Field(default=None, max_length=200)
    jobTitle: str | None = Field(default=None, max_length=200)


class Campaign(Body):
    id: str | None = Field(default=None, min_length=1, max_length=200)
    name: str | None = Field(default=None, max_length=500)


class AttachmentRef(Body):
    url: str = Field(max_length=2000)
    key: str = Field(min_length=1, max_length=1000)
    filename: str | None = Field(default=None, min_length=1, max_length=255)


class SendRequest(Body):
    to: Recipients | None = None
    subject: str | None = Field(default=None, max_length=998)
    text: str | None = None
    html: str | None = None
    convId: str | None = Field(default=None, min_length=1, max_length=100)
    inReplyTo: MsgIds | None = None
    references: MsgIds | None = None
    lead: Lead | None = None
    campaign: Campaign | None = None
    metadata: dict[str, Scalar] | None = None
    sendAt: Timestamp | None = None
    attachments: list[AttachmentRef] | None = Field(default=None, max_length=20)
    headers: dict[str, str] | None = None
    unsubscribe: bool = False


class SendCommand(SendRequest):
    """What `mailgw.commands` carries under the routing key `send`."""

    workspaceId: str = Field(min_length=1, max_length=100)
    identity: str = Field(min_length=1, max_length=320)


@dataclass
class Prepared:
    """A validated send: what the router needs beyond the raw model."""

    req: SendRequest
    recipients: list[str] = field(default_factory=list)  # empty in reply mode
    send_at: datetime | None = None
    in_reply_to: str | None = None
    references: list[str] = field(default_factory=list)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def prepare(req: SendRequest, workspace_id: str) -> Prepared:
    """Cross-field rules: 400 with every problem at once; 403 for a foreign attachment key."""
    problems: list[dict[str, str]] = []

    def bad(path: str, message: str) -> None:
        problems.append({"field": path, "message": message})

    recipients = _as_list(req.to)
    if req.convId is not None:
        if req.to is not None:
            bad("to", "Not allowed together with convId")
        if req.subject is not None:
            bad("subject", "Not allowed together with convId")
    else:
        if not recipients:
            bad("to", "Field required" if req.to is None else "At least one recipient is required")
        if req.subject is None:
            bad("subject", "Field required")
        if isinstance(req.to, list) and len(req.to) > 100:
            bad("to", "At most 100 recipients per request")
    if not req.text and not req.html:
        bad("text", "text or html is required")
    send_at = parse_iso(req.sendAt) if req.sendAt is not None else None
    if send_at is not None and send_at <= now():
        bad("sendAt", "Must be in the future")
    for path, message in validate_custom_headers(req.headers or {}):
        bad(path, message)
    if req.subject is not None and any(c in req.subject for c in "\r\n"):
        bad("subject", "Must not contain CR or LF")
    if problems:
        raise BadRequest(details=problems)
    for i, att in enumerate(req.attachments or []):
        if not key_belongs_to(att.key, workspace_id):
            raise Forbidden(
                "Attachment key is not under this workspace's inbox-attachments/",
                details=[{"field": f"attachments[{i}].key", "message": "Not in this workspace"}],
            )
    in_reply = _as_list(req.inReplyTo)
    return Prepared(
        req=req,
        recipients=_dedupe(recipients),
        send_at=send_at,
        in_reply_to=in_reply[-1] if in_reply else None,
        references=_as_list(req.references),
    )


def _dedupe(addresses: list[str]) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    for a in addresses:
        k = a
        if k not in seen:
            seen.add(k)
            out.append(a)
    return out


class SentMessage(BaseModel):
    to: str
    id: str | None = None
    status: str
    reason: str | None = None
    convId: str | None = None
    affinity: str | None = None
    account: dict[str, str] | None = None


class SendResponse(BaseModel):
    """The bare body of a send (202 / 429), for the OpenAPI document."""

    accepted: int
    rejected: int
    remaining: int
    dailyCap: int
    identity: str
    messages: list[SentMessage]
