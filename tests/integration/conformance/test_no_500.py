"""No request input ever produces a 500 (SPEC "Conventions"): every operation that /openapi.json
lists, fed random and hostile bodies, content types, path parameters, queries and keys.
Every answer carries X-Request-Id; every 4xx has the SPEC error shape.

Requests go through http.client so paths reach the server byte for byte (`..`, `%00`)."""

from __future__ import annotations

import pytest

from tests.integration.conformance.fuzz_support import (  # noqa: F401 - `world` is a fixture
    PATH_PARAM_VALUES,
    World,
    hostile_requests,
    problem,
    render_path,
    report,
    route_of,
    world_fixture,
)

pytestmark = pytest.mark.integration

def test_every_operation_with_hostile_bodies(world: World) -> None:
    assert len(world.ops) >= 40, [f"{o['method']} {o['path']}" for o in world.ops]
    count = 0
    problems: dict[str, str] = {}
    for op, req in hostile_requests(world):
        _, wrong = problem(world, req)
        if wrong is not None:
            problems.setdefault(route_of(op, wrong), wrong)
        count += 1
    assert count > 500
    report(problems)


HOSTILE_QUERY_VALUES = ["%00", "a%00b", "%FF", "%C3%A9", "", "x" * 2000, "-1", "1e3", "%27"]
HOSTILE_HEADERS = [
    {"X-Workspace-Id": "ws_nope\u00e9"},  # one latin-1 byte: not UTF-8 on the wire
    {"X-Workspace-Id": "ws_" + "x" * 3000},
    {"X-Workspace-Id": ""},
    {"X-Api-Key": "sk_\u00e9\u00e9"},
    {"Authorization": "Bearer \u00e9"},
    {"Authorization": "Bearer"},
    {"Idempotency-Key": "\u00e9"},
    {"X-Request-Id": "\u00e9"},
]


def test_every_operation_with_hostile_paths_queries_and_headers(world: World) -> None:
    problems: dict[str, str] = {}
    for op in world.ops:
        values = {n: (world.ids.get(n) or ["x"])[0] for n in op["params"]}
        if op["method"] == "DELETE":
            values = {n: "doesnotexist" for n in op["params"]}
        path = render_path(op["path"], values)
        body = b"{}" if op["method"] in ("POST", "PATCH") else None
        for name in op["query"] + ["limit", "cursor"]:
            for value in HOSTILE_QUERY_VALUES:
                req = (op["method"], f"{path}?{name}={value}",
                       {"X-Api-Key": world.a.key, "Content-Type": "application/json"}, body)
                _, wrong = problem(world, req)
                if wrong is not None:
                    problems.setdefault(route_of(op, wrong), wrong)
        for extra in HOSTILE_HEADERS:
            headers = {"X-Api-Key": world.gw.platform_key, "X-Workspace-Id": world.a.workspace_id,
                       "Content-Type": "application/json"} | extra
            _, wrong = problem(world, (op["method"], path, headers, body))
            if wrong is not None:
                problems.setdefault(route_of(op, wrong), wrong)
    for op in world.ops:
        if not op["params"]:
            continue
        for value in PATH_PARAM_VALUES + world.foreign:
            path = render_path(op["path"], {n: value for n in op["params"]})
            body = b"{}" if op["method"] in ("POST", "PATCH") else None
            headers = {"X-Api-Key": world.a.key, "Content-Type": "application/json"}
            resp, wrong = problem(world, (op["method"], path, headers, body))
            if wrong is not None:
                problems.setdefault(route_of(op, wrong), wrong)
            elif value in world.foreign and op["method"] in ("GET", "DELETE") and resp.status < 300:
                # another workspace's resource is 404, exactly as if it did not exist
                problems.setdefault(f"{op['path']} foreign", f"foreign id answered: {path} {resp.status}")
    for raw in ("/v1/inbox/../mailboxes", "/v1/mailboxes/%2e%2e/identities", "/v1/inbox/a%00b",
                "/v1/identities/" + "a" * 4000 + "/send", "/v1/inbox/a/b/attachments/1"):
        _, wrong = problem(world, ("GET", raw, {"X-Api-Key": world.a.key}, None))
        if wrong is not None:
            problems.setdefault(raw[:40], wrong)
    report(problems)


