"""Every credential error and every bad input gets a typed status with a reason, never a traceback."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
import jwt
import pytest
from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2

from authsvc.clock import MICROS_PER_SECOND as S
from authsvc.v1 import auth_service_pb2 as pb
from tests.conftest import NewApp

if TYPE_CHECKING:
    from authsvc.v1.auth_service_pb2_grpc import AuthServiceAsyncStub
from tests.support import FakeClock, Metadata, backend, expect_failure

Call = Callable[["AuthServiceAsyncStub", Metadata], Awaitable[Any]]

# The four calls that need the app's credential, each with a valid request.
BACKEND_CALLS: dict[str, Call] = {
    "IssueToken": lambda stub, md: stub.IssueToken(pb.IssueTokenRequest(user_id="alice"), metadata=md),
    "RevokeUser": lambda stub, md: stub.RevokeUser(pb.RevokeUserRequest(user_ids=["alice"]), metadata=md),
    "RevokeApp": lambda stub, md: stub.RevokeApp(pb.RevokeAppRequest(), metadata=md),
    "ClearRevocation": lambda stub, md: stub.ClearRevocation(pb.ClearRevocationRequest(app=True), metadata=md),
}


def stamp(micros: int) -> timestamp_pb2.Timestamp:
    result = timestamp_pb2.Timestamp()
    result.FromMicroseconds(micros)
    return result


@pytest.mark.parametrize("call", BACKEND_CALLS.values(), ids=BACKEND_CALLS.keys())
async def test_credentials_that_work(stub: AuthServiceAsyncStub, new_app: NewApp, call: Call) -> None:
    app = await new_app()
    await call(stub, backend(app))
    server_token = jwt.encode({"server": True}, app.api_secret, algorithm="HS256")
    await call(stub, backend(app, server_token))


@pytest.mark.parametrize("call", BACKEND_CALLS.values(), ids=BACKEND_CALLS.keys())
async def test_credential_errors(stub: AuthServiceAsyncStub, new_app: NewApp, clock: FakeClock, call: Call) -> None:
    app, other = await new_app("mine"), await new_app("theirs")
    now = clock.freeze() // S
    key = ("x-api-key", app.api_key)
    user_token = (await stub.IssueToken(pb.IssueTokenRequest(user_id="alice"), metadata=backend(app))).token
    cases: list[tuple[list[tuple[str, str]], grpc.StatusCode, str]] = [
        ([("authorization", f"Bearer {app.api_secret}")], grpc.StatusCode.UNAUTHENTICATED, "MISSING_API_KEY"),
        ([("x-api-key", "unknown-app-key")], grpc.StatusCode.NOT_FOUND, "APP_NOT_FOUND"),
        ([key], grpc.StatusCode.UNAUTHENTICATED, "MISSING_CREDENTIAL"),
        ([key, ("authorization", app.api_secret)], grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIAL"),
        ([key, ("authorization", "Bearer wrong")], grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIAL"),
        ([key, ("authorization", "Bearer ")], grpc.StatusCode.UNAUTHENTICATED, "MISSING_CREDENTIAL"),
        (
            [key, ("authorization", "Bearer " + jwt.encode({"server": True}, "x" * 43, algorithm="HS256"))],
            grpc.StatusCode.UNAUTHENTICATED,
            "INVALID_CREDENTIAL",
        ),
        (
            [key, ("authorization", "Bearer " + jwt.encode({"server": True, "exp": now - 60}, app.api_secret))],
            grpc.StatusCode.UNAUTHENTICATED,
            "CREDENTIAL_EXPIRED",
        ),
        ([key, ("authorization", f"Bearer {user_token}")], grpc.StatusCode.PERMISSION_DENIED, "USER_TOKEN_NOT_ALLOWED"),
        (
            [key, ("authorization", f"Bearer {other.api_secret}")],
            grpc.StatusCode.PERMISSION_DENIED,
            "CREDENTIAL_OF_ANOTHER_APP",
        ),
        (
            [key, ("authorization", "Bearer " + jwt.encode({"server": True}, other.api_secret, algorithm="HS256"))],
            grpc.StatusCode.PERMISSION_DENIED,
            "CREDENTIAL_OF_ANOTHER_APP",
        ),
    ]
    for metadata, code, reason in cases:
        failure = await expect_failure(call(stub, tuple(metadata)))
        assert (failure.code, failure.reason, failure.domain) == (code, reason, "authsvc"), metadata
        assert app.api_secret not in failure.message and other.api_secret not in failure.message


async def test_a_failed_credential_changes_nothing(stub: AuthServiceAsyncStub, new_app: NewApp) -> None:
    app = await new_app()
    issued = await stub.IssueToken(pb.IssueTokenRequest(user_id="alice"), metadata=backend(app))
    await expect_failure(stub.RevokeApp(pb.RevokeAppRequest(), metadata=backend(app, "Bearer-nonsense")))
    verified = await stub.VerifyToken(pb.VerifyTokenRequest(token=issued.token), metadata=[("x-api-key", app.api_key)])
    assert verified.valid


BAD_REQUESTS: list[tuple[str, Call, str]] = [
    ("empty-user-id", lambda s, md: s.IssueToken(pb.IssueTokenRequest(user_id=""), metadata=md), "INVALID_USER_ID"),
    (
        "user-id-with-space",
        lambda s, md: s.IssueToken(pb.IssueTokenRequest(user_id="bob smith"), metadata=md),
        "INVALID_USER_ID",
    ),
    (
        "user-id-too-long",
        lambda s, md: s.IssueToken(pb.IssueTokenRequest(user_id="a" * 256), metadata=md),
        "INVALID_USER_ID",
    ),
    (
        "expiry-in-past",
        lambda s, md: s.IssueToken(pb.IssueTokenRequest(user_id="a", expires_at=stamp(S)), metadata=md),
        "EXPIRY_IN_PAST",
    ),
    (
        "negative-ttl",
        lambda s, md: s.IssueToken(
            pb.IssueTokenRequest(user_id="a", ttl=duration_pb2.Duration(seconds=-5)), metadata=md
        ),
        "INVALID_TTL",
    ),
    (
        "reserved-claim",
        lambda s, md: s.IssueToken(pb.IssueTokenRequest(user_id="a", claims=_claims({"server": True})), metadata=md),
        "RESERVED_CLAIM",
    ),
    (
        "claims-too-large",
        lambda s, md: s.IssueToken(pb.IssueTokenRequest(user_id="a", claims=_claims({"x": "y" * 5000})), metadata=md),
        "CLAIMS_TOO_LARGE",
    ),
    ("no-user-ids", lambda s, md: s.RevokeUser(pb.RevokeUserRequest(), metadata=md), "NO_USER_IDS"),
    (
        "too-many-user-ids",
        lambda s, md: s.RevokeUser(pb.RevokeUserRequest(user_ids=[f"u{i}" for i in range(1001)]), metadata=md),
        "TOO_MANY_USER_IDS",
    ),
    (
        "bad-user-id-in-list",
        lambda s, md: s.RevokeUser(pb.RevokeUserRequest(user_ids=["ok", "not ok"]), metadata=md),
        "INVALID_USER_ID",
    ),
    (
        "user-revocation-in-future",
        lambda s, md: s.RevokeUser(
            pb.RevokeUserRequest(user_ids=["a"], revoke_before=stamp(4_000_000_000 * S)), metadata=md
        ),
        "REVOCATION_IN_FUTURE",
    ),
    (
        "app-revocation-in-future",
        lambda s, md: s.RevokeApp(pb.RevokeAppRequest(revoke_before=stamp(4_000_000_000 * S)), metadata=md),
        "REVOCATION_IN_FUTURE",
    ),
    (
        "invalid-timestamp",
        lambda s, md: s.RevokeApp(
            pb.RevokeAppRequest(revoke_before=timestamp_pb2.Timestamp(seconds=1, nanos=-1)), metadata=md
        ),
        "INVALID_TIMESTAMP",
    ),
    (
        "clear-without-target",
        lambda s, md: s.ClearRevocation(pb.ClearRevocationRequest(), metadata=md),
        "NO_REVOCATION_TARGET",
    ),
    (
        "clear-app-false",
        lambda s, md: s.ClearRevocation(pb.ClearRevocationRequest(app=False), metadata=md),
        "NO_REVOCATION_TARGET",
    ),
    (
        "clear-no-users",
        lambda s, md: s.ClearRevocation(pb.ClearRevocationRequest(users=pb.UserIds()), metadata=md),
        "NO_USER_IDS",
    ),
    (
        "verify-no-tokens",
        lambda s, md: s.VerifyTokens(pb.VerifyTokensRequest(), metadata=md),
        "INVALID_BATCH_SIZE",
    ),
    (
        "issue-guest-namespace",
        lambda s, md: s.IssueToken(pb.IssueTokenRequest(user_id="guest-alice"), metadata=md),
        "RESERVED_USER_ID",
    ),
]


def _claims(values: dict[str, Any]) -> struct_pb2.Struct:
    claims = struct_pb2.Struct()
    claims.update(values)
    return claims


@pytest.mark.parametrize(("call", "reason"), [(c, r) for _, c, r in BAD_REQUESTS], ids=[n for n, _, _ in BAD_REQUESTS])
async def test_bad_input_is_invalid_argument_with_a_reason(
    stub: AuthServiceAsyncStub, new_app: NewApp, call: Call, reason: str
) -> None:
    app = await new_app()
    failure = await expect_failure(call(stub, backend(app)))
    assert (failure.code, failure.reason, failure.domain) == (grpc.StatusCode.INVALID_ARGUMENT, reason, "authsvc")
    assert failure.message and "Traceback" not in failure.message


async def test_a_garbage_token_is_an_answer_not_a_failure(stub: AuthServiceAsyncStub, new_app: NewApp) -> None:
    app = await new_app()
    for token in ("x" * 100_000, "\u2603.\u2603.\u2603", "a.b.c", "....", "eyJ9.eyJ9.eyJ9"):
        response = await stub.VerifyToken(pb.VerifyTokenRequest(token=token), metadata=[("x-api-key", app.api_key)])
        assert not response.valid and response.outcome == pb.VerifyOutcome.VERIFY_OUTCOME_MALFORMED
