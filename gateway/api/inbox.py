"""The inbox API: conversations (list, read, update), replies, scheduled-reply cancel, forwards."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel

from gateway.api.auth import workspace_of
from gateway.api.bodies import read_body, read_query
from gateway.api.context import CTX
from gateway.api.openapi import endpoint
from gateway.api.pagination import decode, page_of
from gateway.api.responses import no_content, ok, ok_list
from gateway.db import inbox as db
from gateway.inbox import forwards, service, views
from gateway.inbox.models import ConversationPatch, ForwardRequest, InboxQuery, ReplyRequest

routes = web.RouteTableDef()


class ReplyAccepted(BaseModel):
    id: str
    status: str
    scheduledFor: str
    isScheduled: bool


class ForwardAccepted(BaseModel):
    jobId: str
    status: str
    message: str


class ConversationState(BaseModel):
    id: str
    aiTag: str | None
    tags: list[str]
    isRead: bool
    unreadCount: int


@endpoint(routes, "GET", "/v1/inbox", summary="List conversations, newest activity first",
          tag="inbox", query=InboxQuery, envelope="list")
async def list_inbox(request: web.Request) -> web.Response:
    ws = await workspace_of(request)
    query = read_query(request, InboxQuery)
    rows = await db.list_conversations(
        request.app[CTX].pool, ws, identity=query.identity, unread=query.unread,
        ai_tag=query.aiTag, tag=query.tag, status=query.status, q=query.q,
        after=decode(query.cursor), limit=query.limit + 1,
    )
    items, cursor = page_of([dict(r) for r in rows], query.limit, key="last_activity_at")
    return ok_list([views.conversation_summary(r) for r in items], cursor)


@endpoint(routes, "GET", "/v1/inbox/{id}", summary="A conversation with its messages", tag="inbox")
async def get_conversation(request: web.Request) -> web.Response:
    ws = await workspace_of(request)
    data = await service.conversation(request.app[CTX].pool, ws, request.match_info["id"])
    return ok(data)


@endpoint(routes, "PATCH", "/v1/inbox/{id}", summary="Mark read or unread, tag, close",
          tag="inbox", body=ConversationPatch, response=ConversationState)
async def patch_conversation(request: web.Request) -> web.Response:
    ws = await workspace_of(request)
    patch = await read_body(request, ConversationPatch)
    data = await service.update(request.app[CTX].pool, ws, request.match_info["id"], patch)
    return ok(data)


@endpoint(routes, "POST", "/v1/inbox/{id}/reply", summary="Reply now or at scheduledFor",
          tag="inbox", body=ReplyRequest, response=ReplyAccepted, status=202)
async def reply(request: web.Request) -> web.Response:
    ws = await workspace_of(request)
    body = await read_body(request, ReplyRequest)
    data = await service.reply(service.Deps.of(request.app[CTX]), ws, request.match_info["id"], body)
    return ok(data, 202)


@endpoint(routes, "DELETE", "/v1/inbox/{id}/scheduled/{replyId}", summary="Cancel a scheduled reply",
          tag="inbox", status=204, envelope="none")
async def cancel_scheduled(request: web.Request) -> web.Response:
    ws = await workspace_of(request)
    await service.cancel(request.app[CTX].pool, ws, request.match_info["id"],
                         request.match_info["replyId"])
    return no_content()


@endpoint(routes, "POST", "/v1/inbox/{id}/forward", summary="Forward the thread as a new email",
          tag="inbox", body=ForwardRequest, response=ForwardAccepted, status=202)
async def forward(request: web.Request) -> web.Response:
    ws = await workspace_of(request)
    body = await read_body(request, ForwardRequest)
    data = await forwards.forward(service.Deps.of(request.app[CTX]), ws, request.match_info["id"], body)
    return ok(data, 202)
