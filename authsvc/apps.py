"""Managing apps (tenants): creating and changing them, rotating and retiring their keys, showing them without
secrets."""

from __future__ import annotations

import enum
import logging
import secrets
import string
from dataclasses import dataclass
from typing import Any, Final

from cryptography.hazmat.primitives import serialization

from authsvc import keys
from authsvc.audit import SYSTEM, Actor
from authsvc.clock import MICROS_PER_SECOND, Micros, iso, system_clock
from authsvc.errors import InvalidArgument, NotFound
from authsvc.store import Store
from authsvc.tokens import DEFAULT_GUEST_TOKEN_TTL_SECONDS, HS256, App

ALGORITHMS = (HS256, *keys.ASYMMETRIC_ALGORITHMS)
"""Signing algorithms an app may use."""

_KEY_ALPHABET = string.ascii_lowercase + string.digits

log = logging.getLogger(__name__)


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
    api_secret: str | None = None,
    guest_access: bool = False,
    guest_token_ttl_seconds: int | None = None,
    anonymous_access: bool = False,
    actor: Actor = SYSTEM,
) -> App:
    """Creates an app with a fresh API key, key ids and keys.

    `api_secret` imports an existing secret (say, a chat vendor's), so tokens already minted with it verify;
    it must be long and random.
    """
    if api_secret is not None:
        check_imported_secret(api_secret)
    name = _checked_name(name)
    _check_algorithm(algorithm)
    _check_lifetimes(token_ttl_seconds, max_token_lifetime_seconds)
    guest_ttl = DEFAULT_GUEST_TOKEN_TTL_SECONDS if guest_token_ttl_seconds is None else guest_token_ttl_seconds
    _check_guest_ttl(guest_ttl)
    return await store.create_app(
        api_key=new_api_key(),
        name=name,
        api_secret=api_secret or new_api_secret(),
        key_id=new_key_id(),
        algorithm=algorithm,
        token_ttl_seconds=token_ttl_seconds,
        auth_checks_disabled=auth_checks_disabled,
        require_iat=require_iat,
        max_token_lifetime_seconds=max_token_lifetime_seconds,
        key_pair=(new_key_id(), keys.generate(algorithm)) if algorithm in keys.ASYMMETRIC_ALGORITHMS else None,
        guest_access=guest_access,
        guest_token_ttl_seconds=guest_ttl,
        anonymous_access=anonymous_access,
        actor=actor,
    )


class Unchanged(enum.Enum):
    """The type of UNCHANGED."""

    TOKEN = 0


UNCHANGED: Final = Unchanged.TOKEN
"""For update_app: leave this setting as it is (None would clear it)."""


async def update_app(
    store: Store,
    app: App,
    *,
    name: str | None = None,
    algorithm: str | None = None,
    token_ttl_seconds: int | None | Unchanged = UNCHANGED,
    max_token_lifetime_seconds: int | None | Unchanged = UNCHANGED,
    auth_checks_disabled: bool | None = None,
    require_iat: bool | None = None,
    guest_access: bool | None = None,
    guest_token_ttl_seconds: int | None = None,
    anonymous_access: bool | None = None,
    actor: Actor,
) -> tuple[App, int | None]:
    """Changes some settings of an app; None (UNCHANGED for the lifetimes, where None clears) keeps a setting.

    A new algorithm takes effect at once: EdDSA and ES256 get a fresh key pair that signs from now, and the key
    pairs of the old algorithm are retired, so its tokens stop verifying. Returns the app as it now is and the
    state version of the change (None when every setting already had the value asked for).
    """
    requested: dict[str, Any] = {}
    if name is not None:
        requested["name"] = _checked_name(name)
    if algorithm is not None:
        requested["algorithm"] = _check_algorithm(algorithm)
    if token_ttl_seconds is not UNCHANGED:
        requested["token_ttl_seconds"] = token_ttl_seconds
    if max_token_lifetime_seconds is not UNCHANGED:
        requested["max_token_lifetime_seconds"] = max_token_lifetime_seconds
    if auth_checks_disabled is not None:
        requested["auth_checks_disabled"] = auth_checks_disabled
    if require_iat is not None:
        requested["require_iat"] = require_iat
    if guest_access is not None:
        requested["guest_access"] = guest_access
    if guest_token_ttl_seconds is not None:
        requested["guest_token_ttl_seconds"] = _check_guest_ttl(guest_token_ttl_seconds)
    if anonymous_access is not None:
        requested["anonymous_access"] = anonymous_access
    if not requested:
        raise InvalidArgument("nothing to change: give at least one setting", "NO_CHANGES")
    _check_lifetimes(
        requested.get("token_ttl_seconds", app.token_ttl_seconds),
        requested.get("max_token_lifetime_seconds", app.max_token_lifetime_seconds),
    )
    changes = {field: value for field, value in requested.items() if getattr(app, field) != value}
    if not changes:
        return app, None
    new_algorithm = changes.get("algorithm")
    key_pair = (new_key_id(), keys.generate(new_algorithm)) if new_algorithm in keys.ASYMMETRIC_ALGORITHMS else None
    updated, version = await store.update_app(app, changes, key_pair=key_pair, actor=actor)
    if changes.get("auth_checks_disabled"):
        log.warning("app %s (%s) now has auth checks disabled: it accepts developer tokens", app.api_key, app.name)
    return updated, version


def _checked_name(name: str) -> str:
    if not name.strip() or len(name) > 200:
        raise InvalidArgument("the app name must be 1 to 200 characters", "INVALID_APP_NAME")
    return name.strip()


def _check_algorithm(algorithm: str) -> str:
    if algorithm not in ALGORITHMS:
        raise InvalidArgument(
            f"algorithm {algorithm!r} is not supported; use one of {', '.join(ALGORITHMS)}",
            "INVALID_ALGORITHM",
        )
    return algorithm


def _check_guest_ttl(seconds: int) -> int:
    if seconds < 1:
        raise InvalidArgument("the guest token lifetime must be at least one second", "INVALID_TTL")
    return seconds


def _check_lifetimes(token_ttl_seconds: int | None, max_token_lifetime_seconds: int | None) -> None:
    if token_ttl_seconds is not None and token_ttl_seconds < 1:
        raise InvalidArgument("the token lifetime must be at least one second", "INVALID_TTL")
    if max_token_lifetime_seconds is not None:
        if max_token_lifetime_seconds < 1:
            raise InvalidArgument("the maximum token lifetime must be at least one second", "INVALID_TTL")
        if token_ttl_seconds is not None and token_ttl_seconds > max_token_lifetime_seconds:
            raise InvalidArgument("the default token lifetime exceeds the maximum", "INVALID_TTL")


_WEAK_SECRETS = ("secret", "password", "changeme", "change-me", "default", "example", "test", "qwerty", "letmein")
MIN_SECRET_LENGTH = 32


def check_imported_secret(secret: str) -> None:
    """Refuses an imported API secret that is short, well known or visibly not random."""
    if len(secret) < MIN_SECRET_LENGTH:
        raise InvalidArgument(
            f"the API secret is {len(secret)} characters; at least {MIN_SECRET_LENGTH} random ones are needed",
            "WEAK_SECRET",
        )
    lowered = secret.lower()
    if any(word in lowered for word in _WEAK_SECRETS) or len(set(secret)) < 16 or not secret.isprintable():
        raise InvalidArgument(
            "the API secret looks well known or not random; generate one (e.g. 32 random bytes, base64)",
            "WEAK_SECRET",
        )
    if any(secret[i:].startswith(secret[i : i + 4] * 3) for i in range(len(secret) - 11)):
        raise InvalidArgument("the API secret repeats a pattern; generate a random one", "WEAK_SECRET")


async def rotate_api_secret(
    store: Store, app: App, *, overlap_seconds: float, actor: Actor, new_secret: str | None = None
) -> tuple[str, str, int]:
    """Gives the app a new current API secret; the old ones keep working for `overlap_seconds`.

    Returns the new secret's kid, the secret (shown once) and the state version.
    """
    if overlap_seconds < 0:
        raise InvalidArgument("the overlap must not be negative", "INVALID_OVERLAP")
    if new_secret is not None:
        check_imported_secret(new_secret)
    key_id, secret = new_key_id(), new_secret or new_api_secret()
    version = await store.rotate_secret(
        app, new_key_id=key_id, new_secret=secret, overlap=round(overlap_seconds * MICROS_PER_SECOND), actor=actor
    )
    return key_id, secret, version


async def rotate_key(
    store: Store, app: App, *, delay_seconds: float, now: Micros, actor: Actor
) -> tuple[str, Micros, int]:
    """Publishes a new key pair for an EdDSA/ES256 app at once; it signs after `delay_seconds`.

    Returns its kid, when it starts signing, and the state version.
    """
    if app.algorithm not in keys.ASYMMETRIC_ALGORITHMS:
        raise InvalidArgument(
            "HS256 apps sign with their API secret: rotate the API secret instead", "NOT_AN_ASYMMETRIC_APP"
        )
    if delay_seconds < 0:
        raise InvalidArgument("the delay must not be negative", "INVALID_DELAY")
    key_id = new_key_id()
    signs_from = now + round(delay_seconds * MICROS_PER_SECOND)
    version = await store.add_key_pair(
        app, key_id=key_id, private_pem=keys.generate(app.algorithm), signs_from=signs_from, actor=actor
    )
    return key_id, signs_from, version


async def retire_key(store: Store, app: App, key_id: str, *, now: Micros, actor: Actor) -> int:
    """Stops a key verifying. The current API secret and the last signing key pair cannot be retired."""
    if key_id == app.secrets[0].key_id:
        raise InvalidArgument("this is the current API secret: rotate it first", "KEY_IN_USE")
    pairs = [pair for pair in app.key_pairs if pair.key_id != key_id]
    if app.key_pairs and len(pairs) == len(app.key_pairs) - 1 and not any(p.signs_from <= now for p in pairs):
        raise InvalidArgument(
            "this key pair is the only one signing now: rotate in another and let it start signing first",
            "KEY_IN_USE",
        )
    version = await store.retire_key(app, key_id, actor=actor)
    if version is None:
        raise NotFound(f"the app has no live key {key_id!r}", "KEY_NOT_FOUND")
    return version


@dataclass(frozen=True, slots=True)
class KeyView:
    """One live key of an app, as operators see it: never the secret or the private key."""

    key_id: str
    kind: str
    """`api_secret` or `key_pair`."""
    algorithm: str
    expires_at: Micros | None = None
    """An API secret rotated out: when it stops working."""
    signs_from: Micros | None = None
    """A key pair: when it starts signing (published, and verifying, before)."""


@dataclass(frozen=True, slots=True)
class AppView:
    """An app as operators see it, at a time: what both `authsvc apps show` and AdminService.GetApp print, so the
    two cannot disagree (during a key rotation, `key_id` is the key that signs now, not the newest)."""

    api_key: str
    name: str
    algorithm: str
    key_id: str
    """The key that signs tokens issued now."""
    keys: tuple[KeyView, ...]
    """Every live key: API secrets current first, then key pairs newest first."""
    token_ttl_seconds: int | None
    max_token_lifetime_seconds: int | None
    auth_checks_disabled: bool
    require_iat: bool
    revoked_before: Micros | None
    created_at: Micros
    public_key: str | None
    """PEM of the signing key pair's public key (EdDSA and ES256 apps)."""
    guest_access: bool
    guest_token_ttl_seconds: int
    anonymous_access: bool


def view(app: App, now: Micros) -> AppView:
    """The app as operators see it at `now`."""
    key_id, _ = app.signer(now)
    signing = next((pair for pair in app.key_pairs if pair.key_id == key_id), None)
    return AppView(
        api_key=app.api_key,
        name=app.name,
        algorithm=app.algorithm,
        key_id=key_id,
        keys=tuple(KeyView(s.key_id, "api_secret", HS256, expires_at=s.expires_at) for s in app.secrets)
        + tuple(KeyView(p.key_id, "key_pair", p.key.algorithm, signs_from=p.signs_from) for p in app.key_pairs),
        token_ttl_seconds=app.token_ttl_seconds,
        max_token_lifetime_seconds=app.max_token_lifetime_seconds,
        auth_checks_disabled=app.auth_checks_disabled,
        require_iat=app.require_iat,
        revoked_before=app.revoked_before,
        created_at=app.created_at,
        public_key=None
        if signing is None
        else signing.key.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode(),
        guest_access=app.guest_access,
        guest_token_ttl_seconds=app.guest_token_ttl_seconds,
        anonymous_access=app.anonymous_access,
    )


def describe(app: App, *, with_secret: bool = False, now: Micros | None = None) -> dict[str, Any]:
    """The app as JSON-ready values (view at `now`, default the system clock); the API secret only when asked
    (at creation)."""
    shown = view(app, system_clock() if now is None else now)
    result: dict[str, Any] = {
        "api_key": shown.api_key,
        "name": shown.name,
        "algorithm": shown.algorithm,
        "key_id": shown.key_id,
        "keys": [
            {"key_id": k.key_id, "kind": k.kind, "expires_at": iso(k.expires_at)}
            if k.kind == "api_secret"
            else {"key_id": k.key_id, "kind": k.kind, "algorithm": k.algorithm, "signs_from": iso(k.signs_from)}
            for k in shown.keys
        ],
        "token_ttl_seconds": shown.token_ttl_seconds,
        "auth_checks_disabled": shown.auth_checks_disabled,
        "require_iat": shown.require_iat,
        "max_token_lifetime_seconds": shown.max_token_lifetime_seconds,
        "guest_access": shown.guest_access,
        "guest_token_ttl_seconds": shown.guest_token_ttl_seconds,
        "anonymous_access": shown.anonymous_access,
        "revoked_before": iso(shown.revoked_before),
        "created_at": iso(shown.created_at),
    }
    if shown.public_key is not None:
        result["public_key"] = shown.public_key
    if with_secret:
        result["api_secret"] = app.api_secret
    return result
