"""IssueToken and VerifyToken over gRPC, against a real server and PostgreSQL."""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Any

import grpc
import jwt
import pytest
from google.protobuf import duration_pb2, json_format, struct_pb2, timestamp_pb2

from authsvc.clock import MICROS_PER_SECOND as S
from authsvc.clock import system_clock
from authsvc.config import Settings
from authsvc.metrics import Metrics
from authsvc.servicer import AuthServicer
from authsvc.state import State
from authsvc.store import Store
from authsvc.v1 import auth_service_pb2 as pb
from authsvc.v1 import auth_service_pb2_grpc
from tests.conftest import NewApp

if TYPE_CHECKING:
    from authsvc.v1.auth_service_pb2_grpc import AuthServiceAsyncStub
from tests.support import FakeClock, api_key_only, backend, expect_failure, newest_kid

Outcome = pb.VerifyOutcome


async def verify(stub: AuthServiceAsyncStub, app: Any, token: str) -> pb.VerifyTokenResponse:
    response: pb.VerifyTokenResponse = await stub.VerifyToken(
        pb.VerifyTokenRequest(token=token), metadata=api_key_only(app)
    )
    return response


def dev_token(payload: dict[str, Any]) -> str:
    def b64(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{b64({'alg': 'HS256', 'typ': 'JWT'})}.{b64(payload)}.devtoken"


async def test_issue_then_verify(stub: AuthServiceAsyncStub, new_app: NewApp, clock: FakeClock) -> None:
    app = await new_app()
    now = clock.freeze()
    issued = await stub.IssueToken(pb.IssueTokenRequest(user_id="alice"), metadata=backend(app))
    assert issued.issued_at.ToMicroseconds() == now
    assert not issued.HasField("expires_at")
    assert issued.key_id == newest_kid(app)
    result = await verify(stub, app, issued.token)
    assert result.valid and result.outcome == Outcome.VERIFY_OUTCOME_VALID
    assert result.user_id == "alice"
    assert result.issued_at.ToMicroseconds() == now
    assert not result.HasField("expires_at")
    assert result.claims["aud"] == app.api_key and result.claims["iss"] == "authsvc-test"
    assert not result.dev_token


async def test_ttl_and_expires_at(stub: AuthServiceAsyncStub, new_app: NewApp, clock: FakeClock) -> None:
    app = await new_app()
    now = clock.freeze()
    by_ttl = await stub.IssueToken(
        pb.IssueTokenRequest(user_id="alice", ttl=duration_pb2.Duration(seconds=90)), metadata=backend(app)
    )
    assert by_ttl.expires_at.ToMicroseconds() == now + 90 * S
    at = timestamp_pb2.Timestamp()
    at.FromMicroseconds(now + 3600 * S)
    by_time = await stub.IssueToken(pb.IssueTokenRequest(user_id="alice", expires_at=at), metadata=backend(app))
    assert by_time.expires_at == at
    assert (await verify(stub, app, by_time.token)).expires_at == at


async def test_app_default_lifetime_and_expiry(stub: AuthServiceAsyncStub, new_app: NewApp, clock: FakeClock) -> None:
    app = await new_app(token_ttl_seconds=60)
    now = clock.freeze()
    issued = await stub.IssueToken(pb.IssueTokenRequest(user_id="alice"), metadata=backend(app))
    assert issued.expires_at.ToMicroseconds() == now + 60 * S
    clock.advance(60 * S + 5 * S)
    result = await verify(stub, app, issued.token)
    assert not result.valid and result.outcome == Outcome.VERIFY_OUTCOME_EXPIRED
    assert result.user_id == "alice"


async def test_extra_claims_round_trip(stub: AuthServiceAsyncStub, new_app: NewApp) -> None:
    app = await new_app()
    claims = struct_pb2.Struct()
    claims.update({"role": "moderator", "level": 3, "channels": ["general", "random"]})
    issued = await stub.IssueToken(pb.IssueTokenRequest(user_id="alice", claims=claims), metadata=backend(app))
    payload = jwt.decode(issued.token, options={"verify_signature": False})
    assert payload["level"] == 3 and isinstance(payload["level"], int)
    result = await verify(stub, app, issued.token)
    carried = json_format.MessageToDict(result.claims)
    assert carried["role"] == "moderator" and carried["channels"] == ["general", "random"]


async def test_vendor_sdk_tokens_verify_unchanged(
    stub: AuthServiceAsyncStub, new_app: NewApp, clock: FakeClock
) -> None:
    app = await new_app()
    now = clock.freeze() // S
    for payload in (
        {"user_id": "alice"},
        {"user_id": "alice", "iat": now},
        {"user_id": "alice", "exp": now + 3600},
        {"user_id": "alice", "iat": now, "exp": now + 3600},
    ):
        token = jwt.encode(payload, app.api_secret, algorithm="HS256")
        result = await verify(stub, app, token)
        assert result.outcome == Outcome.VERIFY_OUTCOME_VALID, payload
        assert result.user_id == "alice"


async def test_verified_times_are_exact_at_the_epoch_and_to_the_microsecond(
    stub: AuthServiceAsyncStub, new_app: NewApp
) -> None:
    app = await new_app()
    at_epoch = await verify(stub, app, jwt.encode({"user_id": "alice", "iat": 0}, app.api_secret, algorithm="HS256"))
    assert at_epoch.valid
    assert at_epoch.HasField("issued_at") and at_epoch.issued_at.ToMicroseconds() == 0
    fractional = jwt.encode(
        {"user_id": "alice", "iat": 1_700_000_000.25, "exp": 4_000_000_000.000001}, app.api_secret, algorithm="HS256"
    )
    result = await verify(stub, app, fractional)
    assert result.valid
    assert result.issued_at.ToMicroseconds() == 1_700_000_000_250_000
    assert result.expires_at.ToMicroseconds() == 4_000_000_000_000_001


async def test_each_failure_outcome(stub: AuthServiceAsyncStub, new_app: NewApp, clock: FakeClock) -> None:
    app = await new_app()
    now = clock.freeze() // S
    secret = app.api_secret
    cases = {
        "not.a.jwt": Outcome.VERIFY_OUTCOME_MALFORMED,
        jwt.encode({"iat": now}, secret, algorithm="HS256"): Outcome.VERIFY_OUTCOME_MALFORMED,
        jwt.encode({"user_id": "a"}, "x" * 43, algorithm="HS256"): Outcome.VERIFY_OUTCOME_INVALID_SIGNATURE,
        jwt.encode({"user_id": "a"}, secret, algorithm="HS256", headers={"kid": "nope"}): (
            Outcome.VERIFY_OUTCOME_UNKNOWN_KEY
        ),
        jwt.encode({"user_id": "a", "exp": now - 60}, secret, algorithm="HS256"): Outcome.VERIFY_OUTCOME_EXPIRED,
        jwt.encode({"user_id": "a", "nbf": now + 60}, secret, algorithm="HS256"): (
            Outcome.VERIFY_OUTCOME_NOT_YET_VALID
        ),
        jwt.encode({"user_id": "a", "aud": "someone-else"}, secret, algorithm="HS256"): (
            Outcome.VERIFY_OUTCOME_WRONG_AUDIENCE
        ),
        dev_token({"user_id": "a"}): Outcome.VERIFY_OUTCOME_INVALID_SIGNATURE,
    }
    for token, outcome in cases.items():
        result = await verify(stub, app, token)
        assert (result.outcome, result.valid) == (outcome, False), token


async def test_token_of_one_app_is_never_valid_for_another(stub: AuthServiceAsyncStub, new_app: NewApp) -> None:
    first, second = await new_app("first"), await new_app("second")
    issued = await stub.IssueToken(pb.IssueTokenRequest(user_id="alice"), metadata=backend(first))
    assert (await verify(stub, first, issued.token)).valid
    result = await verify(stub, second, issued.token)
    # The kid names a key of the first app only.
    assert not result.valid and result.outcome == Outcome.VERIFY_OUTCOME_UNKNOWN_KEY
    vendor = jwt.encode({"user_id": "alice"}, first.api_secret, algorithm="HS256")
    assert (await verify(stub, first, vendor)).valid
    assert (await verify(stub, second, vendor)).outcome == Outcome.VERIFY_OUTCOME_INVALID_SIGNATURE


async def test_developer_tokens(stub: AuthServiceAsyncStub, new_app: NewApp, clock: FakeClock) -> None:
    dev_app = await new_app("dev", auth_checks_disabled=True)
    prod_app = await new_app("prod")
    token = dev_token({"user_id": "alice"})
    result = await verify(stub, dev_app, token)
    assert result.valid and result.dev_token and result.user_id == "alice"
    assert (await verify(stub, prod_app, token)).outcome == Outcome.VERIFY_OUTCOME_INVALID_SIGNATURE
    now = clock.freeze() // S
    expired = await verify(stub, dev_app, dev_token({"user_id": "alice", "exp": now - 60}))
    assert expired.outcome == Outcome.VERIFY_OUTCOME_EXPIRED
    await stub.RevokeUser(pb.RevokeUserRequest(user_ids=["bob"]), metadata=backend(dev_app))
    revoked = await verify(stub, dev_app, dev_token({"user_id": "bob", "iat": now - 60}))
    assert revoked.outcome == Outcome.VERIFY_OUTCOME_REVOKED


async def test_server_token_is_not_accepted_as_a_user(stub: AuthServiceAsyncStub, new_app: NewApp) -> None:
    app = await new_app()
    server_token = jwt.encode({"server": True}, app.api_secret, algorithm="HS256")
    result = await verify(stub, app, server_token)
    assert not result.valid and result.outcome == Outcome.VERIFY_OUTCOME_MALFORMED


async def test_verify_needs_only_the_api_key(stub: AuthServiceAsyncStub, new_app: NewApp) -> None:
    app = await new_app()
    issued = await stub.IssueToken(pb.IssueTokenRequest(user_id="alice"), metadata=backend(app))
    failure = await expect_failure(stub.VerifyToken(pb.VerifyTokenRequest(token=issued.token)))
    assert (failure.code, failure.reason, failure.domain) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "MISSING_API_KEY",
        "authsvc",
    )
    unknown = await expect_failure(
        stub.VerifyToken(pb.VerifyTokenRequest(token=issued.token), metadata=[("x-api-key", "nosuchapp")])
    )
    assert (unknown.code, unknown.reason) == (grpc.StatusCode.NOT_FOUND, "APP_NOT_FOUND")
    # Sent twice, the first x-api-key counts (the access log names the same one).
    first_counts = await stub.VerifyToken(
        pb.VerifyTokenRequest(token=issued.token), metadata=[("x-api-key", app.api_key), ("x-api-key", "nosuchapp")]
    )
    assert first_counts.valid
    second_ignored = await expect_failure(
        stub.VerifyToken(
            pb.VerifyTokenRequest(token=issued.token), metadata=[("x-api-key", "nosuchapp"), ("x-api-key", app.api_key)]
        )
    )
    assert second_ignored.reason == "APP_NOT_FOUND"


async def test_the_servicer_reads_the_api_key_itself_without_the_interceptor(
    store: Store, state: State, settings: Settings, new_app: NewApp
) -> None:
    # The interceptor hands the API key it read to the handler; a server built without it (an embedding
    # application's own stack, which then maps errors to statuses itself) must still find the key in the
    # call's metadata, and refuse a call without one.
    app = await new_app()
    bare = grpc.aio.server()
    auth_service_pb2_grpc.add_AuthServiceServicer_to_server(
        AuthServicer(store, state, settings, system_clock, Metrics()), bare
    )
    port = bare.add_insecure_port("127.0.0.1:0")
    await bare.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            bare_stub = auth_service_pb2_grpc.AuthServiceStub(channel)
            issued = await bare_stub.IssueToken(pb.IssueTokenRequest(user_id="alice"), metadata=backend(app))
            result = await verify(bare_stub, app, issued.token)
            assert result.valid and result.user_id == "alice"
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await bare_stub.VerifyToken(pb.VerifyTokenRequest(token=issued.token))
            assert "x-api-key" in (refused.value.details() or "")
    finally:
        await bare.stop(None)


async def test_verify_tokens_answers_each_token_in_order(
    stub: AuthServiceAsyncStub, new_app: NewApp, clock: FakeClock
) -> None:
    app = await new_app()
    clock.freeze()
    alice = (await stub.IssueToken(pb.IssueTokenRequest(user_id="alice"), metadata=backend(app))).token
    bob = (await stub.IssueToken(pb.IssueTokenRequest(user_id="bob"), metadata=backend(app))).token
    clock.advance(S)
    await stub.RevokeUser(pb.RevokeUserRequest(user_ids=["bob"]), metadata=backend(app))
    response = await stub.VerifyTokens(
        pb.VerifyTokensRequest(tokens=[alice, "junk", bob, alice]), metadata=api_key_only(app)
    )
    assert [r.outcome for r in response.results] == [
        Outcome.VERIFY_OUTCOME_VALID,
        Outcome.VERIFY_OUTCOME_MALFORMED,
        Outcome.VERIFY_OUTCOME_REVOKED,
        Outcome.VERIFY_OUTCOME_VALID,
    ]
    assert [r.user_id for r in response.results] == ["alice", "", "bob", "alice"]


async def test_verify_tokens_batch_size_is_bounded(stub: AuthServiceAsyncStub, new_app: NewApp) -> None:
    app = await new_app()
    for size in (0, 1001):
        failure = await expect_failure(
            stub.VerifyTokens(pb.VerifyTokensRequest(tokens=["a.b.c"] * size), metadata=api_key_only(app))
        )
        assert (failure.code, failure.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_BATCH_SIZE")
