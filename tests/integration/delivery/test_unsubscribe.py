"""RFC 8058 one-click unsubscribe: POST suppresses and emits once; GET only shows a form."""

from __future__ import annotations

import re

import pytest
from aiohttp.test_utils import TestClient

from consumers.runner import Context
from tests.integration.delivery.support import EventTap, stage_message, world
from tests.support.smtp_sink import SmtpSink

pytestmark = pytest.mark.integration
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


async def test_unsubscribe_link_from_a_delivered_message(
    ctx: Context, sink: SmtpSink, tap: EventTap, worker: None,
    client: TestClient,  # type: ignore[type-arg]
) -> None:
    w = await world(ctx.pool, ctx.vault, port=sink.port)
    st = await stage_message(ctx.pool, ctx.publisher, w, to="Lead@Example.test", unsubscribe=True,
                             metadata={"campaign": "c1"})
    await tap.wait("email.sent")
    url = str(sink.messages[0].message["List-Unsubscribe"]).strip("<>")
    path = re.sub(r"^https?://[^/]+", "", url)

    page = await client.get(path)
    assert page.status == 200 and page.content_type == "text/html"
    assert 'method="post"' in await page.text()
    assert await ctx.pool.fetchval("SELECT count(*) FROM suppressions") == 0  # GET changes nothing

    resp = await client.post(path, data="List-Unsubscribe=One-Click", headers=FORM,
                             allow_redirects=False)
    assert resp.status == 200
    assert (await resp.json())["data"] == {"email": "lead@example.test", "unsubscribed": True}
    again = await client.post(path, allow_redirects=False)  # empty body is accepted too
    assert again.status == 200
    sup = await ctx.pool.fetch("SELECT email, reason FROM suppressions WHERE workspace_id = $1",
                               w.workspace_id)
    assert [tuple(r) for r in sup] == [("lead@example.test", "unsubscribed")]
    [ev] = await tap.wait("lead.unsubscribed")
    assert ev["workspaceId"] == w.workspace_id
    data = ev["data"]
    assert data["email"] == "lead@example.test" and data["messageId"] == st.id
    assert data["conversationId"] == st.conversation_id and data["identity"] == w.handle
    assert data["mailbox"]["id"] == w.mailbox_id and data["metadata"] == {"campaign": "c1"}
    stored = await ctx.pool.fetchval("SELECT count(*) FROM events WHERE type = 'lead.unsubscribed'")
    assert stored == 1


async def test_unknown_token_and_bad_body(
    ctx: Context, client: TestClient,  # type: ignore[type-arg]
) -> None:
    for method in ("GET", "POST"):
        resp = await client.request(method, "/v1/unsubscribe/nope-not-a-token")
        assert resp.status == 404
        body = await resp.json()
        assert body["code"] == 404 and body["error"] == "Not Found" and body["message"]
    w = await world(ctx.pool, ctx.vault, port=2525)
    st = await stage_message(ctx.pool, None, w, unsubscribe=True)
    await ctx.pool.execute(
        "INSERT INTO unsubscribe_tokens (token, workspace_id, email, message_id, conversation_id)"
        " VALUES ('tok123', $1, 'bob@example.test', $2, $3)", w.workspace_id, st.id, st.conversation_id)
    bad = await client.post("/v1/unsubscribe/tok123", data="something=else", headers=FORM)
    assert bad.status == 400 and (await bad.json())["code"] == 400
    assert await ctx.pool.fetchval("SELECT count(*) FROM suppressions") == 0
    html = await client.post("/v1/unsubscribe/tok123", data="List-Unsubscribe=One-Click",
                             headers={**FORM, "Accept": "text/html"})
    assert html.status == 200 and "unsubscribed" in await html.text()
    assert await ctx.pool.fetchval("SELECT count(*) FROM suppressions") == 1
