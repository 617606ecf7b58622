"""take_batch: which pending sends may share a transaction in the router."""

from __future__ import annotations

from gateway.send.handler import Pending, take_batch
from gateway.send.models import SendCommand, prepare


def item(to: str, *, identity: str = "alice@example.com", key: str | None = None,
         conv: str | None = None) -> Pending:
    body: dict[str, object] = {"workspaceId": "ws_1", "identity": identity, "text": "hi"}
    body.update({"convId": conv} if conv else {"to": to, "subject": "s"})
    cmd = SendCommand.model_validate(body)
    return Pending(cmd, prepare(cmd, "ws_1"), key, "digest")


def test_same_identity_distinct_leads_share_a_batch() -> None:
    q = [item("a@x.example"), item("b@x.example"), item("c@x.example")]
    batch, rest = take_batch(q)
    assert batch == q and rest == []


def test_other_identities_and_replies_wait_in_order() -> None:
    a, other, reply, b = (item("a@x.example"), item("b@x.example", identity="bob@example.com"),
                          item("", conv="conv_1"), item("c@x.example"))
    batch, rest = take_batch([a, other, reply, b])
    assert batch == [a, b] and rest == [other, reply]
    batch, rest = take_batch(rest)
    assert batch == [other] and rest == [reply]
    assert take_batch(rest) == ([reply], [])


def test_a_repeated_lead_or_key_ends_the_batch() -> None:
    a, dup, c = item("a@x.example"), item("A@x.example"), item("c@x.example")
    assert take_batch([a, dup, c]) == ([a], [dup, c])
    k1, k2 = item("a@x.example", key="k"), item("b@x.example", key="k")
    assert take_batch([k1, k2]) == ([k1], [k2])


def test_limit() -> None:
    q = [item(f"l{i}@x.example") for i in range(5)]
    assert take_batch(q, limit=2) == (q[:2], q[2:])


def test_busy_groups_are_skipped_in_order() -> None:
    a, other, b = item("a@x.example"), item("b@x.example", identity="bob@example.com"), item("c@x.example")
    batch, rest = take_batch([a, other, b], busy={a.group})
    assert batch == [other] and rest == [a, b]
    assert take_batch([a, b], busy={a.group}) == ([], [a, b])
