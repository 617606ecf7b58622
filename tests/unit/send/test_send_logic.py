"""Pure send logic: the identity's day, request rules, answer shape, key and body hashing."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from gateway.db.usage import day_in
from gateway.errors import BadRequest, Forbidden
from gateway.send.handler import ordered
from gateway.send.idempotency import check_key, request_hash
from gateway.send.models import SendRequest, prepare


@pytest.mark.parametrize(
    ("tz", "at", "day"),
    [
        ("UTC", datetime(2024, 6, 1, 23, 30, tzinfo=UTC), date(2024, 6, 1)),
        ("Europe/Berlin", datetime(2024, 6, 1, 22, 30, tzinfo=UTC), date(2024, 6, 2)),
        ("America/Los_Angeles", datetime(2024, 6, 2, 6, 59, tzinfo=UTC), date(2024, 6, 1)),
        ("America/Los_Angeles", datetime(2024, 6, 2, 7, 0, tzinfo=UTC), date(2024, 6, 2)),
        ("Pacific/Kiritimati", datetime(2024, 6, 1, 10, 0, tzinfo=UTC), date(2024, 6, 2)),
        # the spring-forward night still has one day boundary at local midnight
        ("Europe/Berlin", datetime(2024, 3, 30, 23, 0, tzinfo=UTC), date(2024, 3, 31)),
    ],
)
def test_day_follows_identity_time_zone(tz: str, at: datetime, day: date) -> None:
    assert day_in(tz, at) == day


def test_answers_keep_spec_key_order() -> None:
    stored = {"identity": "a", "messages": [{"status": "accepted", "to": "x", "account": {}, "id": "<i>",
                                             "convId": "c", "affinity": "new"}],
              "dailyCap": 5, "remaining": 4, "rejected": 0, "accepted": 1}
    body = ordered(stored)
    assert list(body) == ["accepted", "rejected", "remaining", "dailyCap", "identity", "messages"]
    assert list(body["messages"][0]) == ["to", "id", "status", "convId", "affinity", "account"]
    assert ordered({"error": "x"}) == {"error": "x"}


def req(**body: object) -> SendRequest:
    return SendRequest.model_validate(body)


def test_prepare_rules() -> None:
    p = prepare(req(to=["a@x.example", "a@x.example", "b@x.example"], subject="s", text="t"), "ws_1")
    assert p.recipients == ["a@x.example", "b@x.example"]
    with pytest.raises(BadRequest) as exc:
        prepare(req(convId="conv_1", to="a@x.example", subject="s"), "ws_1")
    assert {d["field"] for d in exc.value.details or []} == {"to", "subject", "text"}
    with pytest.raises(BadRequest) as exc:
        prepare(req(text="t"), "ws_1")
    assert {d["field"] for d in exc.value.details or []} == {"to", "subject"}
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert prepare(req(convId="conv_1", text="t", sendAt=future), "ws_1").send_at is not None
    with pytest.raises(Forbidden):
        prepare(req(convId="c", text="t", attachments=[{"url": "u", "key": "inbox-attachments/ws_2/k/f"}]),
                "ws_1")
    with pytest.raises(Forbidden):
        prepare(req(convId="c", text="t", attachments=[{"url": "u", "key": "inbox-attachments/ws_1/../x"}]),
                "ws_1")
    p = prepare(req(to="a@x.example", subject="s", text="t", inReplyTo="root@x.example"), "ws_1")
    assert p.in_reply_to == "<root@x.example>"


def test_idempotency_key_and_hash() -> None:
    assert check_key("a" * 255) == "a" * 255
    for bad in ("", "a" * 256, "tab\there", "é"):
        with pytest.raises(BadRequest):
            check_key(bad)
    assert request_hash({"a": 1, "b": [1, 2]}) == request_hash({"b": [1, 2], "a": 1})
    assert request_hash({"a": 1, "workspaceId": "w", "identity": "i"}) == request_hash({"a": 1})
    assert request_hash({"a": 1}) != request_hash({"a": 2})
