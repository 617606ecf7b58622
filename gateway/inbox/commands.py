"""AMQP `reply` and `forward` commands: the HTTP bodies plus `workspaceId` and `conversationId`.

Each handler returns (HTTP-equivalent status, the JSON the HTTP call would return), so the
router can answer `reply_to` exactly as the API would have.
"""

from __future__ import annotations

from typing import Any, TypeVar

from aio_pika.abc import AbstractIncomingMessage
from pydantic import BaseModel, ValidationError

from gateway.errors import BadRequest, GatewayError
from gateway.inbox import forwards, service
from gateway.inbox.models import ForwardRequest, ReplyRequest
from gateway.send.handler import Outcome
from gateway.validation import error_details

Result = tuple[int, dict[str, Any]]
M = TypeVar("M", bound=BaseModel)
_ROUTING = ("workspaceId", "conversationId")


def _split(payload: Any) -> tuple[str, str, dict[str, Any]]:
    if not isinstance(payload, dict):
        raise BadRequest("The command body must be a JSON object")
    missing = [
        {"field": name, "message": "Field required"}
        for name in _ROUTING if not isinstance(payload.get(name), str) or not payload.get(name)
    ]
    if missing:
        raise BadRequest(details=missing)
    body = {k: v for k, v in payload.items() if k not in _ROUTING}
    return payload["workspaceId"], payload["conversationId"], body


def _parse(model: type[M], body: dict[str, Any]) -> M:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise BadRequest(details=error_details(exc.errors())) from None


async def handle_reply_command(ctx: Any, payload: Any, command_id: str | None = None) -> Result:
    try:
        ws, conv_id, body = _split(payload)
        data = await service.reply(service.Deps.of(ctx), ws, conv_id, _parse(ReplyRequest, body),
                                   command_id=command_id)
    except GatewayError as exc:
        return exc.status, exc.body()
    return 202, {"success": True, "data": data}


async def handle_forward_command(ctx: Any, payload: Any, command_id: str | None = None) -> Result:
    try:
        ws, conv_id, body = _split(payload)
        data = await forwards.forward(service.Deps.of(ctx), ws, conv_id, _parse(ForwardRequest, body),
                                     command_id=command_id)
    except GatewayError as exc:
        return exc.status, exc.body()
    return 202, {"success": True, "data": data}


# --- adapters for consumers.router.COMMAND_HANDLERS: handler(ctx, message, body) -> Outcome ---

async def reply_command(ctx: Any, message: AbstractIncomingMessage, body: dict[str, Any]) -> Outcome:
    """`reply`: 4xx raise (the router answers and parks them); `message_id` dedupes redeliveries."""
    ws, conv_id, rest = _split(body)
    req = _parse(ReplyRequest, rest)
    data = await service.reply(service.Deps.of(ctx), ws, conv_id, req, command_id=message.message_id)
    return Outcome(202, {"success": True, "data": data})


async def forward_command(ctx: Any, message: AbstractIncomingMessage, body: dict[str, Any]) -> Outcome:
    ws, conv_id, rest = _split(body)
    req = _parse(ForwardRequest, rest)
    data = await forwards.forward(service.Deps.of(ctx), ws, conv_id, req, command_id=message.message_id)
    return Outcome(202, {"success": True, "data": data})
