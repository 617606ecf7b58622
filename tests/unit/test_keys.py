"""API keys: format, entropy, prefixes, hashing and constant-time comparison."""

from __future__ import annotations

import math

from gateway import keys


def test_formats_and_kinds() -> None:
    p, w = keys.generate("platform"), keys.generate("workspace")
    assert p.startswith("sk_user_") and w.startswith("sk_") and not w.startswith("sk_user_")
    assert keys.kind_of(p) == "platform" and keys.kind_of(w) == "workspace" and keys.kind_of("pk_x") is None
    assert keys.well_formed(p) and keys.well_formed(w)
    assert (
        not keys.well_formed(w + "x") and not keys.well_formed("sk_" + "!" * 40) and not keys.well_formed("")
    )


def test_at_least_128_random_bits_and_unique() -> None:
    body_len = len(keys.generate("workspace")) - len("sk_")
    assert body_len * math.log2(62) >= 128
    assert len({keys.generate("workspace") for _ in range(1000)}) == 1000


def test_prefix_is_public_and_short() -> None:
    k = keys.generate("platform")
    prefix = keys.public_prefix(k)
    assert k.startswith(prefix) and prefix.startswith("sk_user_") and len(prefix) < len(k) - 16


def test_digest_and_matches() -> None:
    k = keys.generate("workspace")
    stored = keys.digest(k)
    assert k.encode() not in stored and len(stored) == 32
    assert keys.matches(k, stored)
    assert not keys.matches(keys.generate("workspace"), stored)


def test_key_check_round_trip_and_malformed() -> None:
    key = keys.generate("workspace")
    check = keys.KeyCheck.of(key)
    assert check.prefix == keys.public_prefix(key) and check.digest == keys.digest(key)
    assert keys.KeyCheck.decode(check.encode()) == check
    assert keys.KeyCheck.decode("sk_abc:not-hex") == keys.KeyCheck("", b"")
