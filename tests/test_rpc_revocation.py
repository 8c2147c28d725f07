"""RevokeUser, RevokeApp and ClearRevocation over gRPC, against a real server and PostgreSQL."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import asyncpg
import jwt
from google.protobuf import timestamp_pb2

from authsvc.clock import MICROS_PER_SECOND as S
from authsvc.store import Store
from authsvc.v1 import auth_service_pb2 as pb
from tests.conftest import NewApp

if TYPE_CHECKING:
    from authsvc.v1.auth_service_pb2_grpc import AuthServiceAsyncStub
from tests.support import FakeClock, api_key_only, backend, stored_revocation

Outcome = pb.VerifyOutcome


def stamp(micros: int) -> timestamp_pb2.Timestamp:
    result = timestamp_pb2.Timestamp()
    result.FromMicroseconds(micros)
    return result


async def issue(stub: AuthServiceAsyncStub, app: Any, user_id: str) -> str:
    response = await stub.IssueToken(pb.IssueTokenRequest(user_id=user_id), metadata=backend(app))
    token: str = response.token
    return token


async def outcome(stub: AuthServiceAsyncStub, app: Any, token: str) -> int:
    response = await stub.VerifyToken(pb.VerifyTokenRequest(token=token), metadata=api_key_only(app))
    result: int = response.outcome
    return result


async def test_revoke_user_rejects_earlier_tokens_and_spares_others(
    stub: AuthServiceAsyncStub, new_app: NewApp, clock: FakeClock
) -> None:
    app = await new_app()
    clock.freeze()
    alice, bob = await issue(stub, app, "alice"), await issue(stub, app, "bob")
    clock.advance(S)
    response = await stub.RevokeUser(pb.RevokeUserRequest(user_ids=["alice"]), metadata=backend(app))
    assert [r.user_id for r in response.revocations] == ["alice"]
    assert response.revocations[0].revoked_before.ToMicroseconds() == clock()
    assert await outcome(stub, app, alice) == Outcome.VERIFY_OUTCOME_REVOKED
    assert await outcome(stub, app, bob) == Outcome.VERIFY_OUTCOME_VALID
    clock.advance(S)
    assert await outcome(stub, app, await issue(stub, app, "alice")) == Outcome.VERIFY_OUTCOME_VALID


async def test_millisecond_precision_on_both_sides_of_a_revocation(
    stub: AuthServiceAsyncStub, new_app: NewApp, clock: FakeClock
) -> None:
    app = await new_app()
    start = clock.freeze()
    before = await issue(stub, app, "alice")
    clock.set(start + 3_000)  # 3 ms later
    await stub.RevokeUser(pb.RevokeUserRequest(user_ids=["alice"]), metadata=backend(app))
    clock.set(start + 5_000)  # 2 ms after the revocation
    after = await issue(stub, app, "alice")
    assert await outcome(stub, app, before) == Outcome.VERIFY_OUTCOME_REVOKED
    assert await outcome(stub, app, after) == Outcome.VERIFY_OUTCOME_VALID


async def test_vendor_token_with_fractional_iat_is_revoked_precisely(
    stub: AuthServiceAsyncStub, new_app: NewApp, clock: FakeClock
) -> None:
    app = await new_app()
    now = clock.freeze()
    revoked_at = now - 10 * S
    await stub.RevokeUser(
        pb.RevokeUserRequest(user_ids=["alice"], revoke_before=stamp(revoked_at)), metadata=backend(app)
    )
    just_before = jwt.encode({"user_id": "alice", "iat": (revoked_at - 2_000) / S}, app.api_secret, "HS256")
    just_after = jwt.encode({"user_id": "alice", "iat": (revoked_at + 2_000) / S}, app.api_secret, "HS256")
    assert await outcome(stub, app, just_before) == Outcome.VERIFY_OUTCOME_REVOKED
    assert await outcome(stub, app, just_after) == Outcome.VERIFY_OUTCOME_VALID


async def test_revoke_many_users_at_once(stub: AuthServiceAsyncStub, new_app: NewApp, clock: FakeClock) -> None:
    app = await new_app()
    clock.freeze()
    users = [f"user-{i}" for i in range(1000)]
    old = {u: await issue(stub, app, u) for u in users[:3] + users[-2:]}
    spared = await issue(stub, app, "not-listed")
    clock.advance(S)
    response = await stub.RevokeUser(pb.RevokeUserRequest(user_ids=users + users[:10]), metadata=backend(app))
    assert [r.user_id for r in response.revocations] == users
    for token in old.values():
        assert await outcome(stub, app, token) == Outcome.VERIFY_OUTCOME_REVOKED
    assert await outcome(stub, app, spared) == Outcome.VERIFY_OUTCOME_VALID


async def test_revoking_again_never_moves_the_time_backwards(
    stub: AuthServiceAsyncStub, new_app: NewApp, clock: FakeClock
) -> None:
    app = await new_app()
    now = clock.freeze()
    first = await stub.RevokeUser(pb.RevokeUserRequest(user_ids=["alice"]), metadata=backend(app))
    earlier = await stub.RevokeUser(
        pb.RevokeUserRequest(user_ids=["alice", "bob"], revoke_before=stamp(now - 3600 * S)), metadata=backend(app)
    )
    in_force = {r.user_id: r.revoked_before.ToMicroseconds() for r in earlier.revocations}
    assert in_force == {"alice": first.revocations[0].revoked_before.ToMicroseconds(), "bob": now - 3600 * S}
    app_first = await stub.RevokeApp(pb.RevokeAppRequest(), metadata=backend(app))
    app_earlier = await stub.RevokeApp(pb.RevokeAppRequest(revoke_before=stamp(now - S)), metadata=backend(app))
    assert app_earlier.revoked_before == app_first.revoked_before
    assert app_first.revoked_before.ToMicroseconds() == now


async def test_revoke_app_rejects_every_earlier_token_and_tokens_without_iat(
    stub: AuthServiceAsyncStub, new_app: NewApp, clock: FakeClock
) -> None:
    app = await new_app()
    clock.freeze()
    alice = await issue(stub, app, "alice")
    no_iat = jwt.encode({"user_id": "carol"}, app.api_secret, algorithm="HS256")
    assert await outcome(stub, app, no_iat) == Outcome.VERIFY_OUTCOME_VALID
    clock.advance(1_000)
    await stub.RevokeApp(pb.RevokeAppRequest(), metadata=backend(app))
    assert await outcome(stub, app, alice) == Outcome.VERIFY_OUTCOME_REVOKED
    assert await outcome(stub, app, no_iat) == Outcome.VERIFY_OUTCOME_REVOKED
    clock.advance(1_000)
    assert await outcome(stub, app, await issue(stub, app, "alice")) == Outcome.VERIFY_OUTCOME_VALID


async def test_user_revocation_spares_tokens_without_iat_unless_the_app_requires_iat(
    stub: AuthServiceAsyncStub, new_app: NewApp
) -> None:
    lax, strict = await new_app("lax"), await new_app("strict", require_iat=True)
    for app, expected in ((lax, Outcome.VERIFY_OUTCOME_VALID), (strict, Outcome.VERIFY_OUTCOME_REVOKED)):
        token = jwt.encode({"user_id": "alice"}, app.api_secret, algorithm="HS256")
        await stub.RevokeUser(pb.RevokeUserRequest(user_ids=["alice"]), metadata=backend(app))
        assert await outcome(stub, app, token) == expected, app.name


async def test_clear_user_revocation_restores_tokens(
    stub: AuthServiceAsyncStub, new_app: NewApp, clock: FakeClock
) -> None:
    app = await new_app()
    clock.freeze()
    alice, bob = await issue(stub, app, "alice"), await issue(stub, app, "bob")
    clock.advance(S)
    await stub.RevokeUser(pb.RevokeUserRequest(user_ids=["alice", "bob"]), metadata=backend(app))
    cleared = await stub.ClearRevocation(
        pb.ClearRevocationRequest(users=pb.UserIds(user_ids=["alice", "nobody"])), metadata=backend(app)
    )
    assert list(cleared.cleared_user_ids) == ["alice"] and not cleared.app_cleared
    assert await outcome(stub, app, alice) == Outcome.VERIFY_OUTCOME_VALID
    assert await outcome(stub, app, bob) == Outcome.VERIFY_OUTCOME_REVOKED


async def test_clear_app_revocation_restores_tokens_only_it_rejected(
    stub: AuthServiceAsyncStub, new_app: NewApp, clock: FakeClock
) -> None:
    app = await new_app()
    clock.freeze()
    alice, bob = await issue(stub, app, "alice"), await issue(stub, app, "bob")
    clock.advance(S)
    await stub.RevokeUser(pb.RevokeUserRequest(user_ids=["bob"]), metadata=backend(app))
    await stub.RevokeApp(pb.RevokeAppRequest(), metadata=backend(app))
    assert await outcome(stub, app, alice) == Outcome.VERIFY_OUTCOME_REVOKED
    cleared = await stub.ClearRevocation(pb.ClearRevocationRequest(app=True), metadata=backend(app))
    assert cleared.app_cleared
    assert await outcome(stub, app, alice) == Outcome.VERIFY_OUTCOME_VALID
    assert await outcome(stub, app, bob) == Outcome.VERIFY_OUTCOME_REVOKED
    again = await stub.ClearRevocation(pb.ClearRevocationRequest(app=True), metadata=backend(app))
    assert not again.app_cleared


async def test_revocations_are_durable_in_postgresql(
    stub: AuthServiceAsyncStub, new_app: NewApp, store: Store, pool: asyncpg.Pool
) -> None:
    app = await new_app()
    response = await stub.RevokeUser(pb.RevokeUserRequest(user_ids=["alice"]), metadata=backend(app))
    stored = await stored_revocation(pool, app.id, "alice")
    assert stored == response.revocations[0].revoked_before.ToMicroseconds()
    app_response = await stub.RevokeApp(pb.RevokeAppRequest(), metadata=backend(app))
    reloaded = await store.get_app(app.api_key)
    assert reloaded is not None and reloaded.revoked_before == app_response.revoked_before.ToMicroseconds()


async def test_revocation_is_per_app(stub: AuthServiceAsyncStub, new_app: NewApp, clock: FakeClock) -> None:
    first, second = await new_app("first"), await new_app("second")
    clock.freeze()
    token = await issue(stub, second, "alice")
    clock.advance(S)
    await stub.RevokeUser(pb.RevokeUserRequest(user_ids=["alice"]), metadata=backend(first))
    await stub.RevokeApp(pb.RevokeAppRequest(), metadata=backend(first))
    assert await outcome(stub, second, token) == Outcome.VERIFY_OUTCOME_VALID
