"""POST /v1/inbox/{id}/forward: job, manual message, Gmail-style chain, attachments again; jobs API."""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestClient

from gateway.config import Settings
from gateway.crypto import Vault
from gateway.ids import new_id
from gateway.mail.forward import FORWARD_MARKER
from tests.integration.inbox.conftest import Setup, ago, conversation, drain, make_setup, message
from tests.support import factories

pytestmark = pytest.mark.integration
Client = TestClient  # type: ignore[type-arg]


async def _forward(client: Client, s: Setup, conv: str, body: dict[str, Any], status: int = 202) -> Any:
    resp = await client.post(f"/v1/inbox/{conv}/forward", json=body, headers=s.headers)
    assert resp.status == status, await resp.text()
    return await resp.json()


async def _thread(pool: asyncpg.Pool, settings: Settings, s: Setup) -> tuple[str, bytes]:
    conv = await conversation(pool, s, subject="Pricing")
    await message(pool, s, conv, type="sent", direction="outbound", at=ago(300), subject="Pricing",
                  text="Here are our prices.")
    reply = await message(pool, s, conv, type="reply", direction="inbound", at=ago(200),
                          subject="Re: Pricing", text="Looks good, contract attached.")
    content = b"%PDF-1.4 contract" + bytes(range(256))
    key = f"inbox-attachments/{s.ws}/{new_id('r')}/contract.pdf"
    path = settings.attachments_path / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    await pool.execute(
        "INSERT INTO attachments (id, workspace_id, key, filename, content_type, size, message_id,"
        " conversation_id, position) VALUES ($1,$2,$3,'contract.pdf','application/pdf',$4,$5,$6,0)",
        new_id("att"), s.ws, key, len(content), reply, conv,
    )
    return conv, content


async def test_forward_creates_job_message_and_task(
    client: Client, pool: asyncpg.Pool, settings: Settings, setup: Setup
) -> None:
    conv, content = await _thread(pool, settings, setup)
    body = await _forward(client, setup, conv, {
        "toEmails": ["carol@example.test", "dave@example.test", "erin@example.test"],
        "body": "<p>FYI, see <b>below</b></p>"})
    data = body["data"]
    assert data["status"] == "pending"
    assert data["message"] == "Forward queued. Poll worker /api/jobs/:jobId for status."
    prefix, ms, rand = data["jobId"].rsplit("_", 2)
    assert prefix == "forward_email" and ms.isdigit() and len(rand) == 7

    m = await pool.fetchrow("SELECT * FROM messages WHERE job_id = $1", data["jobId"])
    assert (m["type"], m["direction"], m["status"]) == ("manual", "outbound", "queued")
    assert m["to_emails"] == ["carol@example.test"]
    assert m["cc_emails"] == ["dave@example.test", "erin@example.test"]
    assert m["subject"] == "Fwd: Pricing" and m["in_reply_to"] is None and m["references"] == []
    assert m["text_body"].startswith("FYI, see below")
    assert m["text_body"].count(FORWARD_MARKER) == 2
    assert "Here are our prices." in m["text_body"] and "contract attached" in m["text_body"]
    assert "Subject: Re: Pricing" in m["text_body"]
    assert "From: Bob Builder <bob@example.test>" in m["text_body"]
    assert "<b>below</b>" in m["html_body"] and "gmail_quote" in m["html_body"]

    files = await pool.fetch("SELECT * FROM attachments WHERE message_id = $1", m["id"])
    assert [(f["filename"], f["size"]) for f in files] == [("contract.pdf", len(content))]
    assert (settings.attachments_path / files[0]["key"]).read_bytes() == content

    tasks = await drain(settings, "mailgw.delivery")
    assert [orjson.loads(t.body) for t in tasks] == [{"messageId": m["id"]}]

    for path in (f"/api/jobs/{data['jobId']}", f"/v1/jobs/{data['jobId']}"):
        job = (await (await client.get(path, headers=setup.headers)).json())["data"]
        assert job["jobId"] == data["jobId"] and job["type"] == "forward_email"
        assert job["status"] == "pending" and job["result"] is None and job["error"] is None
        assert job["createdAt"].endswith("Z") and job["updatedAt"].endswith("Z")
    # A delivery worker taking the message makes the job active.
    await pool.execute("UPDATE messages SET status = 'sending' WHERE id = $1", m["id"])
    job = (await (await client.get(f"/api/jobs/{data['jobId']}", headers=setup.headers)).json())["data"]
    assert job["status"] == "active"
    await pool.execute("UPDATE jobs SET status = 'failed', error = 'boom' WHERE id = $1", data["jobId"])
    job = (await (await client.get(f"/v1/jobs/{data['jobId']}", headers=setup.headers)).json())["data"]
    assert (job["status"], job["error"]) == ("failed", "boom")
    assert (await client.get("/v1/jobs/forward_email_1_nothere", headers=setup.headers)).status == 404

    detail = (await (await client.get(f"/v1/inbox/{conv}", headers=setup.headers)).json())["data"]
    fwd = detail["messages"][-1]
    assert fwd["type"] == "manual" and fwd["direction"] == "outbound" and fwd["status"] == "queued"
    assert fwd["subject"] == "Fwd: Pricing" and fwd["to"] == "carol@example.test"
    assert [a["downloadUrl"] for a in fwd["attachments"]] == [f"/v1/inbox/{conv}/attachments/1"]


async def test_forward_bodies_and_mailbox_choice(
    client: Client, pool: asyncpg.Pool, settings: Settings, setup: Setup
) -> None:
    conv, _ = await _thread(pool, settings, setup)

    job = (await _forward(client, setup, conv, {"toEmails": ["carol@example.test"]}))["data"]["jobId"]
    m = await pool.fetchrow("SELECT * FROM messages WHERE job_id = $1", job)
    assert m["text_body"].startswith(FORWARD_MARKER)  # no note: the chain only
    assert m["text_body"].count(FORWARD_MARKER) == 2  # the earlier forward is not part of the thread

    job = (await _forward(client, setup, conv, {"toEmails": ["carol@example.test"],
                                                "plainText": "Note\n\nsecond"}))["data"]["jobId"]
    m = await pool.fetchrow("SELECT * FROM messages WHERE job_id = $1", job)
    assert m["text_body"].startswith("Note\n\nsecond") and "<p>Note</p>" in m["html_body"]

    # fromMailboxId wins; else the last used; a paused one falls back to the pool.
    second = await factories.mailbox(pool, Vault(settings.secret_keys()), setup.ws, "gateway@example.test")
    job = (await _forward(client, setup, conv, {"toEmails": ["carol@example.test"],
                                                "fromMailboxId": second}))["data"]["jobId"]
    assert await pool.fetchval("SELECT mailbox_id FROM messages WHERE job_id = $1", job) == second
    job = (await _forward(client, setup, conv, {"toEmails": ["carol@example.test"]}))["data"]["jobId"]
    assert await pool.fetchval("SELECT mailbox_id FROM messages WHERE job_id = $1", job) == second
    await pool.execute("UPDATE mailboxes SET status = 'paused' WHERE id = $1", second)
    job = (await _forward(client, setup, conv, {"toEmails": ["carol@example.test"]}))["data"]["jobId"]
    assert await pool.fetchval("SELECT mailbox_id FROM messages WHERE job_id = $1", job) == setup.mailbox_id
    got = await _forward(client, setup, conv, {"toEmails": ["carol@example.test"], "fromMailboxId": second},
                         400)
    assert got["details"][0]["field"] == "fromMailboxId"


async def test_forward_validation(
    client: Client, pool: asyncpg.Pool, settings: Settings, setup: Setup
) -> None:
    conv = await conversation(pool, setup)
    other = await make_setup(pool, settings, "Else", "carol@example.test")
    for body, status, field in (
        ({}, 400, "toEmails"),
        ({"toEmails": []}, 400, "toEmails"),
        ({"toEmails": ["ok@example.test", "bad@@x"]}, 400, "toEmails[1]"),
        ({"toEmails": "ok@example.test"}, 400, "toEmails"),
        ({"toEmails": ["ok@example.test"], "cc": []}, 400, "cc"),
        ({"toEmails": ["ok@example.test"], "attachments": [{"url": "u", "key": "inbox-attachments/x/y/z"}]},
         403, "attachments[0].key"),
        ({"toEmails": ["ok@example.test"], "fromMailboxId": other.mailbox_id}, 404, None),
    ):
        got = await _forward(client, setup, conv, body, status)
        if field:
            assert field in [d["field"] for d in got["details"]], (body, got)
    assert await pool.fetchval("SELECT count(*) FROM jobs") == 0
