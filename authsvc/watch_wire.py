"""The state stream's messages (WatchState) ↔ token-core values, for the server and for local verifiers alike.

The server describes an app as an AppState: its settings, its public keys and a fingerprint of each API secret,
never a secret or a private key. A local verifier turns it back into a `tokens.App` holding those public keys
and the HS256 secrets of its own configuration that the fingerprints vouch for, so that both run
`authsvc.verifier.Verifier` on the same values.
"""

from __future__ import annotations

import hashlib
import hmac
from array import array
from collections.abc import Iterator, Sequence

from google.protobuf import duration_pb2

from authsvc import keys, wire
from authsvc.clock import MICROS_PER_SECOND, Micros
from authsvc.tokens import App, KeyPair, Secret
from authsvc.v1 import auth_service_pb2 as pb

SNAPSHOT_CHUNK = 65_536
"""The most user revocations one snapshot chunk carries: 1 MiB of hashes and times, under gRPC's 4 MiB limit."""

_FINGERPRINT_LABEL = b"authsvc secret fingerprint "


def secret_fingerprint(secret: str, api_key: str) -> str:
    """What the stream says of an API secret instead of the secret: HMAC-SHA256 keyed by the secret, over a label
    and the app's API key, in hex. Whoever holds a secret can tell whether it is the one; no one can recover it."""
    return hmac.new(secret.encode(), _FINGERPRINT_LABEL + api_key.encode(), hashlib.sha256).hexdigest()


def duration(micros: Micros) -> duration_pb2.Duration:
    """A Duration of `micros`."""
    seconds, fraction = divmod(micros, MICROS_PER_SECOND)
    return duration_pb2.Duration(seconds=seconds, nanos=fraction * 1000)


def seconds_duration(seconds: float) -> duration_pb2.Duration:
    """A Duration of `seconds` (to the microsecond)."""
    return duration(round(seconds * MICROS_PER_SECOND))


def app_state(app: App, *, now: Micros, leeway: Micros, issuer: str, retired: Sequence[KeyPair] = ()) -> pb.AppState:
    """The AppState of `app` at `now`; `retired` are key pairs the change being sent retires."""
    state = pb.AppState(
        api_key=app.api_key,
        algorithm=app.algorithm,
        auth_checks_disabled=app.auth_checks_disabled,
        require_iat=app.require_iat,
        clock_leeway=duration(leeway),
        issuer=issuer,
    )
    if app.revoked_before is not None:
        wire.set_timestamp(state.revoked_before, app.revoked_before)
    if app.max_token_lifetime_seconds is not None:
        state.max_token_lifetime.seconds = app.max_token_lifetime_seconds
    for pair in app.key_pairs:
        _add_key(state, pair, pb.KEY_STATE_PUBLISHED if pair.signs_from > now else pb.KEY_STATE_SIGNING)
    for pair in retired:
        _add_key(state, pair, pb.KEY_STATE_RETIRED)
    for secret in app.secrets:
        entry = state.secrets.add(kid=secret.key_id, fingerprint=secret_fingerprint(secret.value, app.api_key))
        if secret.expires_at is not None:
            wire.set_timestamp(entry.expires_at, secret.expires_at)
    return state


def _add_key(state: pb.AppState, pair: KeyPair, key_state: pb.KeyState) -> None:
    entry = state.public_keys.add(jwk=pb.Jwk(**keys.jwk(pair.key, pair.key_id)), state=key_state)
    wire.set_timestamp(entry.signs_from, pair.signs_from)


def app_from_state(state: pb.AppState, secrets: Sequence[str]) -> App:
    """The app an AppState describes, for verifying its tokens: its public keys (retired ones left out) and,
    among `secrets` (a verifier's own configuration), those the app accepts, in the app's order.

    Raises ValueError for a public key that does not load.
    """
    key_pairs = tuple(
        KeyPair(
            entry.jwk.kid,
            keys.from_jwk(
                {"kty": entry.jwk.kty, "crv": entry.jwk.crv, "x": entry.jwk.x, "y": entry.jwk.y, "alg": entry.jwk.alg}
            ),  # fmt: skip
            wire.micros(entry.signs_from, "signs_from"),
        )
        for entry in state.public_keys
        if entry.state != pb.KEY_STATE_RETIRED
    )
    known = [(secret_fingerprint(secret, state.api_key).encode(), secret) for secret in secrets]
    accepted: list[Secret] = []
    for entry in state.secrets:
        given = entry.fingerprint.encode()
        for fingerprint, value in known:
            if hmac.compare_digest(fingerprint, given):
                expires = wire.micros(entry.expires_at, "expires_at") if entry.HasField("expires_at") else None
                accepted.append(Secret(entry.kid, value, expires))
    return App(
        id=0,
        api_key=state.api_key,
        name="",
        secrets=tuple(accepted),
        algorithm=state.algorithm,
        key_pairs=key_pairs,
        auth_checks_disabled=state.auth_checks_disabled,
        require_iat=state.require_iat,
        revoked_before=wire.micros(state.revoked_before, "revoked_before")
        if state.HasField("revoked_before")
        else None,
        max_token_lifetime_seconds=state.max_token_lifetime.seconds if state.HasField("max_token_lifetime") else None,
    )


def leeway_of(state: pb.AppState) -> Micros:
    """The clock leeway an AppState names, in microseconds."""
    return state.clock_leeway.seconds * MICROS_PER_SECOND + state.clock_leeway.nanos // 1000


def snapshot_chunks(
    app: pb.AppState,
    user_hashes: array[int],
    revoked_before: array[int],
    *,
    version: int,
    staleness: duration_pb2.Duration,
    fresh: bool,
    revoked_tokens: Sequence[tuple[str, Micros]] = (),
) -> Iterator[pb.WatchStateResponse]:
    """A snapshot as its messages: the app on the first, at most SNAPSHOT_CHUNK user revocations and as many token
    revocations (jti, revoked at) on each."""
    total = max(len(user_hashes), len(revoked_tokens))
    for start in range(0, max(total, 1), SNAPSHOT_CHUNK):
        end = min(start + SNAPSHOT_CHUNK, total)
        chunk = pb.SnapshotChunk(
            user_hashes=user_hashes[start:end], revoked_before=revoked_before[start:end], last=end >= total
        )
        for jti, revoked_at in revoked_tokens[start:end]:
            chunk.token_revocations.jtis.append(jti)
            chunk.token_revocations.revoked_before.append(revoked_at)
        if start == 0:
            chunk.app.CopyFrom(app)
            chunk.fresh = fresh
        yield pb.WatchStateResponse(version=version, staleness=staleness, snapshot=chunk)
