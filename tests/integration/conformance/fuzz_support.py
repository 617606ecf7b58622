"""Shared machinery of the no-500 fuzz tests: the world fixture, request helpers, strategies."""

from __future__ import annotations

import http.client
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from tests.integration.conformance.conftest import (
    MAX_BODY_BYTES,
    Api,
    Gateway,
    Resp,
    Tenant,
    assert_error,
    make_tenant,
)
from tests.support.smtp_sink import SmtpSink

HYPOTHESIS = settings(
    max_examples=2500,
    phases=[Phase.explicit, Phase.generate],
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large],
)


# -- the world the requests run against --------------------------------------------------------


@dataclass
class World:
    gw: Gateway
    a: Tenant
    b: Tenant
    ops: list[dict[str, Any]]
    components: dict[str, Any]
    ids: dict[str, list[str]] = field(default_factory=dict)  # path param name -> real values of A
    foreign: list[str] = field(default_factory=list)  # B's ids, for every param

    def keys(self) -> list[tuple[str, dict[str, str]]]:
        return [
            ("ws", {"X-Api-Key": self.a.key}),
            ("ws-bearer", {"Authorization": f"Bearer {self.a.key}"}),
            ("platform+ws", {"X-Api-Key": self.gw.platform_key, "X-Workspace-Id": self.a.workspace_id}),
            ("platform", {"X-Api-Key": self.gw.platform_key}),
            ("platform+foreign", {"X-Api-Key": self.gw.platform_key, "X-Workspace-Id": "ws_doesnotexist"}),
            ("none", {}),
            ("garbage", {"X-Api-Key": "sk_" + "z" * 40}),
            ("other-ws", {"Authorization": f"Bearer {self.b.key}"}),
        ]


def _operations(doc: dict[str, Any]) -> list[dict[str, Any]]:
    ops = []
    for path, item in doc["paths"].items():
        for method, op in item.items():
            body_schema = None
            content = (op.get("requestBody") or {}).get("content", {})
            if "application/json" in content:
                body_schema = content["application/json"].get("schema")
            ops.append({
                "method": method.upper(),
                "path": path,
                "params": [p["name"] for p in op.get("parameters", []) if p["in"] == "path"],
                "query": [p["name"] for p in op.get("parameters", []) if p["in"] == "query"],
                "body": body_schema,
                "multipart": "multipart/form-data" in content or path.endswith("/upload"),
            })
    return ops


@pytest.fixture(name="world")
async def world_fixture(api: Api, gateway: Gateway, sink: SmtpSink) -> World:
    r = await api.call("GET", "/openapi.json")
    assert r.status == 200, r.text()
    doc = r.body
    a = await make_tenant(api, sink, "Acme", mailboxes=2)
    b = await make_tenant(api, sink, "Globex")
    w = World(gateway, a, b, _operations(doc), doc.get("components", {}).get("schemas", {}))
    r = await api.call("POST", a.send_path, key=a.key,
                       json_body={"to": "lead@example.test", "subject": "Hi", "text": "Hello"})
    assert r.status == 202, r.text()
    conv = r.body["messages"][0]["convId"]
    r = await api.call("POST", f"/v1/inbox/{conv}/reply", key=a.key,
                       json_body={"body": "later", "scheduledFor": _iso(3600)})
    assert r.status == 202, r.text()
    rpl = r.body["data"]["id"]
    r = await api.call("POST", f"/v1/inbox/{conv}/forward", key=a.key,
                       json_body={"toEmails": ["f@example.test"]})
    assert r.status == 202, r.text()
    job = r.body["data"]["jobId"]
    r = await api.call("POST", "/v1/webhooks", key=a.key, json_body={"url": "http://127.0.0.1:9/hook"})
    assert r.status == 201, r.text()
    whk = r.body["data"]["id"]
    await api.call("POST", "/v1/suppressions", key=a.key, json_body={"email": "gone@example.test"})
    r = await api.call("POST", b.send_path, key=b.key,
                       json_body={"to": "lead@example.test", "subject": "Hi", "text": "Hello"})
    assert r.status == 202, r.text()
    b_conv = r.body["messages"][0]["convId"]
    w.ids = {
        "handle": [a.handle],
        "id": [conv, a.mailboxes[0]["id"], whk, a.workspace_id],
        "replyId": [rpl],
        "jobId": [job],
        "email": ["gone@example.test"],
        "n": ["0", "1"],
        "deliveryId": ["dlv_0", "1"],
        "key": [f"inbox-attachments/{a.workspace_id}/x/y.txt"],
        "token": ["x"],
    }
    w.foreign = [b.handle, b_conv, b.mailboxes[0]["id"], b.workspace_id]
    return w


def _iso(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z"
    )


# -- making requests -------------------------------------------------------------------------

Request = tuple[str, str, dict[str, str], bytes | None]


def do(w: World, method: str, path: str, headers: dict[str, str], body: bytes | None) -> Resp:
    conn = http.client.HTTPConnection("127.0.0.1", w.gw.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        return Resp(resp.status, CIMultiDict(resp.getheaders()), raw)
    finally:
        conn.close()


def problem(w: World, req: Request) -> tuple[Resp, str | None]:
    """Send one request; return the response and what is wrong with it (None: conforms)."""
    method, path, headers, body = req
    resp = do(w, method, path, headers, body)
    shown = body[:200] if body else body
    where = f"{method} {path[:200]} body={shown!r} -> {resp.status} {resp.text()[:200]}"
    if resp.status == 500:
        return resp, f"500: {where} [{cause(w, resp.headers.get('X-Request-Id', ''))}]"
    # 503 is only the send RPC deadline (with Retry-After); anything else 5xx is a fault
    if resp.status >= 500 and not (resp.status == 503 and "Retry-After" in resp.headers):
        return resp, f"5xx: {where}"
    if not resp.headers.get("X-Request-Id"):
        return resp, f"no X-Request-Id: {where}"
    if resp.status >= 400:
        try:
            assert_error(resp)
        except AssertionError as exc:
            return resp, f"error shape ({str(exc).splitlines()[0]}): {where}"
    return resp, None


def check(w: World, req: Request) -> Resp:
    resp, wrong = problem(w, req)
    assert wrong is None, wrong
    return resp


def cause(w: World, request_id: str) -> str:
    """The innermost project frame and the exception of a 500, from the gateway's JSON log."""
    for line in w.gw.log_text().splitlines():
        if request_id and request_id in line and "unhandled_error" in line:
            try:
                tb = str(json.loads(line).get("exception", ""))
            except ValueError:
                return "unparsable log line"
            frames = re.findall(r'File "(/work/main/(?:gateway|consumers)/[^"]+)", line (\d+)', tb)
            last = tb.strip().splitlines()[-1] if tb.strip() else ""
            where = f"{frames[-1][0].removeprefix('/work/main/')}:{frames[-1][1]}" if frames else "?"
            return f"{where}: {last[:160]}"
    return "no traceback logged"


def report(problems: dict[str, str]) -> None:
    """Fail with one line per distinct kind of problem (route, status), not just the first."""
    assert not problems, f"{len(problems)} non-conforming answers:\n" + "\n".join(problems.values())


def route_of(op: dict[str, Any], wrong: str) -> str:
    """Dedupe key: the route, the kind of problem and, for a 500, where the gateway failed."""
    where = wrong.rsplit(" [", 1)[-1].split(": ", 1)[0] if wrong.startswith("500") else ""
    return f"{op['method']} {op['path']} {wrong.split(':', 1)[0]} {where}"


# -- strategies -------------------------------------------------------------------------------

NASTY_STRINGS = [
    "", " ", "\x00", "\r\n", "a\r\nBcc: x@example.test", "é", "💌" * 50, "\u202e\ufeff",
    "null", "true", "0", "-1", "1e309", "NaN", "../../etc/passwd", "%00", "<script>",
    "x" * 5000, "lead@example.test", "LEAD@EXAMPLE.TEST", "bad@", "@bad", "a@b", "ünï@exämple.test",
    "2024-06-01T15:00:00", "2024-06-01T15:00:00Z", "2999-01-01T00:00:00.000Z", "2999-01-01T00:00:00+05:30",
    "2999-13-45T99:99:99Z", "Re: Re: x", "*", "email.sent", "http://127.0.0.1:9/x",
    "http://169.254.169.254/latest", "file:///etc/passwd", "sk_user_x", "conv_", "mbx_x", "Europe/Paris",
    "Mars/Olympus", "tls", "starttls", "none", "active", "paused", "closed", "inbox-attachments/",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    st.sampled_from(NASTY_STRINGS),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)


def _resolve(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return dict(components.get(ref.rsplit("/", 1)[-1], {}))
    return schema


def plausible(schema: dict[str, Any], components: dict[str, Any], w: World, depth: int = 0) -> Any:
    """A strategy for values near what the schema wants (so validation gets past the surface)."""
    schema = _resolve(schema, components)
    options = schema.get("anyOf") or schema.get("oneOf")
    if options and depth < 4:
        return st.one_of([plausible(o, components, w, depth + 1) for o in options])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "const" in schema:
        return st.just(schema["const"])
    real = [v for vs in w.ids.values() for v in vs] + w.foreign
    t = schema.get("type")
    if t == "string":
        return st.one_of(st.sampled_from(NASTY_STRINGS + real), st.text(max_size=30))
    if t == "integer":
        return st.one_of(st.integers(min_value=-5, max_value=200), st.integers())
    if t == "number":
        return st.floats(allow_nan=False, allow_infinity=False)
    if t == "boolean":
        return st.booleans()
    if t == "null":
        return st.none()
    if t == "array" and depth < 4:
        items = schema.get("items") or {}
        return st.lists(st.one_of(plausible(items, components, w, depth + 1), json_values), max_size=5)
    if t == "object" or "properties" in schema:
        if depth >= 4:
            return st.just({})
        return object_body(schema, components, w, depth + 1)
    return json_values


def object_body(schema: dict[str, Any], components: dict[str, Any], w: World, depth: int = 0) -> Any:
    props: dict[str, Any] = schema.get("properties") or {}

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, sub in props.items():
            mode = draw(st.integers(0, 9))
            if mode <= 2:
                continue  # missing
            if mode <= 6:
                out[name] = draw(plausible(sub, components, w, depth))
            else:
                out[name] = draw(json_values)  # wrong type, null, nested junk
        if draw(st.integers(0, 5)) == 0:
            out[draw(st.text(min_size=1, max_size=20))] = draw(json_values)  # unknown field
        return out

    return build()


PATH_PARAM_VALUES = [
    "..", "%2e%2e", "%00", "a%00b", "%ZZ", "x" * 3000, "conv_" + "0" * 500, "%C3%A9", "%F0%9F%92%8C",
    "-1", "0", "99999999999999999999", "null", "%20", "a%2Fb", "*", "%27%3B--", "sk_user_x",
]


def render_path(template: str, values: dict[str, str]) -> str:
    out = template
    for name, value in values.items():
        pattern = re.compile(r"\{" + re.escape(name) + r"(:[^}]*)?\}")
        out = pattern.sub(value.replace("\\", "\\\\"), out)
    return out


def param_value(w: World, name: str) -> st.SearchStrategy[str]:
    real = w.ids.get(name, [])
    return st.one_of(
        st.sampled_from(real) if real else st.nothing(),
        st.sampled_from(w.foreign),
        st.sampled_from(PATH_PARAM_VALUES),
        st.text(min_size=1, max_size=60).map(lambda s: quote(s, safe="")),
    )


CONTENT_TYPES = [
    "application/json", "application/json", "application/json", "application/json; charset=utf-8",
    "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=zz",
    "application/xml", "", "application/json; charset=latin-1",
]


@st.composite
def request_for(draw: st.DrawFn, w: World) -> tuple[dict[str, Any], Request]:
    op = draw(st.sampled_from(w.ops))
    values = {}
    for name in op["params"]:
        values[name] = draw(param_value(w, name))
        if op["method"] == "DELETE" and values[name] in w.ids.get(name, []):
            values[name] = "doesnotexist"  # keep the world alive for the other examples
    path = render_path(op["path"], values)
    if op["query"] or draw(st.booleans()):
        names = op["query"] + ["limit", "cursor", "zzz"]
        # values stay short: a request line over aiohttp's 8190 bytes is refused by the HTTP parser
        q = {n: draw(st.one_of(st.sampled_from(NASTY_STRINGS), st.text(max_size=20)))[:500]
             for n in draw(st.lists(st.sampled_from(names), max_size=4, unique=True))}
        if q:
            path += "?" + urlencode(q)
    _, headers = draw(st.sampled_from(w.keys()))
    headers = dict(headers)
    body: bytes | None = None
    if op["method"] in ("POST", "PATCH", "PUT") or draw(st.integers(0, 9)) == 0:
        kind = draw(st.integers(0, 9))
        if kind <= 5 and op["body"] is not None:
            body = json.dumps(draw(object_body(_resolve(op["body"], w.components), w.components, w)),
                              ensure_ascii=draw(st.booleans())).encode()
        elif kind <= 6:
            body = json.dumps(draw(json_values)).encode()
        elif kind == 7:
            body = draw(st.binary(max_size=200))
        elif kind == 8:
            body = None
        else:
            body = draw(st.sampled_from(HOSTILE_BODIES))
        ctype = draw(st.sampled_from(CONTENT_TYPES))
        if ctype:
            headers["Content-Type"] = ctype
    if op["path"].endswith("/send") and draw(st.integers(0, 4)) == 0:
        headers["Idempotency-Key"] = draw(st.sampled_from(["k1", "", "x" * 300, "é", "key with space"]))
    if draw(st.integers(0, 9)) == 0:
        headers["X-Request-Id"] = draw(st.sampled_from(["abc", "x" * 500, "é", "a b", "req-1"]))
    return op, (op["method"], path, headers, body)


HOSTILE_BODIES = [
    b"",
    b"{",
    b"null",
    b"[]",
    b"\"just a string\"",
    b"123",
    b'{"a": 1, "a": 2}',
    b'{"to": "\\ud800"}',
    b"\xff\xfe\x00garbage",
    b'{"text": "' + b"x" * (MAX_BODY_BYTES + 1) + b'"}',
    b'{"x":' * 5000 + b"1" + b"}" * 5000,
    b"[" * 100000 + b"]" * 100000,
    json.dumps({"to": ["a@example.test"] * 500, "subject": "s", "text": "t"}).encode(),
    json.dumps({"metadata": {"k": {"deep": [1, {"x": None}]}}}).encode(),
]


# -- the tests ----------------------------------------------------------------------------------


def hostile_requests(w: World) -> Iterator[tuple[dict[str, Any], Request]]:
    """Every operation with every hostile body and content type, under the workspace key."""
    auth = {"X-Api-Key": w.a.key}
    for op in w.ops:
        values = {n: (w.ids.get(n) or ["x"])[0] for n in op["params"]}
        if op["method"] == "DELETE":
            values = {n: "doesnotexist" for n in op["params"]}
        path = render_path(op["path"], values)
        if op["method"] == "GET":
            yield op, ("GET", path, auth, None)
            yield op, ("GET", path + "?limit=0&cursor=%00", auth, None)
            continue
        for body in HOSTILE_BODIES:
            yield op, (op["method"], path, auth | {"Content-Type": "application/json"}, body)
        for ctype in CONTENT_TYPES:
            yield op, (op["method"], path, auth | ({"Content-Type": ctype} if ctype else {}), b'{"a":1}')
        if op["body"] is not None:
            schema = _resolve(op["body"], w.components)
            props = list((schema.get("properties") or {}).keys())
            wrongs: list[Any] = [None, 0, -1, 2**64, 1.5, True, "", "x" * 20000, [], {}, [[[]]], {"a": {}}]
            for wrong in wrongs:
                yield op, (op["method"], path, auth | {"Content-Type": "application/json"},
                           json.dumps({p: wrong for p in props}).encode())
                for p in props:
                    yield op, (op["method"], path, auth | {"Content-Type": "application/json"},
                               json.dumps({p: wrong}).encode())


