"""RevokeToken (one device logged out) and the provenance of every verdict, against a real server and PostgreSQL."""

from __future__ import annotations

import base64
import json
from datetime import UTC, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import jwt
import pytest
from google.protobuf import timestamp_pb2

from authsvc import apps
from authsvc.audit import Actor
from authsvc.client import (
    AuthClient,
    AuthsvcClientError,
    ClientAction,
    LocalVerifier,
    RevocationScope,
    Revoked,
    VerifyOutcome,
)
from authsvc.clock import MICROS_PER_SECOND as S
from authsvc.keys import ES256
from authsvc.server import RunningServer
from authsvc.state import State
from authsvc.store import Store
from authsvc.tokens import App
from authsvc.v1 import auth_service_pb2 as pb
from authsvc.v1 import auth_service_pb2_grpc
from tests.conftest import NewApp
from tests.processes import clean_env, serve
from tests.support import FakeClock, api_key_only, backend, expect_failure
from tests.test_state import _db_now, eventually, own_store  # noqa: F401 - own_store is a fixture
from tests.test_watch import eventually as eventually_true

if TYPE_CHECKING:
    from authsvc.v1.auth_service_pb2_grpc import AuthServiceAsyncStub

P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def stamp(micros: int) -> timestamp_pb2.Timestamp:
    result = timestamp_pb2.Timestamp()
    result.FromMicroseconds(micros)
    return result


async def issue(stub: AuthServiceAsyncStub, app: App, user_id: str, ttl: int | None = None) -> pb.IssueTokenResponse:
    request = pb.IssueTokenRequest(user_id=user_id)
    if ttl is not None:
        request.ttl.seconds = ttl
    response: pb.IssueTokenResponse = await stub.IssueToken(request, metadata=backend(app))
    return response


async def verify(stub: AuthServiceAsyncStub, app: App, token: str) -> pb.VerifyTokenResponse:
    response: pb.VerifyTokenResponse = await stub.VerifyToken(
        pb.VerifyTokenRequest(token=token), metadata=api_key_only(app)
    )
    return response


def jti_of(token: str) -> str:
    payload = token.split(".")[1]
    jti: str = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["jti"]
    return jti


def high_s(token: str) -> str:
    """The same ES256 token with s replaced by n - s: a second valid encoding (JWS does not ask for low s)."""
    head, payload, signature = token.split(".")
    raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    r, s = raw[:32], int.from_bytes(raw[32:], "big")
    other = r + (P256_ORDER - s).to_bytes(32, "big")
    return f"{head}.{payload}.{base64.urlsafe_b64encode(other).rstrip(b'=').decode()}"


async def test_every_minted_token_has_a_distinct_jti(stub: AuthServiceAsyncStub, new_app: NewApp) -> None:
    app = await new_app()
    jtis = {jti_of((await issue(stub, app, "alice")).token) for _ in range(5)}
    assert len(jtis) == 5 and all(len(jti) >= 22 for jti in jtis)


async def test_revoking_a_token_logs_out_that_device_only(
    stub: AuthServiceAsyncStub, new_app: NewApp, clock: FakeClock, store: Store
) -> None:
    app = await new_app()
    now = clock.freeze()
    phone = await issue(stub, app, "alice", ttl=3600)
    laptop = await issue(stub, app, "alice")
    clock.advance(S)
    response = await stub.RevokeToken(pb.RevokeTokenRequest(token=phone.token), metadata=backend(app))
    assert response.jti == jti_of(phone.token)
    assert response.revoked_before.ToMicroseconds() == now + S
    assert response.expires_at.ToMicroseconds() == now + 3600 * S  # kept until the token's exp
    verdict = await verify(stub, app, phone.token)
    assert verdict.outcome == pb.VERIFY_OUTCOME_REVOKED
    assert verdict.revoked_by == pb.REVOCATION_SCOPE_TOKEN
    assert verdict.revoked_before.ToMicroseconds() == now + S
    assert verdict.client_action == pb.CLIENT_ACTION_LOGOUT
    assert verdict.user_id == "alice"
    assert (await verify(stub, app, laptop.token)).outcome == pb.VERIFY_OUTCOME_VALID
    # Durable before acknowledged, and audited with the jti (never the token).
    async with store._pool.acquire() as conn:  # noqa: SLF001
        row = await conn.fetchrow("SELECT * FROM token_revocations WHERE app_id = $1", app.id)
        audited = await conn.fetchrow(
            "SELECT actor, details FROM audit_events WHERE app_id = $1 AND action = 'token.revoked'", app.id
        )
    assert row is not None and row["jti"] == response.jti
    assert audited is not None and json.loads(audited["details"])["jti"] == response.jti
    assert phone.token not in audited["details"]
    # Revoking again keeps the first time.
    clock.advance(S)
    again = await stub.RevokeToken(pb.RevokeTokenRequest(jti=response.jti), metadata=backend(app))
    assert again.revoked_before.ToMicroseconds() == now + S


async def test_revoke_by_jti_then_clear(stub: AuthServiceAsyncStub, new_app: NewApp, clock: FakeClock) -> None:
    app = await new_app()
    clock.freeze()
    token = (await issue(stub, app, "alice")).token
    jti = jti_of(token)
    response = await stub.RevokeToken(pb.RevokeTokenRequest(jti=jti), metadata=backend(app))
    assert response.jti == jti and not response.HasField("expires_at")
    assert (await verify(stub, app, token)).revoked_by == pb.REVOCATION_SCOPE_TOKEN
    cleared = await stub.ClearRevocation(
        pb.ClearRevocationRequest(tokens=pb.TokenIds(jtis=[jti, "never-revoked"])), metadata=backend(app)
    )
    assert list(cleared.cleared_jtis) == [jti]
    verdict = await verify(stub, app, token)
    assert verdict.outcome == pb.VERIFY_OUTCOME_VALID
    assert verdict.client_action == pb.CLIENT_ACTION_UNSPECIFIED and not verdict.HasField("revoked_before")


async def test_the_second_encoding_of_an_es256_token_is_revoked_too(
    stub: AuthServiceAsyncStub, new_app: NewApp
) -> None:
    app = await new_app(algorithm=ES256)
    token = (await issue(stub, app, "alice")).token
    twin = high_s(token)
    assert twin != token
    assert (await verify(stub, app, twin)).outcome == pb.VERIFY_OUTCOME_VALID  # both encodings verify
    await stub.RevokeToken(pb.RevokeTokenRequest(token=token), metadata=backend(app))
    for encoding in (token, twin):
        verdict = await verify(stub, app, encoding)
        assert (verdict.outcome, verdict.revoked_by) == (pb.VERIFY_OUTCOME_REVOKED, pb.REVOCATION_SCOPE_TOKEN)


async def test_a_token_without_jti_cannot_be_revoked_by_itself(stub: AuthServiceAsyncStub, new_app: NewApp) -> None:
    app = await new_app()
    vendor = jwt.encode({"user_id": "alice"}, app.api_secret, "HS256")  # minted elsewhere, as vendor SDKs do
    failed = await expect_failure(stub.RevokeToken(pb.RevokeTokenRequest(token=vendor), metadata=backend(app)))
    assert (failed.code, failed.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "TOKEN_WITHOUT_JTI")
    assert "RevokeUser" in failed.message


@pytest.mark.parametrize(
    ("request_fields", "reason"),
    [
        ({"token": "not.a.token"}, "INVALID_TOKEN"),
        ({"token": ""}, "MISSING_TOKEN"),
        ({"jti": ""}, "INVALID_JTI"),
        ({"jti": "x" * 256}, "INVALID_JTI"),
        ({"jti": "a\nb"}, "INVALID_JTI"),
        ({}, "NO_REVOCATION_TARGET"),
    ],
)
async def test_bad_revoke_token_requests_are_refused(
    stub: AuthServiceAsyncStub, new_app: NewApp, request_fields: dict[str, str], reason: str
) -> None:
    app = await new_app()
    failed = await expect_failure(stub.RevokeToken(pb.RevokeTokenRequest(**request_fields), metadata=backend(app)))
    assert (failed.code, failed.reason) == (grpc.StatusCode.INVALID_ARGUMENT, reason)


async def test_an_empty_token_is_missing_even_where_anonymous_users_are_valid(
    stub: AuthServiceAsyncStub, new_app: NewApp
) -> None:
    app = await new_app(anonymous_access=True)
    assert (await verify(stub, app, "")).role == pb.ROLE_ANONYMOUS
    failed = await expect_failure(stub.RevokeToken(pb.RevokeTokenRequest(token=""), metadata=backend(app)))
    assert (failed.code, failed.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "MISSING_TOKEN")


@pytest.mark.parametrize(
    ("jtis", "reason"),
    [([], "NO_JTIS"), ([f"j{n}" for n in range(1001)], "TOO_MANY_JTIS"), (["ok", ""], "INVALID_JTI")],
)
async def test_bad_token_clears_are_refused(
    stub: AuthServiceAsyncStub, new_app: NewApp, jtis: list[str], reason: str
) -> None:
    app = await new_app()
    request = pb.ClearRevocationRequest(tokens=pb.TokenIds(jtis=jtis))
    failed = await expect_failure(stub.ClearRevocation(request, metadata=backend(app)))
    assert (failed.code, failed.reason) == (grpc.StatusCode.INVALID_ARGUMENT, reason)


async def test_a_token_of_another_app_or_a_forged_one_is_refused(stub: AuthServiceAsyncStub, new_app: NewApp) -> None:
    app, other = await new_app(), await new_app()
    foreign = (await issue(stub, other, "alice")).token
    forged = jwt.encode({"user_id": "alice", "jti": "j1"}, "not the secret, but long enough for HS256", "HS256")
    for token in (foreign, forged):
        failed = await expect_failure(stub.RevokeToken(pb.RevokeTokenRequest(token=token), metadata=backend(app)))
        assert (failed.code, failed.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_TOKEN")
    assert (await verify(stub, other, foreign)).outcome == pb.VERIFY_OUTCOME_VALID


async def test_revoke_token_needs_the_app_credential(stub: AuthServiceAsyncStub, new_app: NewApp) -> None:
    app = await new_app()
    token = (await issue(stub, app, "alice")).token
    failed = await expect_failure(stub.RevokeToken(pb.RevokeTokenRequest(token=token), metadata=api_key_only(app)))
    assert (failed.code, failed.reason) == (grpc.StatusCode.UNAUTHENTICATED, "MISSING_CREDENTIAL")
    user_token_as_credential = await expect_failure(
        stub.RevokeToken(pb.RevokeTokenRequest(token=token), metadata=backend(app, token))
    )
    assert user_token_as_credential.code == grpc.StatusCode.PERMISSION_DENIED
    assert (await verify(stub, app, token)).outcome == pb.VERIFY_OUTCOME_VALID


async def test_a_token_revocation_reaches_another_replica(
    stub: AuthServiceAsyncStub, new_app: NewApp, database_url: str, tmp_path: Path
) -> None:
    app = await new_app(algorithm=ES256)
    token = (await issue(stub, app, "alice")).token
    env = clean_env(AUTHSVC_DATABASE_URL=database_url, AUTHSVC_STATE_CHECK_INTERVAL="1h", AUTHSVC_MAX_STALENESS="2h")
    async with serve(env, tmp_path) as other, grpc.aio.insecure_channel(other.target) as channel:
        other_stub = auth_service_pb2_grpc.AuthServiceStub(channel)
        assert (await verify(other_stub, app, token)).outcome == pb.VERIFY_OUTCOME_VALID
        await stub.RevokeToken(pb.RevokeTokenRequest(token=token), metadata=backend(app))

        async def revoked_there() -> bool:
            verdicts = [await verify(other_stub, app, encoding) for encoding in (token, high_s(token))]
            return all(v.revoked_by == pb.REVOCATION_SCOPE_TOKEN for v in verdicts)

        # With periodic checks off (1h), only LISTEN/NOTIFY can bring the change over.
        await eventually(revoked_there)
        await stub.ClearRevocation(
            pb.ClearRevocationRequest(tokens=pb.TokenIds(jtis=[jti_of(token)])), metadata=backend(app)
        )

        async def restored_there() -> bool:
            return (await verify(other_stub, app, token)).outcome == pb.VERIFY_OUTCOME_VALID

        await eventually(restored_there)


async def test_token_revocations_are_kept_until_exp_and_pruned_then(
    own_store: Store,  # noqa: F811 - the fixture of tests.test_state
    fresh_database: str,
) -> None:
    store = own_store
    app = await apps.create_app(store, "prunes-tokens")
    lifetime = await apps.create_app(store, "max-lifetime", max_token_lifetime_seconds=3600)
    now = await _db_now(store)
    actor = Actor("test")
    await store.revoke_token(app.id, "expired", now - 10 * S, now - 5 * S, actor=actor)
    await store.revoke_token(app.id, "live", now - 10 * S, now + 3600 * S, actor=actor)
    await store.revoke_token(app.id, "no-exp", now - 7200 * S, None, actor=actor)
    # By jti only on an app with a maximum lifetime: no token issued before it can outlive lifetime + leeway.
    await store.revoke_token(lifetime.id, "old", now - 7200 * S, None, actor=actor)
    await store.revoke_token(lifetime.id, "recent", now - 60 * S, None, actor=actor)
    state = State(store, fresh_database, check_interval=3600, max_staleness=3600, leeway=S)
    await state.load()
    assert state.token_revoked_at(app.id, "expired") == now - 10 * S
    assert state.token_revocations_held == 5
    assert await state.prune()
    assert state.token_revocations_held == 3
    remaining = {
        (app_id, jti)
        for app_id, jti in [(app.id, "expired"), (app.id, "live"), (app.id, "no-exp")]
        + [(lifetime.id, "old"), (lifetime.id, "recent")]
        if state.token_revoked_at(app_id, jti) is not None
    }
    assert remaining == {(app.id, "live"), (app.id, "no-exp"), (lifetime.id, "recent")}
    async with store._pool.acquire() as conn:  # noqa: SLF001
        stored = {(r["app_id"], r["jti"]) for r in await conn.fetch("SELECT app_id, jti FROM token_revocations")}
    assert stored == remaining
    # A process loaded afterwards agrees.
    later = State(store, fresh_database, check_interval=3600, max_staleness=3600)
    await later.load()
    assert later.token_revoked_at(app.id, "live") == now - 10 * S
    assert later.token_revoked_at(app.id, "expired") is None
    assert later.token_revocations_held == 3


# -- provenance: what decided a verdict, and what the client should do --


async def test_revoked_provenance_for_every_combination(
    stub: AuthServiceAsyncStub, new_app: NewApp, clock: FakeClock
) -> None:
    app = await new_app()
    t0 = clock.freeze()
    token = (await issue(stub, app, "alice")).token  # iat = t0

    async def revoke(*, app_at: int | None = None, user_at: int | None = None) -> None:
        await stub.ClearRevocation(pb.ClearRevocationRequest(app=True), metadata=backend(app))
        await stub.ClearRevocation(
            pb.ClearRevocationRequest(users=pb.UserIds(user_ids=["alice"])), metadata=backend(app)
        )
        if app_at is not None:
            await stub.RevokeApp(pb.RevokeAppRequest(revoke_before=stamp(app_at)), metadata=backend(app))
        if user_at is not None:
            await stub.RevokeUser(
                pb.RevokeUserRequest(user_ids=["alice"], revoke_before=stamp(user_at)), metadata=backend(app)
            )

    async def provenance() -> tuple[int, int, int | None]:
        verdict = await verify(stub, app, token)
        at = verdict.revoked_before.ToMicroseconds() if verdict.HasField("revoked_before") else None
        return verdict.outcome, verdict.revoked_by, at

    clock.advance(10 * S)
    revoked = pb.VERIFY_OUTCOME_REVOKED
    # Both boundaries set, the app's deciding (the user's lies before the token's iat).
    await revoke(app_at=t0 + 1, user_at=t0 - 1)
    assert await provenance() == (revoked, pb.REVOCATION_SCOPE_APP, t0 + 1)
    # Both set, the user's deciding (the app's lies before iat): a token issued at t0 fell to a revocation 1 µs later.
    await revoke(app_at=t0 - 1, user_at=t0 + 1)
    assert await provenance() == (revoked, pb.REVOCATION_SCOPE_USER, t0 + 1)
    # Both deciding: the first in the token model's order, the app's.
    await revoke(app_at=t0 + 2, user_at=t0 + 3)
    assert await provenance() == (revoked, pb.REVOCATION_SCOPE_APP, t0 + 2)
    # Only one set.
    await revoke(app_at=t0 + 4)
    assert await provenance() == (revoked, pb.REVOCATION_SCOPE_APP, t0 + 4)
    await revoke(user_at=t0 + 5)
    assert await provenance() == (revoked, pb.REVOCATION_SCOPE_USER, t0 + 5)
    # Both set, neither deciding.
    await revoke(app_at=t0 - 2, user_at=t0)
    assert await provenance() == (pb.VERIFY_OUTCOME_VALID, pb.REVOCATION_SCOPE_UNSPECIFIED, None)
    # The token's own revocation, behind the user's, and then alone.
    revoked_token = await stub.RevokeToken(pb.RevokeTokenRequest(token=token), metadata=backend(app))
    await revoke(user_at=t0 + 6)
    assert await provenance() == (revoked, pb.REVOCATION_SCOPE_USER, t0 + 6)
    await revoke()
    assert await provenance() == (revoked, pb.REVOCATION_SCOPE_TOKEN, revoked_token.revoked_before.ToMicroseconds())
    assert (await verify(stub, app, token)).client_action == pb.CLIENT_ACTION_LOGOUT


async def test_require_iat_refuses_as_the_app_without_a_time(stub: AuthServiceAsyncStub, new_app: NewApp) -> None:
    app = await new_app(require_iat=True)
    verdict = await verify(stub, app, jwt.encode({"user_id": "alice"}, app.api_secret, "HS256"))
    assert (verdict.outcome, verdict.revoked_by) == (pb.VERIFY_OUTCOME_REVOKED, pb.REVOCATION_SCOPE_APP)
    assert not verdict.HasField("revoked_before")


async def test_expired_and_not_yet_valid_say_when(
    stub: AuthServiceAsyncStub, new_app: NewApp, clock: FakeClock
) -> None:
    app = await new_app()
    now = clock.freeze()
    expired = (await issue(stub, app, "alice", ttl=60)).token
    clock.advance(3600 * S)
    verdict = await verify(stub, app, expired)
    assert verdict.outcome == pb.VERIFY_OUTCOME_EXPIRED
    assert verdict.expires_at.ToMicroseconds() == now + 60 * S
    assert verdict.client_action == pb.CLIENT_ACTION_REFRESH
    assert not verdict.HasField("revoked_before") and verdict.revoked_by == pb.REVOCATION_SCOPE_UNSPECIFIED
    later = clock() + 600 * S
    ahead = jwt.encode({"user_id": "alice", "iat": (later - 60 * S) // S, "nbf": later // S}, app.api_secret, "HS256")
    verdict = await verify(stub, app, ahead)
    assert verdict.outcome == pb.VERIFY_OUTCOME_NOT_YET_VALID
    assert verdict.valid_from.ToMicroseconds() == later
    assert verdict.client_action == pb.CLIENT_ACTION_RETRY_LATER


@pytest.mark.parametrize(
    ("token", "outcome"),
    [
        ("garbage", pb.VERIFY_OUTCOME_MALFORMED),
        (
            jwt.encode({"user_id": "alice"}, "another secret, long enough for HS256 keys", "HS256"),
            pb.VERIFY_OUTCOME_INVALID_SIGNATURE,
        ),
        (jwt.encode({"user_id": "alice"}, "k" * 32, "HS256", headers={"kid": "nope"}), pb.VERIFY_OUTCOME_UNKNOWN_KEY),
    ],
)
async def test_tokens_that_will_never_pass_say_logout(
    stub: AuthServiceAsyncStub, new_app: NewApp, token: str, outcome: int
) -> None:
    app = await new_app()
    verdict = await verify(stub, app, token)
    assert (verdict.outcome, verdict.client_action) == (outcome, pb.CLIENT_ACTION_LOGOUT)


async def test_wrong_audience_says_logout_in_a_batch_too(stub: AuthServiceAsyncStub, new_app: NewApp) -> None:
    app = await new_app()
    wrong = jwt.encode({"user_id": "alice", "aud": "another app"}, app.api_secret, "HS256")
    good = (await issue(stub, app, "bob")).token
    response = await stub.VerifyTokens(pb.VerifyTokensRequest(tokens=[wrong, good]), metadata=api_key_only(app))
    assert [(r.outcome, r.client_action) for r in response.results] == [
        (pb.VERIFY_OUTCOME_WRONG_AUDIENCE, pb.CLIENT_ACTION_LOGOUT),
        (pb.VERIFY_OUTCOME_VALID, pb.CLIENT_ACTION_UNSPECIFIED),
    ]


# -- the state stream and the Python LocalVerifier --


async def test_token_revocations_on_the_stream_and_in_the_local_verifier(
    stub: AuthServiceAsyncStub, new_app: NewApp, server: RunningServer, clock: FakeClock
) -> None:
    app = await new_app(algorithm=ES256)
    phone, laptop = (await issue(stub, app, "alice")).token, (await issue(stub, app, "alice")).token
    before = await stub.RevokeToken(pb.RevokeTokenRequest(token=phone), metadata=backend(app))
    # A snapshot carries the revocations made before it.
    call = stub.WatchState(pb.WatchStateRequest(), metadata=backend(app))
    first = await call.read()
    assert isinstance(first, pb.WatchStateResponse)
    assert list(first.snapshot.token_revocations.jtis) == [before.jti]
    assert list(first.snapshot.token_revocations.revoked_before) == [before.revoked_before.ToMicroseconds()]
    call.cancel()
    events: list[Revoked] = []
    async with LocalVerifier(
        f"127.0.0.1:{server.port}", app.api_key, app.api_secret, clock=clock, metrics=False
    ) as verifier:
        verifier.on_revoked(events.append)
        for encoding in (phone, high_s(phone)):
            verdict = verifier.verify(encoding)
            assert (verdict.outcome, verdict.revoked_by, verdict.client_action) == (
                VerifyOutcome.REVOKED,
                RevocationScope.TOKEN,
                ClientAction.LOGOUT,
            )
            assert verdict.revoked_before == before.revoked_before.ToDatetime(tzinfo=UTC)
        assert verifier.verify(laptop).outcome is VerifyOutcome.VALID
        # A change: the laptop too, and its callback names the jti.
        after = await stub.RevokeToken(pb.RevokeTokenRequest(token=laptop), metadata=backend(app))
        await eventually_true(lambda: verifier.verify(laptop).revoked_by is RevocationScope.TOKEN)
        assert Revoked(jtis=(after.jti,)) in events
        await stub.ClearRevocation(
            pb.ClearRevocationRequest(tokens=pb.TokenIds(jtis=[before.jti, after.jti])), metadata=backend(app)
        )
        await eventually_true(lambda: verifier.verify(phone).outcome is VerifyOutcome.VALID)
        assert verifier.verify(laptop).outcome is VerifyOutcome.VALID
        assert verifier.verify(laptop).client_action is None


async def test_the_python_client_carries_revoke_token_and_the_provenance(
    server: RunningServer, new_app: NewApp, clock: FakeClock
) -> None:
    app = await new_app()
    async with AuthClient(f"127.0.0.1:{server.port}", app.api_key, app.api_secret) as client:
        issued = await client.issue_token("alice", ttl=timedelta(hours=1))
        revoked = await client.revoke_token(issued.token)
        assert revoked.expires_at == issued.expires_at and revoked.jti == jti_of(issued.token)
        verdict = await client.verify_token(issued.token)
        assert (verdict.revoked_by, verdict.revoked_before, verdict.client_action) == (
            RevocationScope.TOKEN,
            revoked.revoked_before,
            ClientAction.LOGOUT,
        )
        assert await client.clear_token_revocations([revoked.jti]) == [revoked.jti]
        assert (await client.verify_token(issued.token)).client_action is None
        with pytest.raises(AuthsvcClientError) as refused:
            await client.revoke_token(jwt.encode({"user_id": "alice"}, app.api_secret, "HS256"))
        assert refused.value.reason == "TOKEN_WITHOUT_JTI"
