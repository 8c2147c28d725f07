"""TLS on the gRPC port: server credentials from the AUTHSVC_TLS_* files, checked before the port opens.

Every problem with the files (unreadable, not PEM, a key that is not the certificate's) is a ConfigError naming
the setting and the file, so that `authsvc serve` fails with one line rather than a handshake error per client.
The private key is read and handed to gRPC; it is never logged or put in a message.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from authsvc.config import Settings
from authsvc.errors import ConfigError

log = logging.getLogger(__name__)

PLAINTEXT = "plaintext"
TLS = "TLS"
MUTUAL_TLS = "mutual TLS"


def transport(settings: Settings) -> str:
    """What the gRPC port speaks with these settings: `plaintext`, `TLS` or `mutual TLS`."""
    if settings.tls_cert_file is None:
        return PLAINTEXT
    return MUTUAL_TLS if settings.tls_client_ca_file is not None else TLS


def describe(settings: Settings) -> str:
    """What the gRPC port speaks, and from which files, for the start-up log (file names only, never a key)."""
    mode = transport(settings)
    if mode == PLAINTEXT:
        return mode
    text = f"{mode}, certificate {settings.tls_cert_file}"
    if mode == MUTUAL_TLS:
        text += f", client certificates required, signed by a CA in {settings.tls_client_ca_file}"
    return text


def check(settings: Settings) -> None:
    """Raises ConfigError, as `server_credentials` would, when the TLS settings or files are wrong."""
    _load(settings)


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """The credentials of a TLS port (mutual TLS with a client CA), or None for plaintext.

    Raises ConfigError when the files are not set together, cannot be read, are not PEM of the right kind, or
    when the key is not the one of the (first) certificate. Warns when the certificate is expired or not yet
    valid: clients will refuse it, but that is for the operator to fix, not a reason to stay down.
    """
    loaded = _load(settings)
    if loaded is None:
        return None
    credentials, certificate = loaded
    now = datetime.now(UTC)
    if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
        log.warning(
            "the TLS certificate in %s is not valid now (valid from %s to %s): clients will refuse it",
            settings.tls_cert_file,
            certificate.not_valid_before_utc.isoformat(),
            certificate.not_valid_after_utc.isoformat(),
        )
    return credentials


def _load(settings: Settings) -> tuple[grpc.ServerCredentials, x509.Certificate] | None:
    settings.check_tls()
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    cert_pem = _read(settings.tls_cert_file, "AUTHSVC_TLS_CERT_FILE")
    certificate = _certificates(cert_pem, settings.tls_cert_file, "AUTHSVC_TLS_CERT_FILE")[0]
    key_pem = _read(settings.tls_key_file, "AUTHSVC_TLS_KEY_FILE")
    _check_key(key_pem, settings.tls_key_file, certificate, settings.tls_cert_file)
    client_ca: bytes | None = None
    if settings.tls_client_ca_file is not None:
        client_ca = _read(settings.tls_client_ca_file, "AUTHSVC_TLS_CLIENT_CA_FILE")
        _certificates(client_ca, settings.tls_client_ca_file, "AUTHSVC_TLS_CLIENT_CA_FILE")
    credentials = grpc.ssl_server_credentials(
        [(key_pem, cert_pem)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )
    return credentials, certificate


def _read(path: Path, setting: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{setting}: cannot read {path}: {exc.strerror or exc}") from None


def _certificates(pem: bytes, path: Path, setting: str) -> list[x509.Certificate]:
    try:
        certificates = x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise ConfigError(f"{setting}: {path} holds no valid PEM certificate") from None
    return certificates


def _check_key(pem: bytes, path: Path, certificate: x509.Certificate, cert_path: Path) -> None:
    setting = "AUTHSVC_TLS_KEY_FILE"
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except TypeError:
        raise ConfigError(f"{setting}: the key in {path} is encrypted; give authsvc an unencrypted key") from None
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(f"{setting}: {path} holds no valid PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        # gRPC's TLS stack (BoringSSL) has no signature algorithm in common with its clients for the others
        # (Ed25519 included): every handshake would fail.
        raise ConfigError(f"{setting}: the key in {path} is not an RSA or ECDSA key, as gRPC's TLS needs")
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*spki) != certificate.public_key().public_bytes(*spki):
        raise ConfigError(f"{setting}: the key in {path} is not the key of the certificate in {cert_path}")
