"""The AMQP `reply` and `forward` commands through the real router: answers as the HTTP API's."""

from __future__ import annotations

import asyncio

import asyncpg
import orjson
import pytest

from consumers import router
from consumers.runner import close_context, open_context
from gateway.bus.rpc import RpcClient
from gateway.bus.topology import COMMANDS
from gateway.config import Settings
from tests.integration.inbox.conftest import Setup, conversation, drain

pytestmark = pytest.mark.integration


async def test_reply_and_forward_commands(pool: asyncpg.Pool, settings: Settings, setup: Setup) -> None:
    conv = await conversation(pool, setup)
    ctx = await open_context(settings, "router-test")
    stop = asyncio.Event()
    task = asyncio.create_task(router.run(ctx, stop))
    client = await RpcClient.open(ctx.amqp, ctx.topology)
    try:
        cmd = {"workspaceId": setup.ws, "conversationId": conv, "body": "via AMQP"}
        first = await client.call(COMMANDS, "reply", orjson.dumps(cmd), wait=20, message_id="cmd-1")
        assert first.status == 202
        data = orjson.loads(first.body)["data"]
        assert data["id"].startswith("rpl_") and data["isScheduled"] is False
        # The same command again (a redelivery): the same answer, nothing sent twice.
        again = await client.call(COMMANDS, "reply", orjson.dumps(cmd), wait=20, message_id="cmd-1")
        assert again.status == 202 and orjson.loads(again.body)["data"]["id"] == data["id"]
        assert await pool.fetchval("SELECT count(*) FROM messages") == 1

        bad = await client.call(COMMANDS, "reply", orjson.dumps({**cmd, "cc": ["nope"]}), wait=20,
                                message_id="cmd-2")
        assert bad.status == 400 and orjson.loads(bad.body)["details"][0]["field"] == "cc[0]"
        other = await client.call(COMMANDS, "reply", orjson.dumps({**cmd, "workspaceId": "ws_x"}),
                                  wait=20, message_id="cmd-3")
        assert other.status == 404

        fwd = {"workspaceId": setup.ws, "conversationId": conv, "toEmails": ["carol@example.test"]}
        answer = await client.call(COMMANDS, "forward", orjson.dumps(fwd), wait=20, message_id="cmd-4")
        assert answer.status == 202
        job = orjson.loads(answer.body)["data"]["jobId"]
        assert job.startswith("forward_email_")
        assert await pool.fetchval("SELECT status FROM jobs WHERE id = $1", job) == "pending"
    finally:
        await client.close()
        stop.set()
        await asyncio.wait_for(task, timeout=30)
        await close_context(ctx)
    assert len(await drain(settings, "mailgw.delivery")) == 2
