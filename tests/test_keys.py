"""Signature checks of authsvc.keys against Project Wycheproof's Ed25519 and ECDSA P-256 (IEEE P1363, the JWS
r || s form) vectors: every vector's verdict, on each Ed25519 backend this installation can use."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from authsvc import keys
from tests.conformance_cases import WYCHEPROOF

if not (WYCHEPROOF / "ed25519_test.json").is_file():
    # The vectors come from ../shared beside the repository (or AUTHSVC_WYCHEPROOF): CI has them and must run these.
    if os.environ.get("CI") == "true":
        raise RuntimeError(f"Wycheproof vectors not found in {WYCHEPROOF} (set AUTHSVC_WYCHEPROOF)")
    pytest.skip(f"Wycheproof vectors not found in {WYCHEPROOF} (set AUTHSVC_WYCHEPROOF)", allow_module_level=True)


def _vectors(name: str, algorithm: str) -> Iterator[Any]:
    document = json.loads((WYCHEPROOF / name).read_text())
    for group in document["testGroups"]:
        key = keys.from_jwk({**group["publicKeyJwk"], "alg": algorithm})
        for test in group["tests"]:
            yield pytest.param(key, test, id=f"{test['tcId']}-{test['comment'] or 'plain'}")


@pytest.fixture(params=["libsodium", "openssl"])
def ed25519_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each Ed25519 backend keys can use: libsodium when PyNaCl is installed (the `fast` extra), OpenSSL always."""
    if request.param == "libsodium":
        if keys.ED25519_BACKEND != "libsodium":
            pytest.skip("PyNaCl is not installed (the `fast` extra)")
    else:
        monkeypatch.setattr(keys, "_sodium_open", None)
    return str(request.param)


@pytest.mark.parametrize(("key", "test"), list(_vectors("ed25519_test.json", keys.EDDSA)))
def test_ed25519_wycheproof(ed25519_backend: str, key: keys.SigningKey, test: dict[str, Any]) -> None:
    signature_ok = keys.signature_matches(key, bytes.fromhex(test["msg"]), bytes.fromhex(test["sig"]))
    assert signature_ok is (test["result"] == "valid"), (ed25519_backend, test["comment"])


@pytest.mark.parametrize(("key", "test"), list(_vectors("ecdsa_secp256r1_sha256_p1363_test.json", keys.ES256)))
def test_es256_wycheproof(key: keys.SigningKey, test: dict[str, Any]) -> None:
    signature_ok = keys.signature_matches(key, bytes.fromhex(test["msg"]), bytes.fromhex(test["sig"]))
    assert signature_ok is (test["result"] == "valid"), test["comment"]


def test_a_short_ed25519_signature_never_borrows_message_bytes(ed25519_backend: str) -> None:
    """libsodium reads the first 64 bytes of signature + message as the signature: the same bytes split one byte
    earlier (a 63-byte signature, the message starting with the signature's last byte) must not verify."""
    key = keys.load(keys.EDDSA, keys.generate(keys.EDDSA))
    assert isinstance(key.private_key, ed25519.Ed25519PrivateKey)
    signing_input = b"eyJhbGciOiJFZERTQSJ9.e30"
    signature = key.private_key.sign(signing_input)
    assert keys.signature_matches(key, signing_input, signature)
    assert not keys.signature_matches(key, signature[63:] + signing_input, signature[:63])
