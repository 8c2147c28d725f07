"""Managing apps (tenants): creating them with fresh credentials, and showing them without secrets."""

from __future__ import annotations

import secrets
import string
from typing import Any

from cryptography.hazmat.primitives import serialization

from authsvc import keys
from authsvc.clock import to_datetime
from authsvc.errors import InvalidArgument
from authsvc.store import Store
from authsvc.tokens import HS256, App

ALGORITHMS = (HS256, *keys.ASYMMETRIC_ALGORITHMS)
"""Signing algorithms an app may use."""

_KEY_ALPHABET = string.ascii_lowercase + string.digits


def new_api_key() -> str:
    """A fresh public API key: 20 random lowercase letters and digits."""
    return "".join(secrets.choice(_KEY_ALPHABET) for _ in range(20))


def new_api_secret() -> str:
    """A fresh API secret: 256 random bits, base64url."""
    return secrets.token_urlsafe(32)


def new_key_id() -> str:
    """A fresh `kid` for a signing key."""
    return "k" + secrets.token_hex(8)


async def create_app(
    store: Store,
    name: str,
    *,
    algorithm: str = HS256,
    token_ttl_seconds: int | None = None,
    auth_checks_disabled: bool = False,
    require_iat: bool = False,
    max_token_lifetime_seconds: int | None = None,
) -> App:
    """Creates an app with a fresh API key, API secret and key id."""
    if not name.strip() or len(name) > 200:
        raise InvalidArgument("the app name must be 1 to 200 characters", "INVALID_APP_NAME")
    if algorithm not in ALGORITHMS:
        raise InvalidArgument(
            f"algorithm {algorithm!r} is not supported; use one of {', '.join(ALGORITHMS)}",
            "INVALID_ALGORITHM",
        )
    if token_ttl_seconds is not None and token_ttl_seconds < 1:
        raise InvalidArgument("the token lifetime must be at least one second", "INVALID_TTL")
    if max_token_lifetime_seconds is not None:
        if max_token_lifetime_seconds < 1:
            raise InvalidArgument("the maximum token lifetime must be at least one second", "INVALID_TTL")
        if token_ttl_seconds is not None and token_ttl_seconds > max_token_lifetime_seconds:
            raise InvalidArgument("the default token lifetime exceeds the maximum", "INVALID_TTL")
    return await store.create_app(
        api_key=new_api_key(),
        name=name.strip(),
        api_secret=new_api_secret(),
        key_id=new_key_id(),
        algorithm=algorithm,
        token_ttl_seconds=token_ttl_seconds,
        auth_checks_disabled=auth_checks_disabled,
        require_iat=require_iat,
        max_token_lifetime_seconds=max_token_lifetime_seconds,
        private_key=keys.generate(algorithm) if algorithm in keys.ASYMMETRIC_ALGORITHMS else None,
    )


def describe(app: App, *, with_secret: bool = False) -> dict[str, Any]:
    """The app as JSON-ready values; the API secret only when asked (at creation)."""
    result: dict[str, Any] = {
        "api_key": app.api_key,
        "name": app.name,
        "algorithm": app.algorithm,
        "key_id": app.key_id,
        "token_ttl_seconds": app.token_ttl_seconds,
        "auth_checks_disabled": app.auth_checks_disabled,
        "require_iat": app.require_iat,
        "max_token_lifetime_seconds": app.max_token_lifetime_seconds,
        "revoked_before": None if app.revoked_before is None else to_datetime(app.revoked_before).isoformat(),
        "created_at": to_datetime(app.created_at).isoformat(),
    }
    if app.signing_key is not None:
        result["public_key"] = app.signing_key.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()
    if with_secret:
        result["api_secret"] = app.api_secret
    return result
