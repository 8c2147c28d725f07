"""The token model of authsvc (see shared/TOKEN_MODEL.md) as pure functions: no I/O, no gRPC.

Everything takes plain values (a token string, the app, a `now` in microseconds, the revocation times)
and returns plain values, so every rule is testable exactly and fast.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from authsvc import jws, keys
from authsvc.clock import MICROS_PER_SECOND, Micros, micros_to_seconds, seconds_to_micros
from authsvc.errors import FailedPrecondition, InvalidArgument

USER_ID_PATTERN = re.compile(r"[A-Za-z0-9@_-]{1,255}")
"""What a user id may be: 1 to 255 letters, digits, `@`, `_` and `-`."""

RESERVED_CLAIMS = frozenset({"user_id", "iat", "exp", "nbf", "aud", "iss", "sub", "jti", "server"})
"""Claims a caller's extra claims can never set: the registered ones, and `server`."""

MAX_CLAIMS_BYTES = 4096
"""The largest JSON encoding of a caller's extra claims."""

MAX_NUMERIC_DATE = jws.MAX_NUMERIC_DATE
"""The last second of the year 9999: no expiry may lie beyond it."""

DEV_SIGNATURE = "devtoken"
"""The signature part of a developer token, accepted only by apps with auth checks disabled."""

HS256 = "HS256"

GUEST_PREFIX = "guest-"
"""The guest namespace: a user id starting with it is a guest's (IssueGuestToken), which IssueToken refuses."""

DEFAULT_GUEST_TOKEN_TTL_SECONDS = 86_400
"""An app's guest token lifetime unless its settings say otherwise: 24 hours."""

MAX_GUEST_NAME_LENGTH = 255
"""The longest display name a guest token carries (claim `name`)."""


class _Enum(enum.Enum):
    """An Enum whose members hash by identity, in C, rather than by name through a Python call (Enum.__hash__, about
    0.3 µs): the verdict's enums are dict keys on the path of every verification. Members are singletons that
    compare by identity, so equal members still hash alike."""

    __hash__ = object.__hash__


class Outcome(_Enum):
    """The verdict of a verification; the values mirror authsvc.v1.VerifyOutcome."""

    VALID = 1
    MALFORMED = 2
    INVALID_SIGNATURE = 3
    UNKNOWN_KEY = 4
    EXPIRED = 5
    NOT_YET_VALID = 6
    WRONG_AUDIENCE = 7
    REVOKED = 8
    ANONYMOUS_DISABLED = 10
    """An empty token (an anonymous user) for an app whose `anonymous_access` is off."""


class Role(_Enum):
    """Who a verified token speaks for; the values mirror authsvc.v1.Role."""

    UNSPECIFIED = 0
    """No user id could be read."""
    USER = 1
    GUEST = 2
    """A user id in the guest namespace (GUEST_PREFIX)."""
    ANONYMOUS = 3
    """No token at all, for an app that allows anonymous users."""


def role_of(user_id: str) -> Role:
    """The role a user id speaks for: its namespace decides (UNSPECIFIED for no user id)."""
    if not user_id:
        return Role.UNSPECIFIED
    return Role.GUEST if user_id.startswith(GUEST_PREFIX) else Role.USER


class RevocationScope(_Enum):
    """Which revocation rejected a REVOKED token; the values mirror authsvc.v1.RevocationScope."""

    APP = 1
    """RevokeApp, or the app's require_iat refusing a token without iat."""
    USER = 2
    TOKEN = 3


class ClientAction(_Enum):
    """What a chat client should do with a token that was not accepted; the values mirror authsvc.v1.ClientAction."""

    REFRESH = 1
    """Fetch a new token from the token provider and retry."""
    LOGOUT = 2
    """The token will never be accepted: log the user out."""
    RETRY_LATER = 3
    """The same token may be accepted later."""


CLIENT_ACTIONS: Mapping[Outcome, ClientAction] = {
    Outcome.EXPIRED: ClientAction.REFRESH,
    Outcome.NOT_YET_VALID: ClientAction.RETRY_LATER,
    Outcome.REVOKED: ClientAction.LOGOUT,
    Outcome.INVALID_SIGNATURE: ClientAction.LOGOUT,
    Outcome.UNKNOWN_KEY: ClientAction.LOGOUT,
    Outcome.WRONG_AUDIENCE: ClientAction.LOGOUT,
    Outcome.MALFORMED: ClientAction.LOGOUT,
    # No token, and the app admits no anonymous users: the client must sign in (the login screen, as after a logout).
    Outcome.ANONYMOUS_DISABLED: ClientAction.LOGOUT,
}
"""The client action of every outcome but VALID: the one place that decides it."""


@dataclass(frozen=True, slots=True)
class Secret:
    """An API secret: it authenticates the app's backend and, for HS256 apps, signs user tokens."""

    key_id: str
    value: str
    expires_at: Micros | None = None
    """Set once the secret is rotated out: it stays valid until then (the overlap window)."""
    _pads: tuple[Any, Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_pads", _hmac_pads(self.value.encode()))

    def active(self, now: Micros) -> bool:
        """True while the secret is valid."""
        return self.expires_at is None or now < self.expires_at

    def signed(self, signing_input: bytes, signature: bytes) -> bool:
        """True when `signature` is this secret's HS256 (HMAC-SHA256) of `signing_input`; constant-time compare."""
        # RFC 2104 over SHA-256 states keyed once per secret: half the cost of hmac.new/hmac.digest per token,
        # which re-derive the padded keys every time. tests/test_tokens.py checks it against hmac.digest.
        inner_start, outer_start = self._pads
        inner = inner_start.copy()
        inner.update(signing_input)
        outer = outer_start.copy()
        outer.update(inner.digest())
        return hmac.compare_digest(outer.digest(), signature)


_IPAD = bytes(byte ^ 0x36 for byte in range(256))
_OPAD = bytes(byte ^ 0x5C for byte in range(256))
_SHA256_BLOCK = 64


def _hmac_pads(key: bytes) -> tuple[Any, Any]:
    """SHA-256 states that have absorbed the HMAC inner and outer padded keys (RFC 2104)."""
    if len(key) > _SHA256_BLOCK:
        key = hashlib.sha256(key).digest()
    padded = key.ljust(_SHA256_BLOCK, b"\0")
    return hashlib.sha256(padded.translate(_IPAD)), hashlib.sha256(padded.translate(_OPAD))


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A key pair of an EdDSA or ES256 app: published (and verifying) at once, signing from `signs_from`."""

    key_id: str
    key: keys.SigningKey
    signs_from: Micros = 0


@dataclass(frozen=True, slots=True)
class App:
    """What the token rules need to know of an app (a tenant)."""

    id: int
    api_key: str
    name: str
    secrets: tuple[Secret, ...]
    """The API secrets that are not retired, the current one first."""
    algorithm: str = HS256
    key_pairs: tuple[KeyPair, ...] = ()
    """For EdDSA and ES256 apps: the key pairs that are not retired, newest first."""
    token_ttl_seconds: int | None = None
    auth_checks_disabled: bool = False
    require_iat: bool = False
    revoked_before: Micros | None = None
    created_at: Micros = 0
    max_token_lifetime_seconds: int | None = None
    guest_access: bool = False
    """IssueGuestToken mints guest tokens."""
    guest_token_ttl_seconds: int = DEFAULT_GUEST_TOKEN_TTL_SECONDS
    """How long a guest token lives after its `iat`, at most: it bounds verification too."""
    anonymous_access: bool = False
    """An empty token verifies as an anonymous user."""
    _secrets_expire: bool = field(init=False, repr=False, compare=False)
    _secrets_by_kid: dict[str, tuple[Secret, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Only a secret rotated out has an expiry: without one, every secret verifies at any time (hot path).
        object.__setattr__(self, "_secrets_expire", any(secret.expires_at is not None for secret in self.secrets))
        by_kid: dict[str, tuple[Secret, ...]] = {}
        for secret in self.secrets:
            by_kid[secret.key_id] = (*by_kid.get(secret.key_id, ()), secret)
        object.__setattr__(self, "_secrets_by_kid", by_kid)

    @property
    def api_secret(self) -> str:
        """The current API secret."""
        return self.secrets[0].value

    def jwks(self) -> list[dict[str, str]]:
        """The app's public keys as a JSON Web Key Set's `keys` (empty for HS256: secrets are never published)."""
        return [keys.jwk(pair.key, pair.key_id) for pair in self.key_pairs]

    def active_secrets(self, now: Micros) -> Sequence[Secret]:
        """The API secrets valid at `now`, the current one first."""
        if not self._secrets_expire:
            return self.secrets
        return [secret for secret in self.secrets if secret.active(now)]

    def signer(self, now: Micros) -> tuple[str, Any]:
        """The kid and key that sign tokens issued at `now`.

        A rotated-in key pair signs only from its `signs_from`, so verifiers that cache key sets learn it first.
        """
        if not self.key_pairs:
            return self.secrets[0].key_id, self.secrets[0].value
        for pair in self.key_pairs:
            if pair.signs_from <= now:
                return pair.key_id, pair.key.private_key
        oldest = self.key_pairs[-1]
        return oldest.key_id, oldest.key.private_key

    def verifying_keys(self, kid: str | None, now: Micros) -> Sequence[Secret] | Sequence[KeyPair]:
        """The keys that may have signed a token with this `kid` header (None: every key)."""
        if self.key_pairs or self.algorithm != HS256:
            pairs = self.key_pairs
            return pairs if kid is None else [pair for pair in pairs if pair.key_id == kid]
        if kid is not None and not self._secrets_expire:
            return self._secrets_by_kid.get(kid, ())  # the usual case, looked up rather than filtered (hot path)
        secrets = self.active_secrets(now)
        return secrets if kid is None else [secret for secret in secrets if secret.key_id == kid]


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A freshly minted user token and the facts a caller needs about it."""

    token: str
    issued_at: Micros
    expires_at: Micros | None
    key_id: str
    user_id: str = ""


@dataclass(slots=True)  # not frozen: that costs a microsecond a token on the hot path; treat it as read-only
class Verification:
    """The answer to a verification: the outcome and, once the signature checked out, what the token says."""

    outcome: Outcome
    user_id: str = ""
    issued_at: Micros | None = None
    expires_at: Micros | None = None
    claims: Mapping[str, Any] = field(default_factory=dict)
    dev_token: bool = False
    revoked_by: RevocationScope | None = None
    """For REVOKED: which revocation decided (the app's, then the user's, then the token's, in that order)."""
    revoked_before: Micros | None = None
    """For REVOKED: the deciding revocation's time (None for require_iat refusing a token without iat)."""
    valid_from: Micros | None = None
    """For NOT_YET_VALID: the later of the token's nbf and iat."""
    role: Role = Role.UNSPECIFIED
    """Whose token it is: a user, a guest, or (an empty token) an anonymous user."""

    @property
    def valid(self) -> bool:
        """True exactly when the token is valid."""
        return self.outcome is Outcome.VALID

    @property
    def client_action(self) -> ClientAction | None:
        """What the chat client should do (None for VALID)."""
        return CLIENT_ACTIONS.get(self.outcome)


def validate_user_id(user_id: str) -> str:
    """Returns the user id, or raises InvalidArgument saying what is wrong with it."""
    if not user_id:
        raise InvalidArgument("user_id is empty; give 1 to 255 characters", "INVALID_USER_ID")
    if len(user_id) > 255:
        raise InvalidArgument(f"user_id is {len(user_id)} characters long; at most 255 are allowed", "INVALID_USER_ID")
    if not USER_ID_PATTERN.fullmatch(user_id):
        raise InvalidArgument("user_id may contain only letters, digits, '@', '_' and '-'", "INVALID_USER_ID")
    return user_id


def issue(
    app: App,
    user_id: str,
    *,
    now: Micros,
    issuer: str,
    jti: str,
    expires_at: Micros | None = None,
    ttl: Micros | None = None,
    claims: Mapping[str, Any] | None = None,
    guest: bool = False,
) -> IssuedToken:
    """Mints a user token for `user_id` of `app`, issued at `now`.

    The expiry is `expires_at`, else `now + ttl`, else the app's default lifetime, else its maximum lifetime,
    else none. A user id in the guest namespace is refused unless `guest` (issue_guest) says it is one.
    """
    validate_user_id(user_id)
    if not guest and user_id.startswith(GUEST_PREFIX):
        raise InvalidArgument(
            f"user ids starting {GUEST_PREFIX!r} are reserved for guests (IssueGuestToken); choose another",
            "RESERVED_USER_ID",
        )
    extra = _checked_claims(claims or {})
    if expires_at is not None and ttl is not None:
        raise InvalidArgument("give expires_at or ttl, not both", "CONFLICTING_EXPIRY")
    if ttl is not None:
        if ttl <= 0:
            raise InvalidArgument("ttl must be positive", "INVALID_TTL")
        expires_at = now + ttl
    elif expires_at is None and app.token_ttl_seconds is not None:
        expires_at = now + app.token_ttl_seconds * MICROS_PER_SECOND
    if app.max_token_lifetime_seconds is not None:
        longest = now + app.max_token_lifetime_seconds * MICROS_PER_SECOND
        if expires_at is None:
            expires_at = longest
        elif expires_at > longest:
            raise InvalidArgument(
                f"this app's tokens live at most {app.max_token_lifetime_seconds}s; ask for a shorter lifetime",
                "LIFETIME_TOO_LONG",
            )
    if expires_at is not None:
        if expires_at <= now:
            raise InvalidArgument("expires_at is in the past; give a time in the future", "EXPIRY_IN_PAST")
        if expires_at > MAX_NUMERIC_DATE * MICROS_PER_SECOND:
            raise InvalidArgument("expires_at is beyond the year 9999", "EXPIRY_TOO_FAR")

    payload: dict[str, Any] = dict(extra)
    payload.update(user_id=user_id, iat=micros_to_seconds(now), aud=app.api_key, iss=issuer, jti=jti)
    if expires_at is not None:
        payload["exp"] = micros_to_seconds(expires_at)
    key_id, signer = app.signer(now)
    import jwt  # PyJWT is the server's (the extra `server`): the client install verifies, it never mints

    token = jwt.encode(payload, signer, algorithm=app.algorithm, headers={"kid": key_id}, json_encoder=_Utf8Json)
    _check_verifiable(token)
    return IssuedToken(token=token, issued_at=now, expires_at=expires_at, key_id=key_id, user_id=user_id)


def guest_user_id(requested: str, random_id: str) -> str:
    """The user id of a guest: the guest namespace and `requested` (INVALID_USER_ID when it would not make a valid
    user id), or `random_id` when none was asked for."""
    user_id = GUEST_PREFIX + (requested or random_id)
    if requested and len(user_id) > 255:
        raise InvalidArgument(
            f"a guest's user_id is at most {255 - len(GUEST_PREFIX)} characters (the {GUEST_PREFIX!r} prefix "
            "takes the rest)",
            "INVALID_USER_ID",
        )
    return validate_user_id(user_id)


def check_guest_access(app: App) -> None:
    """Raises FailedPrecondition GUEST_ACCESS_DISABLED unless the app allows guests."""
    if not app.guest_access:
        raise FailedPrecondition(
            "this app does not allow guests; an operator turns guest_access on", "GUEST_ACCESS_DISABLED"
        )


def issue_guest(
    app: App, requested_id: str, name: str, *, now: Micros, issuer: str, jti: str, random_id: str
) -> IssuedToken:
    """Mints a guest token: user id in the guest namespace (`random_id` when none is requested), claims `role`
    (and `name` when given), living the app's guest token lifetime (or its maximum token lifetime, if shorter).

    Raises FailedPrecondition GUEST_ACCESS_DISABLED unless the app allows guests.
    """
    check_guest_access(app)
    user_id = guest_user_id(requested_id, random_id)
    claims: dict[str, Any] = {"role": "guest"}
    if name:
        if len(name) > MAX_GUEST_NAME_LENGTH or not name.isprintable():
            raise InvalidArgument(
                f"name must be at most {MAX_GUEST_NAME_LENGTH} printable characters", "INVALID_GUEST_NAME"
            )
        claims["name"] = name
    lifetime = app.guest_token_ttl_seconds
    if app.max_token_lifetime_seconds is not None:
        lifetime = min(lifetime, app.max_token_lifetime_seconds)
    return issue(
        app,
        user_id,
        now=now,
        issuer=issuer,
        jti=jti,
        ttl=lifetime * MICROS_PER_SECOND,
        claims=claims,
        guest=True,
    )


def anonymous(app: App) -> Verification:
    """The verdict on an empty token: an anonymous user, VALID when the app allows them, else ANONYMOUS_DISABLED."""
    if app.anonymous_access:
        return Verification(Outcome.VALID, role=Role.ANONYMOUS)
    return Verification(Outcome.ANONYMOUS_DISABLED)


class _Utf8Json(json.JSONEncoder):
    """JSON as UTF-8 text rather than \\u escapes: a claim of non-ASCII text takes its UTF-8 size in the token,
    the size MAX_CLAIMS_BYTES counts, instead of up to three times that."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**{**options, "ensure_ascii": False})


def _check_verifiable(token: str) -> None:
    """Refuses a freshly minted token that verification would find MALFORMED: the verifier's parser, the one
    definition of the limits (token size, JSON depth) and of what a token may hold, judges it."""
    try:
        jws.parse_compact(token)
    except jws.LimitExceeded as exc:
        raise InvalidArgument(
            f"claims make the token exceed a limit every verifier applies: {exc.reason}", "CLAIMS_TOO_LARGE"
        ) from None
    except jws.MalformedToken as exc:
        raise InvalidArgument(f"claims make a token that would not verify: {exc.reason}", "INVALID_CLAIMS") from None


def _checked_claims(claims: Mapping[str, Any]) -> Mapping[str, Any]:
    reserved = sorted(RESERVED_CLAIMS.intersection(claims))
    if reserved:
        raise InvalidArgument(f"claims may not set the registered claim(s) {', '.join(reserved)}", "RESERVED_CLAIM")
    size = len(json.dumps(claims, separators=(",", ":"), ensure_ascii=False).encode())
    if size > MAX_CLAIMS_BYTES:
        raise InvalidArgument(
            f"claims take {size} bytes as JSON; at most {MAX_CLAIMS_BYTES} are allowed", "CLAIMS_TOO_LARGE"
        )
    return claims


def user_hash(user_id: str) -> int:
    """The compact key of a user inside an app: the first 8 bytes of SHA-256(user_id) as a signed integer.

    PostgreSQL computes the same value (column user_revocations.user_hash).
    """
    return int.from_bytes(hashlib.sha256(user_id.encode()).digest()[:8], "big", signed=True)


def parse(token: str) -> jws.CompactJws | None:
    """Step 1: the token strictly parsed, or None when it is not a well-formed compact JWS (MALFORMED)."""
    try:
        return jws.parse_compact(token)
    except jws.MalformedToken:
        return None


def is_dev_token(token: jws.CompactJws) -> bool:
    """True for a developer token: its signature part is the literal `devtoken`."""
    return token.signature_segment == DEV_SIGNATURE


def check_signature(token: jws.CompactJws, app: App, *, now: Micros) -> tuple[Outcome | None, Secret | KeyPair | None]:
    """Steps 2 and 3: the header's alg and kid, then the signature.

    Returns (None, the key that signed) when they check out, else (the outcome, None). A developer token
    passes, with no key, only for an app with auth checks disabled.
    """
    if is_dev_token(token):
        return (None, None) if app.auth_checks_disabled else (Outcome.INVALID_SIGNATURE, None)
    # The allow-list is the app's one algorithm, compared exactly: "hs256", "none" and every other spelling fail.
    if token.header["alg"] != app.algorithm:
        return Outcome.INVALID_SIGNATURE, None
    kid = token.header.get("kid")
    candidates = app.verifying_keys(kid, now)
    if not candidates:
        return (Outcome.UNKNOWN_KEY if kid is not None else Outcome.INVALID_SIGNATURE), None
    for candidate in candidates:
        if isinstance(candidate, KeyPair):
            matches = keys.signature_matches(candidate.key, token.signing_input, token.signature)
        else:
            matches = candidate.signed(token.signing_input, token.signature)
        if matches:
            return None, candidate
    return Outcome.INVALID_SIGNATURE, None


class ClaimFacts(NamedTuple):  # a tuple: a third of the cost of a frozen dataclass, on the path of every new token
    """What a token whose signature checked out says for one app: steps 4 to 7 read once, all but the checks
    against the time and against user revocations, which `judge` runs on every call (a verifier keeps these
    facts beside a token it has checked, for the same App object only)."""

    claims: Mapping[str, Any]
    dev_token: bool
    user_id: str
    """The `user_id` claim, or "" when it is not a string."""
    iat: Micros | None
    exp: Micros | None
    nbf: Micros | None
    dates_malformed: bool
    """A date claim is not a NumericDate in range: MALFORMED before any other check."""
    decided: Outcome | None
    """The verdict once the times pass, when the token and the app decide it; None when a user revocation may
    (then `iat` is set and `user_id` is a valid user id)."""
    app_revoked_before: Micros | None
    """When `decided` is REVOKED: the app revocation that decided it (None: require_iat)."""
    jti: str | None
    """The `jti` claim when it is a string: what a token revocation names."""
    role: Role
    """Whose token it is, by its user id's namespace (role_of)."""


# NamedTuple's __new__ is a Python function; tuple.__new__ makes the same ClaimFacts without that call.
_claim_facts = tuple.__new__


def claim_facts(token: jws.CompactJws, app: App) -> ClaimFacts:
    """Steps 4 to 7 on a token whose signature checked out, but for the time and the user's revocation."""
    dev_token = is_dev_token(token)
    claims = token.payload
    user_id = claims.get("user_id")
    if not isinstance(user_id, str):
        user_id = ""
    try:
        iat, exp, nbf = read_times(claims)
    except jws.MalformedToken:
        return _claim_facts(
            ClaimFacts, (claims, dev_token, "", None, None, None, True, Outcome.MALFORMED, None, None, Role.UNSPECIFIED)
        )
    role = role_of(user_id)
    if role is Role.GUEST and iat is not None:
        # A guest token never outlives the app's guest token lifetime, as it is now: it expires then.
        latest = iat + app.guest_token_ttl_seconds * MICROS_PER_SECOND
        if exp is None or exp > latest:
            exp = latest
    # After the times (judge), the first check that fails decides, in the token model's order.
    decided: Outcome | None
    if (
        app.max_token_lifetime_seconds is not None
        and (exp is None or (iat is not None and exp - iat > app.max_token_lifetime_seconds * MICROS_PER_SECOND))
    ) or (role is Role.GUEST and iat is None):
        # A token that may outlive the app's maximum lifetime would also outlive pruned revocations; a guest token
        # without iat cannot be held to the guest token lifetime.
        decided = Outcome.MALFORMED
    elif "aud" in claims and not _audience_matches(claims["aud"], app.api_key):  # absent: this app's
        decided = Outcome.WRONG_AUDIENCE
    elif claims.get("server") is not None or not USER_ID_PATTERN.fullmatch(user_id):
        # A server token (or anything without a proper user id) never passes for a user.
        decided = Outcome.MALFORMED
    elif app.revoked_before is not None and (iat is None or iat < app.revoked_before):
        decided = Outcome.REVOKED  # app revocation: a token without iat predates it
    elif iat is None:
        decided = Outcome.REVOKED if app.require_iat else Outcome.VALID  # user revocations need an iat
    else:
        decided = None  # the user's revocation decides
    jti = claims.get("jti")
    app_revoked_before = app.revoked_before if decided is Outcome.REVOKED else None
    return _claim_facts(
        ClaimFacts,
        (
            claims,
            dev_token,
            user_id,
            iat,
            exp,
            nbf,
            False,
            decided,
            app_revoked_before,
            jti if isinstance(jti, str) else None,
            role,
        ),
    )


# Module constants: the hot path reads a global, not an attribute of the enum class.
_VALID, _REVOKED = Outcome.VALID, Outcome.REVOKED
_BY_APP, _BY_USER, _BY_TOKEN = RevocationScope.APP, RevocationScope.USER, RevocationScope.TOKEN


def judge(
    facts: ClaimFacts,
    *,
    now: Micros,
    leeway: Micros,
    user_revoked_before: Micros | None,
    token_revoked_at: Micros | None = None,
) -> Verification:
    """The verdict on a token's facts at `now`, and what decided it: its times first, then what the facts decided
    (the app's revocation among them), then the user's revocation time (None: not revoked; only consulted when
    `facts.decided` is None), then the token's own revocation (`token_revoked_at`: when the token's jti was
    revoked, None when it was not)."""
    if facts.dates_malformed:
        return Verification(Outcome.MALFORMED, claims=facts.claims, dev_token=facts.dev_token)
    iat, role = facts.iat, facts.role
    outcome = time_outcome(iat, facts.exp, facts.nbf, now=now, leeway=leeway)
    if outcome is not None:
        valid_from = None
        if outcome is Outcome.NOT_YET_VALID:
            valid_from = max(t for t in (facts.nbf, iat) if t is not None)
        return Verification(
            outcome, facts.user_id, iat, facts.exp, facts.claims, facts.dev_token, None, None, valid_from, role
        )  # fmt: skip
    outcome = facts.decided
    if outcome is None:
        if user_revoked_before is not None and iat is not None and iat < user_revoked_before:
            return Verification(
                _REVOKED, facts.user_id, iat, facts.exp, facts.claims, facts.dev_token, _BY_USER, user_revoked_before,
                None, role,
            )  # fmt: skip
        outcome = _VALID
    elif outcome is _REVOKED:
        return Verification(
            outcome, facts.user_id, iat, facts.exp, facts.claims, facts.dev_token, _BY_APP, facts.app_revoked_before,
            None, role,
        )  # fmt: skip
    if token_revoked_at is not None and outcome is _VALID:
        return Verification(
            _REVOKED, facts.user_id, iat, facts.exp, facts.claims, facts.dev_token, _BY_TOKEN, token_revoked_at,
            None, role,
        )  # fmt: skip
    return Verification(outcome, facts.user_id, iat, facts.exp, facts.claims, facts.dev_token, None, None, None, role)


def check_claims(
    token: jws.CompactJws,
    app: App,
    *,
    now: Micros,
    leeway: Micros,
    user_revoked_before: Micros | None,
    token_revoked_at: Micros | None = None,
) -> Verification:
    """Steps 4 to 7, on a token whose signature checked out: times, audience, user, revocations."""
    return judge(
        claim_facts(token, app),
        now=now,
        leeway=leeway,
        user_revoked_before=user_revoked_before,
        token_revoked_at=token_revoked_at,
    )


def read_times(claims: Mapping[str, Any]) -> tuple[Micros | None, Micros | None, Micros | None]:
    """The token's `iat`, `exp` and `nbf` in microseconds (None when absent); raises jws.MalformedToken for a
    date claim that is not a NumericDate in range."""
    iat = jws.numeric_date(claims, "iat")
    exp = jws.numeric_date(claims, "exp")
    nbf = jws.numeric_date(claims, "nbf")
    return (
        None if iat is None else seconds_to_micros(iat),
        None if exp is None else seconds_to_micros(exp),
        None if nbf is None else seconds_to_micros(nbf),
    )


def time_outcome(
    iat: Micros | None, exp: Micros | None, nbf: Micros | None, *, now: Micros, leeway: Micros
) -> Outcome | None:
    """Step 4's times, for user and server tokens alike: EXPIRED once `exp` is past (beyond the leeway),
    NOT_YET_VALID while `nbf` or `iat` is ahead (beyond it), else None."""
    if exp is not None and now >= exp + leeway:
        return Outcome.EXPIRED
    if (nbf is not None and nbf > now + leeway) or (iat is not None and iat > now + leeway):
        return Outcome.NOT_YET_VALID
    return None


def _audience_matches(aud: Any, api_key: str) -> bool:
    if isinstance(aud, str):
        return aud == api_key
    if isinstance(aud, list):
        return api_key in aud
    return False


def revocation_time(requested: Micros | None, *, now: Micros, leeway: Micros) -> Micros:
    """The time a revocation takes effect: `requested`, or now; a time in the future is refused."""
    if requested is None:
        return now
    if requested > now + leeway:
        raise InvalidArgument(
            "revoke_before is in the future; give a past time or leave it unset for now",
            "REVOCATION_IN_FUTURE",
        )
    return requested


MAX_BATCH_TOKENS = 1000
"""The most tokens one VerifyTokens call may carry."""

MAX_USER_IDS = 1000
"""The most user ids one revocation request may name."""

MAX_JTI_LENGTH = 255
"""The longest `jti` a token revocation may name."""


def validate_jti(jti: str) -> str:
    """Returns the jti, or raises InvalidArgument saying what is wrong with it."""
    if not jti:
        raise InvalidArgument("jti is empty; give the token's jti claim", "INVALID_JTI")
    if len(jti) > MAX_JTI_LENGTH:
        raise InvalidArgument(f"jti is {len(jti)} characters long; at most {MAX_JTI_LENGTH} are allowed", "INVALID_JTI")
    if not jti.isprintable():
        raise InvalidArgument("jti may not contain control characters", "INVALID_JTI")
    return jti


def validate_jtis(jtis: list[str]) -> list[str]:
    """The distinct jtis of a request, in order (1 to 1,000); raises InvalidArgument for a bad list."""
    distinct = list(dict.fromkeys(jtis))
    if not distinct:
        raise InvalidArgument("jtis is empty; give 1 to 1000 token ids", "NO_JTIS")
    if len(distinct) > MAX_USER_IDS:
        raise InvalidArgument(
            f"jtis names {len(distinct)} tokens; at most {MAX_USER_IDS} are allowed per call", "TOO_MANY_JTIS"
        )
    for jti in distinct:
        validate_jti(jti)
    return distinct


def revocable_jti(verification: Verification) -> tuple[str, Micros | None]:
    """The jti and `exp` claim of a token to revoke by itself, from its verdict: it must be a token of the app (its
    signature and audience checked out; expired, not yet valid or revoked is fine), and carry a jti.
    Raises InvalidArgument (MISSING_TOKEN, INVALID_TOKEN) or FailedPrecondition (TOKEN_WITHOUT_JTI) otherwise."""
    if verification.outcome is Outcome.ANONYMOUS_DISABLED or verification.role is Role.ANONYMOUS:
        raise InvalidArgument("token is empty; send the token to revoke, or its jti", "MISSING_TOKEN")
    if verification.outcome in (Outcome.MALFORMED, Outcome.INVALID_SIGNATURE, Outcome.UNKNOWN_KEY):
        raise InvalidArgument(
            f"token is not a token of this app ({verification.outcome.name}); send a token this app verifies",
            "INVALID_TOKEN",
        )
    if verification.outcome is Outcome.WRONG_AUDIENCE:
        raise InvalidArgument("token names another app as its audience", "INVALID_TOKEN")
    jti = verification.claims.get("jti")
    if not isinstance(jti, str) or not jti:
        raise FailedPrecondition(
            "this token has no jti (it was not minted by authsvc), so it cannot be revoked by itself; "
            "revoke its user with RevokeUser instead",
            "TOKEN_WITHOUT_JTI",
        )
    # Kept until the token's own exp: a guest's verdict carries the exp cut to the guest lifetime in force now, which
    # a longer lifetime set later would lift again, after such a revocation had been pruned.
    _, exp, _ = read_times(verification.claims)
    return validate_jti(jti), exp


def validate_user_ids(user_ids: list[str]) -> list[str]:
    """The distinct user ids of a request, in order (1 to 1,000); raises InvalidArgument for a bad list."""
    distinct = list(dict.fromkeys(user_ids))
    if not distinct:
        raise InvalidArgument("user_ids is empty; give 1 to 1000 user ids", "NO_USER_IDS")
    if len(distinct) > MAX_USER_IDS:
        raise InvalidArgument(
            f"user_ids names {len(distinct)} users; at most {MAX_USER_IDS} are allowed per call",
            "TOO_MANY_USER_IDS",
        )
    for user_id in distinct:
        validate_user_id(user_id)
    return distinct
