"""Secrets at rest: API secrets and private keys sealed with AES-256-GCM under a key-encryption key (KEK).

A sealed value is the text `v1.<kek id>.<nonce>.<ciphertext>` (base64url parts). The associated data binds it
to its app and key id, so a sealed row copied to another app or key fails to open. Several KEKs may be
configured: the first seals, every one opens, and `authsvc keys reencrypt` re-seals everything under the
first. A KEK's id is derived from the key itself (first 8 bytes of its SHA-256), so no naming is needed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from authsvc.errors import ConfigError

_VERSION = "v1"
KEK_BYTES = 32


class SealError(Exception):
    """A sealed value cannot be opened: unknown KEK, tampered, or bound to another app or key."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def kek_id(key: bytes) -> str:
    """The id of a KEK: the hex of the first 8 bytes of its SHA-256."""
    return hashlib.sha256(key).hexdigest()[:16]


def parse_kek(text: str) -> bytes:
    """A KEK from its base64 (or base64url) text; it must decode to 32 bytes."""
    value = text.strip()
    try:
        key = base64.b64decode(
            value + "=" * (-len(value) % 4), altchars=b"-_" if "-" in value or "_" in value else None
        )
    except (binascii.Error, ValueError):
        raise ConfigError("a key-encryption key is not valid base64") from None
    if len(key) != KEK_BYTES:
        raise ConfigError(f"a key-encryption key must be {KEK_BYTES} bytes (base64 of 32 random bytes), not {len(key)}")
    return key


def new_kek_text() -> str:
    """A fresh KEK, as base64 text (what `authsvc keys new-kek` prints)."""
    return base64.b64encode(secrets.token_bytes(KEK_BYTES)).decode()


@dataclass(frozen=True)
class Keyring:
    """The configured KEKs: the first seals, all open."""

    keys: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if not self.keys:
            raise ConfigError("no key-encryption key configured")

    @property
    def primary_id(self) -> str:
        """The id of the KEK that seals."""
        return kek_id(self.keys[0])

    def seal(self, plaintext: str, *, app: str, key_id: str) -> str:
        """Seals `plaintext` for one app's key."""
        nonce = os.urandom(12)
        ciphertext = AESGCM(self.keys[0]).encrypt(nonce, plaintext.encode(), _aad(app, key_id))
        return ".".join((_VERSION, self.primary_id, _b64(nonce), _b64(ciphertext)))

    def open(self, sealed: str, *, app: str, key_id: str) -> str:
        """Opens a value sealed for this app's key; raises SealError otherwise."""
        parts = sealed.split(".")
        if len(parts) != 4 or parts[0] != _VERSION:
            raise SealError("not a sealed value")
        key = next((k for k in self.keys if kek_id(k) == parts[1]), None)
        if key is None:
            raise SealError(f"sealed under key-encryption key {parts[1]}, which is not configured")
        try:
            return AESGCM(key).decrypt(_unb64(parts[2]), _unb64(parts[3]), _aad(app, key_id)).decode()
        except (InvalidTag, binascii.Error, ValueError):
            raise SealError("the sealed value does not open for this app and key (tampered or moved)") from None

    def sealed_by_primary(self, sealed: str) -> bool:
        """True when `sealed` is already under the first KEK."""
        parts = sealed.split(".")
        return len(parts) == 4 and parts[1] == self.primary_id


def _aad(app: str, key_id: str) -> bytes:
    return f"authsvc/{app}/{key_id}".encode()


def keyring_from(kek_text: str | None, kek_file: Path | None) -> Keyring | None:
    """The keyring from AUTHSVC_KEK (comma-separated) and AUTHSVC_KEK_FILE (one per line), or None if neither."""
    texts: list[str] = []
    if kek_text:
        texts += [t for t in kek_text.split(",") if t.strip()]
    if kek_file is not None:
        try:
            lines = kek_file.read_text().splitlines()
        except OSError as exc:
            raise ConfigError(f"cannot read AUTHSVC_KEK_FILE {kek_file}: {exc.strerror}") from None
        texts += [line for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not texts:
        return None
    return Keyring(tuple(parse_kek(text) for text in texts))


def generated_keyring(data_dir: Path) -> tuple[Keyring, bool]:
    """The KEK kept in `<data_dir>/kek` for the embedded database, made on first use; True when just made."""
    path = data_dir / "kek"
    created = False
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process (the CLI beside the server) made it first
        else:
            with os.fdopen(fd, "w") as out:
                out.write(new_kek_text() + "\n")
            created = True
    keyring = keyring_from(None, path)
    assert keyring is not None
    return keyring, created
