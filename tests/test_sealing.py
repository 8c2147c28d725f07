"""Secrets at rest: AES-256-GCM under a key-encryption key, bound to the app and key id."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from authsvc.errors import ConfigError
from authsvc.sealing import Keyring, SealError, generated_keyring, keyring_from, new_kek_text, parse_kek

A, B = parse_kek(new_kek_text()), parse_kek(new_kek_text())


def test_seal_and_open_round_trip_without_the_plaintext_in_the_sealed_text() -> None:
    ring = Keyring((A,))
    sealed = ring.seal("the-api-secret", app="app1", key_id="k1")
    assert "the-api-secret" not in sealed and sealed.startswith("v1.")
    assert ring.open(sealed, app="app1", key_id="k1") == "the-api-secret"
    assert ring.seal("the-api-secret", app="app1", key_id="k1") != sealed  # a fresh nonce each time


@pytest.mark.parametrize(("app", "key_id"), [("app2", "k1"), ("app1", "k2")])
def test_a_sealed_row_moved_to_another_app_or_key_does_not_open(app: str, key_id: str) -> None:
    ring = Keyring((A,))
    sealed = ring.seal("s", app="app1", key_id="k1")
    with pytest.raises(SealError):
        ring.open(sealed, app=app, key_id=key_id)


def test_tampering_is_detected() -> None:
    ring = Keyring((A,))
    version, kek, nonce, ciphertext = ring.seal("secret", app="a", key_id="k").split(".")
    raw = bytearray(base64.urlsafe_b64decode(ciphertext + "=" * (-len(ciphertext) % 4)))
    raw[0] ^= 1
    forged = ".".join((version, kek, nonce, base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()))
    with pytest.raises(SealError):
        ring.open(forged, app="a", key_id="k")
    with pytest.raises(SealError):
        ring.open("plain text", app="a", key_id="k")


def test_the_first_kek_seals_and_every_kek_opens() -> None:
    old = Keyring((A,)).seal("s", app="a", key_id="k")
    rotated = Keyring((B, A))
    assert rotated.open(old, app="a", key_id="k") == "s"
    assert not rotated.sealed_by_primary(old)
    assert rotated.sealed_by_primary(rotated.seal("s", app="a", key_id="k"))
    with pytest.raises(SealError):
        Keyring((B,)).open(old, app="a", key_id="k")


def test_keks_from_environment_and_file(tmp_path: Path) -> None:
    file = tmp_path / "kek"
    file.write_text(f"# rotated in 2026\n{base64.b64encode(B).decode()}\n")
    ring = keyring_from(base64.b64encode(A).decode(), file)
    assert ring is not None and ring.keys == (A, B)
    assert keyring_from(None, None) is None
    for bad in ("not base64!", base64.b64encode(b"short").decode()):
        with pytest.raises(ConfigError):
            keyring_from(bad, None)
    with pytest.raises(ConfigError):
        keyring_from(None, tmp_path / "missing")


def test_a_generated_kek_is_kept_private_and_reused(tmp_path: Path) -> None:
    ring, created = generated_keyring(tmp_path)
    assert created and (tmp_path / "kek").stat().st_mode & 0o777 == 0o600
    again, created_again = generated_keyring(tmp_path)
    assert not created_again and again.keys == ring.keys
