"""The credential vault: round trips, key rotation with two keys, refusal of unknown keys."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from gateway.crypto import Vault


def test_round_trip_and_no_plaintext() -> None:
    vault = Vault([Fernet.generate_key().decode()])
    token = vault.encrypt("hunter2-pw")
    assert "hunter2" not in token and vault.decrypt(token) == "hunter2-pw"
    assert vault.encrypt("hunter2-pw") != token  # random IV


def test_passphrase_keys_work() -> None:
    vault = Vault(["a passphrase, not a fernet key"])
    assert vault.decrypt(vault.encrypt("x")) == "x"


def test_rotation_with_two_keys() -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    before = Vault([old])
    token = before.encrypt("secret")
    during = Vault([new, old])  # newest first: new encrypts, both decrypt
    assert during.decrypt(token) == "secret"
    rotated = during.rotate(token)
    after = Vault([new])
    assert after.decrypt(rotated) == "secret"
    with pytest.raises(ValueError):
        after.decrypt(token)
    with pytest.raises(ValueError):
        before.decrypt(during.encrypt("y"))


def test_requires_a_key() -> None:
    with pytest.raises(ValueError):
        Vault([])
