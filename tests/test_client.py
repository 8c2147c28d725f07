"""authsvc.client against the real test server, plus a tiny real gRPC peer for retries and deadlines.

The peer is a grpc.aio server registered with the generated AuthServiceServicer: it speaks authsvc.v1 on the wire
and answers UNAVAILABLE (with the ErrorInfo authsvc sends for DATABASE_UNAVAILABLE) as often as a test asks, so
the retry rules are observed from the server side, by counting the calls that arrived.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import threading
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from google.rpc import error_details_pb2, status_pb2

from authsvc.client import (
    ROUND_ROBIN,
    AuthClient,
    AuthsvcClientError,
    RevocationScope,
    SyncAuthClient,
    Verification,
    VerifyOutcome,
)
from authsvc.clock import MICROS_PER_SECOND as S
from authsvc.clock import Micros
from authsvc.errors import AuthsvcError, InvalidArgument, Unavailable
from authsvc.interceptors import status_of
from authsvc.server import RunningServer
from authsvc.tokens import App
from authsvc.v1 import auth_service_pb2 as pb
from authsvc.v1 import auth_service_pb2_grpc as pb_grpc
from tests.conftest import NewApp
from tests.support import FakeClock, newest_kid

ROOT = Path(__file__).resolve().parent.parent
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def at(micros: Micros) -> datetime:
    """The aware datetime of a clock reading."""
    return EPOCH + timedelta(microseconds=micros)


def client_for(server: RunningServer, app: App, *, credential: str | None = None, **options: Any) -> AuthClient:
    return AuthClient(f"127.0.0.1:{server.port}", app.api_key, credential or app.api_secret, **options)


@pytest.fixture
async def app(new_app: NewApp) -> App:
    return await new_app()


@pytest.fixture
async def client(server: RunningServer, app: App) -> AsyncIterator[AuthClient]:
    async with client_for(server, app) as client:
        yield client


# --- every method, against the real server ---------------------------------------------------------------------


async def test_issue_then_verify(client: AuthClient, app: App, clock: FakeClock) -> None:
    now = clock.freeze()
    issued = await client.issue_token("alice", ttl=timedelta(seconds=90), claims={"room": "general", "level": 3})
    assert issued.issued_at == at(now) and issued.issued_at.tzinfo is not None
    assert issued.expires_at == at(now + 90 * S)
    assert issued.key_id == newest_kid(app)
    assert issued.token.count(".") == 2 and issued.token not in repr(issued)

    result = await client.verify_token(issued.token)
    assert result.outcome is VerifyOutcome.VALID and result.valid
    assert result.user_id == "alice"
    assert result.issued_at == at(now) and result.expires_at == at(now + 90 * S)
    assert result.claims["room"] == "general"
    assert result.claims["level"] == 3 and isinstance(result.claims["level"], int)
    assert result.claims["aud"] == app.api_key and result.claims["user_id"] == "alice"
    assert not result.dev_token


async def test_a_client_made_outside_the_event_loop_works_in_it(server: RunningServer, app: App) -> None:
    # As a web app makes it at import time, before its server's loop runs: the channel opens on first use.
    client = await asyncio.to_thread(client_for, server, app)
    try:
        issued = await client.issue_token("alice")
        assert (await client.verify_token(issued.token)).valid
        await client.close()
        assert (await client.verify_token(issued.token)).valid  # closed, then used again: a new channel
    finally:
        await client.close()


async def test_issue_with_expires_at_or_app_default(client: AuthClient, clock: FakeClock) -> None:
    now = clock.freeze()
    issued = await client.issue_token("alice", expires_at=at(now + 3600 * S))
    assert issued.expires_at == at(now + 3600 * S)
    forever = await client.issue_token("bob")
    assert forever.expires_at is None
    assert (await client.verify_token(forever.token)).expires_at is None


async def test_issue_refuses_ambiguous_or_naive_times_client_side(client: AuthClient) -> None:
    with pytest.raises(ValueError, match="ttl or expires_at"):
        await client.issue_token("alice", ttl=timedelta(hours=1), expires_at=datetime.now(UTC) + timedelta(hours=1))
    with pytest.raises(ValueError, match="aware datetime"):
        await client.issue_token("alice", expires_at=datetime.now() + timedelta(hours=1))


def test_outcome_enum_mirrors_the_proto_enum() -> None:
    proto = {name.removeprefix("VERIFY_OUTCOME_"): number for name, number in pb.VerifyOutcome.items()}
    assert {outcome.name: outcome.value for outcome in VerifyOutcome} == proto
    assert VerifyOutcome.from_proto(pb.VERIFY_OUTCOME_REVOKED) is VerifyOutcome.REVOKED
    assert VerifyOutcome.from_proto(max(proto.values()) + 1) is VerifyOutcome.UNSPECIFIED


async def test_outcomes_other_than_valid(client: AuthClient, new_app: NewApp, clock: FakeClock) -> None:
    assert (await client.verify_token("not-a-jwt")).outcome is VerifyOutcome.MALFORMED
    other = await new_app()
    foreign = jwt.encode({"user_id": "alice"}, other.api_secret, algorithm="HS256")
    forged = await client.verify_token(foreign)
    assert forged.outcome is VerifyOutcome.INVALID_SIGNATURE and not forged.valid
    assert forged.user_id is None and forged.claims == {} and forged.issued_at is None

    now = clock.freeze()
    issued = await client.issue_token("alice", ttl=timedelta(seconds=60))
    clock.advance(65 * S)
    expired = await client.verify_token(issued.token)
    assert expired.outcome is VerifyOutcome.EXPIRED and not expired.valid
    assert expired.user_id == "alice", "an EXPIRED answer says whose token needs a refresh"
    assert expired.expires_at == at(now + 60 * S)


async def test_verify_tokens_answers_in_order(client: AuthClient, clock: FakeClock) -> None:
    clock.freeze()
    alice = await client.issue_token("alice")
    bob = await client.issue_token("bob")
    results = await client.verify_tokens([alice.token, "garbage", bob.token])
    assert [r.outcome for r in results] == [VerifyOutcome.VALID, VerifyOutcome.MALFORMED, VerifyOutcome.VALID]
    assert [r.user_id for r in results] == ["alice", None, "bob"]
    assert all(isinstance(r, Verification) for r in results)


async def test_revoke_users_then_clear(client: AuthClient, clock: FakeClock) -> None:
    clock.freeze()
    alice, bob = await client.issue_token("alice"), await client.issue_token("bob")
    now = clock.advance(S)
    revoked = await client.revoke_users(["alice", "carol"])
    assert revoked == {"alice": at(now), "carol": at(now)}
    assert list(revoked) == ["alice", "carol"]
    assert (await client.verify_token(alice.token)).outcome is VerifyOutcome.REVOKED
    assert (await client.verify_token(bob.token)).outcome is VerifyOutcome.VALID

    # Revoking again with an earlier time never moves the revocation backwards.
    again = await client.revoke_users(["alice"], before=at(now - 10 * S))
    assert again == {"alice": at(now)}

    assert await client.clear_user_revocations(["alice", "bob"]) == ["alice"]
    assert await client.clear_user_revocations(["alice"]) == []
    assert (await client.verify_token(alice.token)).outcome is VerifyOutcome.VALID


async def test_revoke_app_then_clear(client: AuthClient, clock: FakeClock) -> None:
    clock.freeze()
    issued = await client.issue_token("alice")
    now = clock.advance(S)
    assert await client.revoke_app() == at(now)
    assert await client.revoke_app(before=at(now - S)) == at(now)
    assert (await client.verify_token(issued.token)).outcome is VerifyOutcome.REVOKED
    assert await client.clear_app_revocation() is True
    assert await client.clear_app_revocation() is False
    assert (await client.verify_token(issued.token)).outcome is VerifyOutcome.VALID


async def test_round_robin_channel_options_work(server: RunningServer, app: App) -> None:
    target = f"ipv4:127.0.0.1:{server.port},127.0.0.1:{server.port}"
    async with AuthClient(target, app.api_key, app.api_secret, channel_options=ROUND_ROBIN) as client:
        issued = await client.issue_token("alice")
        assert (await client.verify_token(issued.token)).outcome is VerifyOutcome.VALID


# --- errors -------------------------------------------------------------------------------------------------------


async def test_errors_carry_code_and_reason(client: AuthClient) -> None:
    with pytest.raises(AuthsvcClientError) as info:
        await client.issue_token("")
    error = info.value
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "INVALID_USER_ID" and error.domain == "authsvc"
    assert error.message and "INVALID_USER_ID" in str(error)
    assert isinstance(error.__cause__, grpc.aio.AioRpcError)

    with pytest.raises(AuthsvcClientError) as info:
        await client.revoke_users([])
    assert (info.value.code, info.value.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "NO_USER_IDS")
    with pytest.raises(AuthsvcClientError) as info:
        await client.verify_tokens([])
    assert info.value.reason == "INVALID_BATCH_SIZE"


async def test_credential_and_app_errors(server: RunningServer, app: App, new_app: NewApp) -> None:
    async with client_for(server, app, credential="not-the-secret") as client:
        with pytest.raises(AuthsvcClientError) as info:
            await client.issue_token("alice")
        assert (info.value.code, info.value.reason) == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIAL")
    other = await new_app()
    async with client_for(server, other) as client:
        # A call naming the new app makes the server catch up with it (its app list follows the database);
        # only an app it knows can be recognised as the owner of a credential.
        assert (await client.verify_token("a.b.c")).outcome is VerifyOutcome.MALFORMED
    async with client_for(server, app, credential=other.api_secret) as client:
        with pytest.raises(AuthsvcClientError) as info:
            await client.revoke_app()
        assert (info.value.code, info.value.reason) == (grpc.StatusCode.PERMISSION_DENIED, "CREDENTIAL_OF_ANOTHER_APP")
    async with AuthClient(f"127.0.0.1:{server.port}", "no-such-key") as client:
        with pytest.raises(AuthsvcClientError) as info:
            await client.verify_token("a.b.c")
        assert (info.value.code, info.value.reason) == (grpc.StatusCode.NOT_FOUND, "APP_NOT_FOUND")


async def test_single_string_is_refused_as_a_list(client: AuthClient) -> None:
    with pytest.raises(TypeError, match="not a single string"):
        await client.revoke_users("alice")
    with pytest.raises(TypeError, match="not a single string"):
        await client.verify_tokens("a.b.c")


# --- a real peer: metadata, missing credential, retries, deadlines ----------------------------------------------


class Peer(pb_grpc.AuthServiceServicer):
    """A real authsvc.v1 server that counts calls, records their metadata, and fails or hangs on request."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.metadata: dict[str, dict[str, str]] = {}
        self.failures = 0
        self.error: AuthsvcError = Unavailable("the database is unavailable; nothing was changed")
        self.hang = False

    async def _answer(self, method: str, context: grpc.aio.ServicerContext[Any, Any], response: Any) -> Any:
        self.calls[method] += 1
        self.metadata[method] = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
        if self.hang:
            await asyncio.Event().wait()
        if self.calls[method] <= self.failures:
            await context.abort_with_status(status_of(self.error))
        return response

    async def IssueToken(self, request: pb.IssueTokenRequest, context: Any) -> pb.IssueTokenResponse:
        response = pb.IssueTokenResponse(token="a.b.c", key_id="k")
        response.issued_at.GetCurrentTime()
        result: pb.IssueTokenResponse = await self._answer("IssueToken", context, response)
        return result

    async def VerifyToken(self, request: pb.VerifyTokenRequest, context: Any) -> pb.VerifyTokenResponse:
        response = pb.VerifyTokenResponse(valid=True, outcome=pb.VERIFY_OUTCOME_VALID, user_id="alice")
        result: pb.VerifyTokenResponse = await self._answer("VerifyToken", context, response)
        return result

    async def VerifyTokens(self, request: pb.VerifyTokensRequest, context: Any) -> pb.VerifyTokensResponse:
        one = pb.VerifyTokenResponse(valid=True, outcome=pb.VERIFY_OUTCOME_VALID, user_id="alice")
        response = pb.VerifyTokensResponse(results=[one for _ in request.tokens])
        result: pb.VerifyTokensResponse = await self._answer("VerifyTokens", context, response)
        return result

    async def RevokeUser(self, request: pb.RevokeUserRequest, context: Any) -> pb.RevokeUserResponse:
        response = pb.RevokeUserResponse(revocations=[pb.UserRevocation(user_id=u) for u in request.user_ids])
        result: pb.RevokeUserResponse = await self._answer("RevokeUser", context, response)
        return result

    async def RevokeApp(self, request: pb.RevokeAppRequest, context: Any) -> pb.RevokeAppResponse:
        result: pb.RevokeAppResponse = await self._answer("RevokeApp", context, pb.RevokeAppResponse())
        return result

    async def ClearRevocation(self, request: pb.ClearRevocationRequest, context: Any) -> pb.ClearRevocationResponse:
        response = pb.ClearRevocationResponse(cleared_user_ids=request.users.user_ids, app_cleared=request.app)
        result: pb.ClearRevocationResponse = await self._answer("ClearRevocation", context, response)
        return result

    async def GetJwks(self, request: pb.GetJwksRequest, context: Any) -> pb.GetJwksResponse:
        result: pb.GetJwksResponse = await self._answer("GetJwks", context, pb.GetJwksResponse())
        return result


PeerServer = tuple[Peer, int]


@pytest.fixture
async def peer() -> AsyncIterator[PeerServer]:
    servicer = Peer()  # type: ignore[abstract]  # WatchState: UNIMPLEMENTED
    server = grpc.aio.server()
    pb_grpc.add_AuthServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield servicer, port
    await server.stop(None)


def peer_client(peer: PeerServer, credential: str | None = "secret", **options: Any) -> AuthClient:
    return AuthClient(f"127.0.0.1:{peer[1]}", "key", credential, retry_backoff=0.01, **options)


async def call_every_method(client: AuthClient) -> None:
    await client.issue_token("alice")
    await client.verify_token("a.b.c")
    await client.verify_tokens(["a.b.c"])
    await client.revoke_users(["alice"])
    await client.revoke_app()
    await client.clear_user_revocations(["alice"])
    await client.clear_app_revocation()


async def test_metadata_sends_the_credential_only_where_needed(peer: PeerServer) -> None:
    servicer, _ = peer
    async with peer_client(peer) as client:
        await call_every_method(client)
    for method, metadata in servicer.metadata.items():
        assert metadata["x-api-key"] == "key", method
        if method.startswith("Verify"):
            assert "authorization" not in metadata, method
        else:
            assert metadata["authorization"] == "Bearer secret", method


async def test_missing_credential_fails_client_side(peer: PeerServer) -> None:
    servicer, _ = peer
    async with peer_client(peer, credential=None) as client:
        assert "secret" not in repr(client)
        with pytest.raises(ValueError, match="IssueToken needs the app's credential"):
            await client.issue_token("alice")
        with pytest.raises(ValueError, match="RevokeUser needs the app's credential"):
            await client.revoke_users(["alice"])
        with pytest.raises(ValueError, match="RevokeApp needs the app's credential"):
            await client.revoke_app()
        with pytest.raises(ValueError, match="ClearRevocation needs the app's credential"):
            await client.clear_user_revocations(["alice"])
        with pytest.raises(ValueError, match="ClearRevocation needs the app's credential"):
            await client.clear_app_revocation()
        assert not servicer.calls, "nothing reached the server"
        assert (await client.verify_token("a.b.c")).outcome is VerifyOutcome.VALID, "verifying needs no credential"
    assert servicer.calls == Counter({"VerifyToken": 1})


async def test_read_only_call_is_retried_on_unavailable(peer: PeerServer) -> None:
    servicer, _ = peer
    servicer.failures = 2
    async with peer_client(peer) as client:
        result = await client.verify_token("a.b.c")
        assert result.outcome is VerifyOutcome.VALID and result.user_id == "alice"
        assert servicer.calls["VerifyToken"] == 3
        assert len(await client.verify_tokens(["a.b.c", "d.e.f"])) == 2
        assert servicer.calls["VerifyTokens"] == 3


async def test_idempotent_calls_are_retried_on_unavailable(peer: PeerServer) -> None:
    servicer, _ = peer
    servicer.failures = 2
    async with peer_client(peer) as client:
        assert list(await client.revoke_users(["alice", "bob"])) == ["alice", "bob"]
        await client.revoke_app()
        assert await client.clear_user_revocations(["alice"]) == ["alice"]
    assert servicer.calls == Counter({"RevokeUser": 3, "RevokeApp": 3, "ClearRevocation": 3})


async def test_retries_are_bounded_and_the_last_error_is_decoded(peer: PeerServer) -> None:
    servicer, _ = peer
    servicer.failures = 100
    async with peer_client(peer) as client:
        with pytest.raises(AuthsvcClientError) as info:
            await client.verify_token("a.b.c")
    assert (info.value.code, info.value.reason) == (grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE")
    assert servicer.calls["VerifyToken"] == 3
    async with peer_client(peer, retry_attempts=5) as client:
        with pytest.raises(AuthsvcClientError):
            await client.clear_app_revocation()
    assert servicer.calls["ClearRevocation"] == 5


async def test_issue_token_is_never_retried(peer: PeerServer) -> None:
    servicer, _ = peer
    servicer.failures = 1
    async with peer_client(peer) as client:
        with pytest.raises(AuthsvcClientError) as info:
            await client.issue_token("alice")
        assert info.value.code is grpc.StatusCode.UNAVAILABLE
        assert servicer.calls["IssueToken"] == 1, "one attempt only: a retry could mint a second token"
        issued = await client.issue_token("alice")
    assert issued.token == "a.b.c" and servicer.calls["IssueToken"] == 2


async def test_other_errors_are_not_retried(peer: PeerServer) -> None:
    servicer, _ = peer
    servicer.failures = 1
    servicer.error = InvalidArgument("user_id is empty", "INVALID_USER_ID")
    async with peer_client(peer) as client:
        with pytest.raises(AuthsvcClientError) as info:
            await client.revoke_users(["alice"])
    assert info.value.reason == "INVALID_USER_ID"
    assert servicer.calls["RevokeUser"] == 1


async def test_a_connection_failure_is_unavailable_without_reason() -> None:
    async with AuthClient("127.0.0.1:1", "key", retry_backoff=0.01) as client:
        with pytest.raises(AuthsvcClientError) as info:
            await client.verify_token("a.b.c")
    assert info.value.code is grpc.StatusCode.UNAVAILABLE and info.value.reason == ""


async def test_every_call_has_a_deadline(peer: PeerServer) -> None:
    servicer, _ = peer
    servicer.hang = True
    async with peer_client(peer, timeout=0.2) as client:
        calls: dict[str, Callable[[], Awaitable[object]]] = {
            "IssueToken": lambda: client.issue_token("alice"),
            "VerifyToken": lambda: client.verify_token("a.b.c"),
            "VerifyTokens": lambda: client.verify_tokens(["a.b.c"]),
            "RevokeUser": lambda: client.revoke_users(["alice"]),
            "RevokeApp": lambda: client.revoke_app(),
            "ClearRevocation": lambda: client.clear_user_revocations(["alice"]),
        }
        for method, call in calls.items():
            with pytest.raises(AuthsvcClientError) as info:
                await call()
            assert info.value.code is grpc.StatusCode.DEADLINE_EXCEEDED, method
            assert info.value.reason == ""
    assert all(count == 1 for count in servicer.calls.values()), "a deadline is not retried"
    assert len(servicer.calls) == 6


# --- SyncAuthClient: the blocking twin ------------------------------------------------------------------------------
# Called from worker threads (asyncio.to_thread): the test server runs in this test's event loop, which a blocking
# call made in it would stall.


async def test_sync_client_issues_verifies_revokes_and_clears(server: RunningServer, app: App) -> None:
    client = SyncAuthClient(f"127.0.0.1:{server.port}", app.api_key, app.api_secret)

    def session() -> tuple[Verification, list[Verification], dict[str, datetime], Verification, list[str], bool]:
        with client:
            issued = client.issue_token("alice", ttl=timedelta(hours=1), claims={"room": "general"})
            first = client.verify_token(issued.token)
            both = client.verify_tokens([issued.token, "a.b.c"])
            revoked = client.revoke_users(["alice"])
            after = client.verify_token(issued.token)
            cleared = client.clear_user_revocations(["alice"])
            valid_again = client.verify_token(issued.token).valid
            return first, both, revoked, after, cleared, valid_again

    first, both, revoked, after, cleared, valid_again = await asyncio.to_thread(session)
    assert (first.outcome, first.user_id, first.claims["room"]) == (VerifyOutcome.VALID, "alice", "general")
    assert [v.outcome for v in both] == [VerifyOutcome.VALID, VerifyOutcome.MALFORMED]
    assert list(revoked) == ["alice"] and after.outcome is VerifyOutcome.REVOKED
    assert cleared == ["alice"] and valid_again
    assert "authsvc-client" not in {thread.name for thread in threading.enumerate()}, "close() ends its thread"
    assert app.api_secret not in repr(client) and repr(client).startswith("SyncAuthClient(")


async def test_sync_client_logs_out_one_device(server: RunningServer, app: App) -> None:
    """revoke_token and clear_token_revocations, blocking: one token REVOKED (by TOKEN), another of the same
    user still VALID, then the revocation cleared."""
    client = SyncAuthClient(f"127.0.0.1:{server.port}", app.api_key, app.api_secret)

    def session() -> tuple[Verification, Verification, list[str], Verification]:
        with client:
            phone, laptop = (client.issue_token("alice").token for _ in range(2))
            revoked = client.revoke_token(phone)
            assert revoked.jti
            after = client.verify_token(phone)
            other = client.verify_token(laptop)
            cleared = client.clear_token_revocations([revoked.jti])
            return after, other, cleared, client.verify_token(phone)

    after, other, cleared, again = await asyncio.to_thread(session)
    assert after.outcome is VerifyOutcome.REVOKED and after.revoked_by is RevocationScope.TOKEN
    assert other.outcome is VerifyOutcome.VALID
    assert len(cleared) == 1 and again.outcome is VerifyOutcome.VALID


async def test_sync_client_raises_the_same_errors(server: RunningServer, app: App) -> None:
    def failures() -> list[BaseException]:
        caught: list[BaseException] = []
        with SyncAuthClient(f"127.0.0.1:{server.port}", app.api_key, app.api_secret) as client:
            for call in (lambda: client.issue_token(""), lambda: client.revoke_users([])):
                try:
                    call()
                except AuthsvcClientError as error:
                    caught.append(error)
        with SyncAuthClient(f"127.0.0.1:{server.port}", app.api_key) as client:
            try:
                client.revoke_app()
            except ValueError as error:
                caught.append(error)
        return caught

    empty_user, no_users, no_credential = await asyncio.to_thread(failures)
    assert isinstance(empty_user, AuthsvcClientError) and isinstance(no_users, AuthsvcClientError)
    assert (empty_user.code, empty_user.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_USER_ID")
    assert no_users.reason == "NO_USER_IDS"
    assert isinstance(no_credential, ValueError) and "RevokeApp needs the app's credential" in str(no_credential)


async def test_sync_client_is_shared_by_threads_and_reopens_after_close(server: RunningServer, app: App) -> None:
    client = SyncAuthClient(f"127.0.0.1:{server.port}", app.api_key, app.api_secret)
    token = (await asyncio.to_thread(client.issue_token, "bob")).token
    results = await asyncio.gather(*(asyncio.to_thread(client.verify_token, token) for _ in range(16)))
    assert {(r.outcome, r.user_id) for r in results} == {(VerifyOutcome.VALID, "bob")}
    await asyncio.to_thread(client.close)
    assert (await asyncio.to_thread(client.verify_token, token)).outcome is VerifyOutcome.VALID
    await asyncio.to_thread(client.close)
    await asyncio.to_thread(client.close)  # closing twice is harmless


# --- the rich status, decoded without grpcio-status ---------------------------------------------------------------


class Trailing(pb_grpc.AuthServiceServicer):
    """Answers VerifyToken with a status whose grpc-status-details-bin trailer the test chooses."""

    def __init__(self, code: grpc.StatusCode, message: str, details: bytes) -> None:
        self.code, self.message, self.details = code, message, details

    async def VerifyToken(self, request: pb.VerifyTokenRequest, context: Any) -> pb.VerifyTokenResponse:
        context.set_trailing_metadata((("grpc-status-details-bin", self.details),))
        await context.abort(self.code, self.message)
        raise AssertionError("abort raises")


def rich_status(code: grpc.StatusCode, message: str, *details: tuple[str, bytes]) -> bytes:
    status = status_pb2.Status(code=code.value[0], message=message)
    for type_url, value in details:
        status.details.add(type_url=type_url, value=value)
    serialized: bytes = status.SerializeToString()
    return serialized


INFO = error_details_pb2.ErrorInfo(reason="SOME_REASON", domain="authsvc", metadata={"k": "v"}).SerializeToString()


@pytest.mark.parametrize(
    ("details", "expected"),
    [
        (rich_status(grpc.StatusCode.NOT_FOUND, "gone", ("type.googleapis.com/google.rpc.ErrorInfo", INFO)),
         ("SOME_REASON", "authsvc", {"k": "v"})),
        # The ErrorInfo after another detail is still found.
        (rich_status(grpc.StatusCode.NOT_FOUND, "gone", ("type.googleapis.com/google.rpc.RetryInfo", b""),
                     ("type.googleapis.com/google.rpc.ErrorInfo", INFO)), ("SOME_REASON", "authsvc", {"k": "v"})),
        # A rich status that disagrees with the call's code: the call is trusted, no reason.
        (rich_status(grpc.StatusCode.INTERNAL, "gone", ("type.googleapis.com/google.rpc.ErrorInfo", INFO)),
         ("", "", {})),
        (b"\xff\xffnot a status", ("", "", {})),
        (rich_status(grpc.StatusCode.NOT_FOUND, "gone", ("type.googleapis.com/google.rpc.ErrorInfo", b"\xff\xff")),
         ("", "", {})),
    ],
    ids=["error-info", "after-another-detail", "disagrees-with-the-call", "not-a-status", "malformed-error-info"],
)  # fmt: skip
async def test_the_rich_status_is_decoded_or_safely_ignored(
    details: bytes, expected: tuple[str, str, dict[str, str]]
) -> None:
    error = await failed_with(details)
    assert (error.code, error.message) == (grpc.StatusCode.NOT_FOUND, "gone")
    assert (error.reason, error.domain, error.metadata) == expected


def retry_info(seconds: int, nanos: int = 0) -> bytes:
    info = error_details_pb2.RetryInfo()
    info.retry_delay.seconds, info.retry_delay.nanos = seconds, nanos
    serialized: bytes = info.SerializeToString()
    return serialized


RETRY = "type.googleapis.com/google.rpc.RetryInfo"
ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"


@pytest.mark.parametrize(
    ("details", "expected"),
    [
        (rich_status(grpc.StatusCode.NOT_FOUND, "gone", (ERROR_INFO, INFO), (RETRY, retry_info(2, 500_000_000))), 2.5),
        (rich_status(grpc.StatusCode.NOT_FOUND, "gone", (RETRY, retry_info(15)), (ERROR_INFO, INFO)), 15.0),
        (rich_status(grpc.StatusCode.NOT_FOUND, "gone", (ERROR_INFO, INFO)), None),
        (rich_status(grpc.StatusCode.NOT_FOUND, "gone", (RETRY, b""), (ERROR_INFO, INFO)), None),  # no delay in it
        (rich_status(grpc.StatusCode.NOT_FOUND, "gone", (RETRY, retry_info(-1)), (ERROR_INFO, INFO)), None),
        (rich_status(grpc.StatusCode.NOT_FOUND, "gone", (RETRY, b"\xff\xff"), (ERROR_INFO, INFO)), None),
    ],
    ids=["after-error-info", "before-error-info", "none", "empty", "negative", "malformed"],
)  # fmt: skip
async def test_a_retry_delay_is_decoded_or_safely_ignored(details: bytes, expected: float | None) -> None:
    error = await failed_with(details)
    assert error.retry_after == expected
    assert error.reason == "SOME_REASON"  # whatever the RetryInfo, the ErrorInfo beside it is read


async def failed_with(details: bytes) -> AuthsvcClientError:
    """The client's error for a VerifyToken answered NOT_FOUND "gone" with this grpc-status-details-bin trailer."""
    server = grpc.aio.server()
    servicer = Trailing(grpc.StatusCode.NOT_FOUND, "gone", details)  # type: ignore[abstract]  # VerifyToken only
    pb_grpc.add_AuthServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with AuthClient(f"127.0.0.1:{port}", "key", retry_attempts=1) as client:
            with pytest.raises(AuthsvcClientError) as info:
                await client.verify_token("a.b.c")
    finally:
        await server.stop(None)
    return info.value


# --- the README example -------------------------------------------------------------------------------------------


def readme_python_example() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Calling authsvc from code", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the section has one Python example"
    return str(blocks[0])


async def test_readme_python_example_works_as_printed(server: RunningServer, app: App, tmp_path: Path) -> None:
    example = readme_python_example()
    assert "localhost:50051" in example
    script = tmp_path / "example.py"
    script.write_text(example.replace("localhost:50051", f"localhost:{server.port}"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHSVC_")}
    env.update(API_KEY=app.api_key, API_SECRET=app.api_secret)
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(script), cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    assert out.decode() == "VALID alice\nREVOKED\n"
