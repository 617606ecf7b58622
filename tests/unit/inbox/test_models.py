"""Request models of the inbox API: field paths in errors, timestamps, tags."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from gateway.inbox.models import ConversationPatch, ForwardRequest, ReplyRequest
from gateway.validation import error_details


def _fields(model: type, body: dict[str, object]) -> list[str]:
    with pytest.raises(ValidationError) as exc:
        model.model_validate(body)
    return [d["field"] for d in error_details(exc.value.errors())]


def test_reply_scheduled_for_needs_an_offset() -> None:
    assert _fields(ReplyRequest, {"body": "x", "scheduledFor": "2030-01-01T10:00:00"}) == ["scheduledFor"]
    assert _fields(ReplyRequest, {"body": "x", "scheduledFor": 5}) == ["scheduledFor"]
    ok = ReplyRequest.model_validate({"body": "x", "scheduledFor": "2030-01-01T12:00:00+02:00"})
    assert ok.scheduledFor is not None and ok.scheduledFor.hour == 10


def test_forward_errors_name_the_index() -> None:
    assert _fields(ForwardRequest, {"toEmails": ["a@example.test", "nope", "b@example.test"]}) == [
        "toEmails[1]"]
    assert _fields(ForwardRequest, {"toEmails": []}) == ["toEmails"]


def test_patch_tags() -> None:
    assert _fields(ConversationPatch, {"tags": ["ok", " "]}) == ["tags[1]"]
    assert _fields(ConversationPatch, {"tags": ["x" * 65]}) == ["tags[0]"]
    assert ConversationPatch.model_validate({"aiTag": None}).model_fields_set == {"aiTag"}
