"""Standard Webhooks signing: the specification's test vector and package round-trips."""

from __future__ import annotations

import base64
import json
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from gateway.webhooks.signing import Signer, headers, new_secret, sign, validate_secret

# https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TS = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIG = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_specification_test_vector() -> None:
    assert sign([SPEC_SECRET], SPEC_ID, SPEC_TS, SPEC_BODY) == SPEC_SIG


def test_headers_carry_the_vector_signature() -> None:
    h = headers([SPEC_SECRET], SPEC_ID, SPEC_BODY, now=SPEC_TS)
    assert h == {
        "webhook-id": SPEC_ID,
        "webhook-timestamp": str(SPEC_TS),
        "webhook-signature": SPEC_SIG,
        "content-type": "application/json",
    }


def test_rotation_overlap_sends_one_signature_per_secret() -> None:
    old, new = new_secret(), new_secret()
    value = sign([new, old], SPEC_ID, SPEC_TS, SPEC_BODY)
    parts = value.split(" ")
    assert len(parts) == 2
    assert all(p.startswith("v1,") for p in parts)
    assert parts[0] == sign([new], SPEC_ID, SPEC_TS, SPEC_BODY)
    assert parts[1] == sign([old], SPEC_ID, SPEC_TS, SPEC_BODY)


def test_each_secret_of_a_rotation_verifies() -> None:
    old, new = new_secret(), new_secret()
    body = json.dumps({"id": "evt_1", "type": "webhook.test"}).encode()
    h = headers([new, old], "evt_1", body)
    assert Webhook(new).verify(body, h) == {"id": "evt_1", "type": "webhook.test"}
    assert Webhook(old).verify(body, h) == {"id": "evt_1", "type": "webhook.test"}
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, h)


def test_tampered_body_or_id_fails_verification() -> None:
    secret = new_secret()
    body = b'{"a": 1}'
    h = headers([secret], "evt_1", body)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(b'{"a": 2}', h)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, {**h, "webhook-id": "evt_2"})


def test_timestamp_is_fresh_by_default_and_signed() -> None:
    secret = new_secret()
    before = int(time.time())
    h = headers([secret], "evt_1", b"{}")
    assert before <= int(h["webhook-timestamp"]) <= int(time.time())
    stale = headers([secret], "evt_1", b"{}", now=before - 3600)
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(secret).verify(b"{}", stale)


def test_new_secret_format() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_")
    key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    assert len(key) == 32
    validate_secret(secret)
    assert new_secret() != secret
    # The package accepts it and signs with exactly these key bytes.
    Webhook(secret).verify(b"{}", headers([secret], "evt_x", b"{}"))


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "whsec_",
        "whsec_!!!!",
        "whsec_" + base64.b64encode(b"x" * 8).decode(),
    ],
)
def test_validate_secret_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        validate_secret(bad)


def test_spec_secret_is_valid() -> None:
    validate_secret(SPEC_SECRET)


def test_sign_needs_a_secret() -> None:
    with pytest.raises(ValueError):
        sign([], SPEC_ID, SPEC_TS, SPEC_BODY)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda c: st.lists(c) | st.dictionaries(st.text(), c),
        max_leaves=10,
    )
)
def test_round_trip_any_json(payload: object) -> None:
    secret = SPEC_SECRET
    body = json.dumps(payload, ensure_ascii=False).encode()
    assert Webhook(secret).verify(body, headers([secret], "evt_rt", body)) == payload


@given(st.binary(max_size=300).map(lambda b: b.hex().encode()), st.integers(0, 2**33))
def test_signer_matches_the_package(body: bytes, ts: int) -> None:
    """The keyed signer (keys decoded once) signs exactly as `standardwebhooks` does."""
    from datetime import UTC, datetime

    old, new = new_secret(), SPEC_SECRET
    signer = Signer([new, old])
    expected = " ".join(
        Webhook(s).sign("evt_1", datetime.fromtimestamp(ts, tz=UTC), body.decode()) for s in (new, old))
    assert signer.signature("evt_1", ts, body) == expected
    assert signer.signature("evt_1", ts, body) == expected  # signing again gives the same value


def test_signer_refuses_what_the_package_refuses() -> None:
    """A body that is not UTF-8 and an empty secret fail as with `standardwebhooks`."""
    with pytest.raises(UnicodeDecodeError):
        Signer([SPEC_SECRET]).signature(SPEC_ID, SPEC_TS, b"\xff")
    with pytest.raises(Exception) as ours:
        Signer(["whsec_"])
    with pytest.raises(Exception) as theirs:
        Webhook("whsec_")
    assert type(ours.value) is type(theirs.value)
