"""Uploads (streamed, limited, sanitised), references on replies, and downloads."""

from __future__ import annotations

from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from gateway.config import Settings
from tests.integration.inbox.conftest import Setup, conversation

pytestmark = pytest.mark.integration
Client = TestClient  # type: ignore[type-arg]


async def upload(client: Client, s: Setup, data: bytes, filename: str = "report.pdf",
                 content_type: str = "application/pdf", status: int = 201) -> Any:
    form = aiohttp.FormData(quote_fields=False)  # send the filename as given, like a browser
    form.add_field("file", data, filename=filename, content_type=content_type)
    resp = await client.post("/v1/inbox/attachments/upload", data=form, headers=s.headers)
    assert resp.status == status, await resp.text()
    return await resp.json()


async def test_upload_and_download(client: Client, pool: asyncpg.Pool, settings: Settings,
                                   setup: Setup) -> None:
    payload = bytes(range(256)) * 40
    data = (await upload(client, setup, payload))["data"]
    assert data["key"].startswith(f"inbox-attachments/{setup.ws}/") and data["key"].endswith("/report.pdf")
    assert data["filename"] == "report.pdf" and data["contentType"] == "application/pdf"
    assert data["size"] == len(payload)
    assert data["url"] == f"{settings.public_url}/v1/inbox/attachments/{data['key']}"
    stored = settings.attachments_path / data["key"]
    assert stored.read_bytes() == payload

    resp = await client.get(f"/v1/inbox/attachments/{data['key']}", headers=setup.headers)
    assert resp.status == 200 and await resp.read() == payload
    assert resp.headers["Content-Type"] == "application/pdf"
    assert resp.headers["Content-Disposition"].startswith('attachment; filename="report.pdf"')

    # Used on a reply: linked to the message and numbered in the conversation.
    conv = await conversation(pool, setup)
    resp = await client.post(f"/v1/inbox/{conv}/reply", headers=setup.headers, json={
        "body": "see attached", "attachments": [{"url": data["url"], "key": data["key"]}]})
    assert resp.status == 202
    detail = (await (await client.get(f"/v1/inbox/{conv}", headers=setup.headers)).json())["data"]
    assert detail["messages"][0]["attachments"] == [{
        "filename": "report.pdf", "contentType": "application/pdf", "size": len(payload),
        "downloadUrl": f"/v1/inbox/{conv}/attachments/0"}]
    resp = await client.get(f"/v1/inbox/{conv}/attachments/0", headers=setup.headers)
    assert resp.status == 200 and await resp.read() == payload
    assert "report.pdf" in resp.headers["Content-Disposition"]
    assert (await client.get(f"/v1/inbox/{conv}/attachments/1", headers=setup.headers)).status == 404
    assert (await client.get(f"/v1/inbox/{conv}/attachments/x", headers=setup.headers)).status == 404

    # The same upload on a second reply is copied: each message owns its file.
    resp = await client.post(f"/v1/inbox/{conv}/reply", headers=setup.headers, json={
        "body": "again", "attachments": [{"url": data["url"], "key": data["key"], "filename": "b.pdf"}]})
    assert resp.status == 202
    rows = await pool.fetch("SELECT key, filename, message_id FROM attachments ORDER BY created_at")
    assert len(rows) == 2 and rows[0]["key"] != rows[1]["key"] and rows[1]["filename"] == "b.pdf"
    assert (settings.attachments_path / rows[1]["key"]).read_bytes() == payload


async def test_filenames_are_sanitised(client: Client, settings: Settings, setup: Setup) -> None:
    for given, expected in (("../../etc/passwd", "passwd"), ("..\\..\\boot.ini", "boot.ini"),
                            ("...", "attachment"), ("a b<>|c.txt", "a b_c.txt")):
        data = (await upload(client, setup, b"x", filename=given, content_type="text/plain"))["data"]
        assert data["filename"] == expected, given
        parts = data["key"].split("/")
        assert len(parts) == 4 and parts[:2] == ["inbox-attachments", setup.ws] and parts[3] == expected
        path = (settings.attachments_path / data["key"]).resolve()
        assert path.is_relative_to(settings.attachments_path.resolve())


async def test_upload_limits_and_errors(tiny_client: Client, client: Client, setup: Setup,
                                        other: Setup) -> None:
    ok = await upload(tiny_client, setup, b"a" * 1024, filename="max.bin",
                      content_type="application/octet-stream")
    assert ok["data"]["size"] == 1024
    too_big = await upload(tiny_client, setup, b"a" * 1025, status=413)
    assert too_big["code"] == 413
    huge = await upload(tiny_client, setup, b"a" * 200_000, status=413)
    assert huge["code"] == 413

    form = aiohttp.FormData()
    form.add_field("other", b"x", filename="x.txt")
    resp = await client.post("/v1/inbox/attachments/upload", data=form, headers=setup.headers)
    assert resp.status == 400 and (await resp.json())["details"][0]["field"] == "file"
    resp = await client.post("/v1/inbox/attachments/upload", json={"file": "x"}, headers=setup.headers)
    assert resp.status == 415
    resp = await client.post("/v1/inbox/attachments/upload", data=aiohttp.FormData({"a": "b"}))
    assert resp.status == 401

    # Another workspace can neither download the upload nor attach it.
    key = ok["data"]["key"]
    assert (await client.get(f"/v1/inbox/attachments/{key}", headers=other.headers)).status == 404
    assert (await client.get(f"/v1/inbox/attachments/{key}", headers=setup.headers)).status == 200
