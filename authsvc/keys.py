"""Asymmetric signing keys (EdDSA with Ed25519, ES256 with P-256): generating, loading, verifying. No I/O."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

_sodium_open: Any
_SODIUM_REFUSALS: tuple[type[Exception], ...]
try:  # PyNaCl (libsodium), the optional `fast` extra: Ed25519 verification in half the time OpenSSL takes
    from nacl.bindings import crypto_sign_open as _sodium_open
    from nacl.exceptions import BadSignatureError

    _SODIUM_REFUSALS = (BadSignatureError,)
except ImportError:  # pragma: no cover - depends on the installation
    _sodium_open = None
    _SODIUM_REFUSALS = ()

ED25519_BACKEND = "libsodium" if _sodium_open is not None else "openssl"
"""Which library checks Ed25519 signatures here: both give the same verdict on every Wycheproof vector
(tests/test_keys.py), libsodium in about half the time (docs/performance.md)."""

EDDSA = "EdDSA"
ES256 = "ES256"
ASYMMETRIC_ALGORITHMS = (EDDSA, ES256)
"""Algorithms whose tokens are signed with a private key and verified with its public key."""

PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One key pair of an app."""

    algorithm: str
    private_key: PrivateKey | None
    """None for a key known by its public half only (a local verifier's, from the state stream): it verifies."""
    public_key: PublicKey
    _raw_ed25519: bytes | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        raw = None
        if isinstance(self.public_key, ed25519.Ed25519PublicKey):
            raw = self.public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        object.__setattr__(self, "_raw_ed25519", raw)


def generate(algorithm: str) -> str:
    """A fresh private key for `algorithm`, as unencrypted PKCS#8 PEM."""
    key: PrivateKey
    if algorithm == EDDSA:
        key = ed25519.Ed25519PrivateKey.generate()
    elif algorithm == ES256:
        key = ec.generate_private_key(ec.SECP256R1())
    else:
        raise ValueError(f"not an asymmetric algorithm: {algorithm}")
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def load(algorithm: str, private_pem: str) -> SigningKey:
    """The key pair in `private_pem`, checked to fit `algorithm`."""
    key = serialization.load_pem_private_key(private_pem.encode(), password=None)
    if algorithm == EDDSA and isinstance(key, ed25519.Ed25519PrivateKey):
        return SigningKey(algorithm, key, key.public_key())
    if algorithm == ES256 and isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1":
        return SigningKey(algorithm, key, key.public_key())
    raise ValueError(f"the stored key does not fit {algorithm}")


def jwk(key: SigningKey, key_id: str) -> dict[str, str]:
    """The public half of `key` as a JSON Web Key (RFC 7517 / 8037), with its kid, alg and use."""
    public = key.public_key
    if isinstance(public, ed25519.Ed25519PublicKey):
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        fields = {"kty": "OKP", "crv": "Ed25519", "x": _b64(raw)}
    else:
        numbers = public.public_numbers()
        fields = {
            "kty": "EC",
            "crv": "P-256",
            "x": _b64(numbers.x.to_bytes(32, "big")),
            "y": _b64(numbers.y.to_bytes(32, "big")),
        }
    return {**fields, "kid": key_id, "alg": key.algorithm, "use": "sig"}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def from_jwk(jwk: Mapping[str, str]) -> SigningKey:
    """The public key of a JSON Web Key as `jwk` makes it (Ed25519 or P-256), for verifying only; ValueError
    when it is not one."""
    try:
        if jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519" and jwk.get("alg") == EDDSA:
            return SigningKey(EDDSA, None, ed25519.Ed25519PublicKey.from_public_bytes(_unb64(jwk["x"])))
        if jwk.get("kty") == "EC" and jwk.get("crv") == "P-256" and jwk.get("alg") == ES256:
            x, y = (int.from_bytes(_unb64(jwk[name]), "big") for name in ("x", "y"))
            return SigningKey(ES256, None, ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key())
    except (KeyError, ValueError, binascii.Error) as exc:
        raise ValueError(f"not a valid {jwk.get('alg')} public key: {exc}") from None
    raise ValueError(f"not an EdDSA (Ed25519) or ES256 (P-256) JSON Web Key: {jwk.get('kty')} {jwk.get('crv')}")


def signature_matches(key: SigningKey, signing_input: bytes, signature: bytes) -> bool:
    """True when `signature` (JWS encoding) is `key`'s signature of `signing_input`."""
    public = key.public_key
    try:
        if isinstance(public, ed25519.Ed25519PublicKey):
            return _ed25519_verifies(key, public, signing_input, signature)
        # JWS ES256 signatures are r || s, 32 bytes each; cryptography wants DER.
        if len(signature) != 64:
            return False
        r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        if r == 0 or s == 0:
            return False
        public.verify(encode_dss_signature(r, s), signing_input, ec.ECDSA(hashes.SHA256()))
        return True
    except InvalidSignature:
        return False


def _ed25519_verifies(
    key: SigningKey, public: ed25519.Ed25519PublicKey, signing_input: bytes, signature: bytes
) -> bool:
    if _sodium_open is None:
        public.verify(signature, signing_input)
        return True
    # crypto_sign_open reads its first 64 bytes as the signature: a shorter one must never reach it.
    if len(signature) != 64:
        return False
    try:
        _sodium_open(signature + signing_input, key._raw_ed25519)
    except _SODIUM_REFUSALS:
        return False
    return True
