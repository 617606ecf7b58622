"""No request input ever produces a 500: Hypothesis-generated requests against every operation,
and hostile multipart uploads (see test_no_500.py for the shared rules)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.integration.conformance.fuzz_support import (  # noqa: F401 - `world` is a fixture
    HYPOTHESIS,
    World,
    problem,
    report,
    request_for,
    route_of,
    world_fixture,
)

pytestmark = pytest.mark.integration

def test_random_requests_never_500(world: World) -> None:
    """Hypothesis draws the requests; problems are collected (not shrunk: the server has state)
    and reported together, each 500 with the gateway's own account of it."""
    problems: dict[str, str] = {}

    @HYPOTHESIS
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        op, req = data.draw(request_for(world))
        _, wrong = problem(world, req)
        if wrong is not None:
            problems.setdefault(route_of(op, wrong), wrong)

    run()
    report(problems)


def _multipart(parts: list[tuple[str, str | None, str | None, bytes]], boundary: str = "b0und") -> bytes:
    out = b""
    for name, filename, ctype, data in parts:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        out += f"--{boundary}\r\nContent-Disposition: {disp}\r\n".encode()
        if ctype:
            out += f"Content-Type: {ctype}\r\n".encode()
        out += b"\r\n" + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def test_upload_with_hostile_multipart(world: World) -> None:
    """Uploads never 500, and a stored key never leaves inbox-attachments/<workspaceId>/."""
    prefix = f"inbox-attachments/{world.a.workspace_id}/"
    cases: list[bytes] = [
        _multipart([]),
        _multipart([("other", None, None, b"x")]),
        _multipart([("file", None, None, b"no filename")]),
        _multipart([("file", "", "text/plain", b"empty name")]),
        _multipart([("file", "../../../etc/passwd", "text/plain", b"x")]),
        _multipart([("file", "..", "text/plain", b"x")]),
        _multipart([("file", "a/../../b.txt", "text/plain", b"x")]),
        _multipart([("file", "nul\x00.txt", "text/plain", b"x")]),
        _multipart([("file", "x" * 5000 + ".txt", "text/plain", b"x")]),
        _multipart([("file", "\u00e9\u00e8.txt", "text/plain", b"x")]),
        _multipart([("file", "a.txt", "text/plain", b"x"), ("file", "b.txt", "text/plain", b"y")]),
        _multipart([("file", "a.txt", "\r\nX: y", b"x")]),
        b"--b0und\r\nContent-Disposition: form-data; name=\"file\"; filename=\"t.txt\"\r\n\r\nunterminated",
        b"not multipart at all",
    ]
    problems: dict[str, str] = {}
    op = {"method": "POST", "path": "/v1/inbox/attachments/upload"}
    for i, body in enumerate(cases):
        for ctype in ("multipart/form-data; boundary=b0und", "multipart/form-data", "application/json"):
            req = ("POST", "/v1/inbox/attachments/upload",
                   {"X-Api-Key": world.a.key, "Content-Type": ctype}, body)
            resp, wrong = problem(world, req)
            if wrong is not None:
                problems.setdefault(f"{route_of(op, wrong)} case {i}", wrong)
            elif resp.status < 300:
                key = resp.body["data"]["key"]
                if not key.startswith(prefix) or ".." in key.split("/") or "\x00" in key:
                    problems[f"case {i} key"] = f"upload key escapes its prefix: {key!r}"
    report(problems)

