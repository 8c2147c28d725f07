"""Guests, anonymous users and roles against real servers (two replicas of one PostgreSQL), local verifiers,
and the command line's `tokens` commands."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import secrets
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import asyncpg
import grpc
import jwt
import pytest
from google.protobuf import json_format
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from authsvc import migrations
from authsvc.client import AuthClient, AuthsvcClientError, LocalVerifier, Role, VerifyOutcome
from authsvc.clock import MICROS_PER_SECOND as S
from authsvc.config import Settings
from authsvc.operators import hash_token
from authsvc.server import RunningServer, new_state, start_server
from authsvc.state import State
from authsvc.store import Store
from authsvc.tokens import App
from authsvc.v1 import admin_service_pb2 as admin_pb
from authsvc.v1 import admin_service_pb2_grpc, auth_service_pb2_grpc
from authsvc.v1 import auth_service_pb2 as pb
from tests.conftest import NewApp
from tests.processes import authsvc, clean_env
from tests.support import FakeClock, api_key_only, backend, expect_failure

if TYPE_CHECKING:
    from authsvc.v1.admin_service_pb2_grpc import AdminServiceAsyncStub
    from authsvc.v1.auth_service_pb2_grpc import AuthServiceAsyncStub

OPERATOR = secrets.token_urlsafe(32)
WAIT = 10.0


@dataclasses.dataclass
class Replica:
    server: RunningServer
    auth: AuthServiceAsyncStub
    admin: AdminServiceAsyncStub


@pytest.fixture(scope="module")
async def replicas(
    store: Store, state: State, settings: Settings, database_url: str, session_clock: FakeClock
) -> AsyncIterator[tuple[Replica, Replica]]:
    """Two servers over the session's database, each with its own state (as two replicas are), with an operator
    and without guest rate limits."""
    configured = dataclasses.replace(
        settings, operator_tokens=(("ops", hash_token(OPERATOR)),), guest_rate_per_address=0, guest_rate_per_app=0
    )
    other_state = new_state(store, database_url, configured)
    await other_state.start()
    first = await start_server(store, state, configured, session_clock)
    second = await start_server(store, other_state, configured, session_clock)
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{s.port}") for s in (first, second)]
    try:
        yield (
            Replica(
                first,
                auth_service_pb2_grpc.AuthServiceStub(channels[0]),
                admin_service_pb2_grpc.AdminServiceStub(channels[0]),
            ),
            Replica(
                second,
                auth_service_pb2_grpc.AuthServiceStub(channels[1]),
                admin_service_pb2_grpc.AdminServiceStub(channels[1]),
            ),
        )
    finally:
        for channel in channels:
            await channel.close()
        await first.stop(None)
        await second.stop(None)
        await other_state.stop()


OPS = (("authorization", f"Bearer {OPERATOR}"),)


@pytest.fixture
async def limited(store: Store, state: State, settings: Settings, clock: FakeClock) -> AsyncIterator[Replica]:
    """A server of its own with guest rate limits small enough to reach: 4 a minute per address, 6 per app."""
    configured = dataclasses.replace(settings, guest_rate_per_address=4, guest_rate_per_app=6)
    running = await start_server(store, state, configured, clock)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield Replica(
                running,
                auth_service_pb2_grpc.AuthServiceStub(channel),
                admin_service_pb2_grpc.AdminServiceStub(channel),
            )
    finally:
        await running.stop(None)


async def eventually(check: Callable[[], Any]) -> None:
    """Waits until the awaitable `check()` returns true; fails after WAIT seconds."""
    async with asyncio.timeout(WAIT):
        while True:
            if await check():
                return
            await asyncio.sleep(0.02)


async def update(replica: Replica, app: App, **settings: Any) -> admin_pb.App:
    response = await replica.admin.UpdateApp(admin_pb.UpdateAppRequest(api_key=app.api_key, **settings), metadata=OPS)
    return response.app


async def guest(replica: Replica, app: App, user_id: str = "", name: str = "") -> pb.IssueGuestTokenResponse:
    response: pb.IssueGuestTokenResponse = await replica.auth.IssueGuestToken(
        pb.IssueGuestTokenRequest(user_id=user_id, name=name), metadata=api_key_only(app)
    )
    return response


async def verify(replica: Replica, app: App, token: str) -> pb.VerifyTokenResponse:
    response: pb.VerifyTokenResponse = await replica.auth.VerifyToken(
        pb.VerifyTokenRequest(token=token), metadata=api_key_only(app)
    )
    return response


def guest_count(replica: Replica, result: str) -> float:
    return replica.server.metrics.registry.get_sample_value("authsvc_guest_tokens_total", {"result": result}) or 0.0


async def test_guest_access_is_off_by_default_and_the_switch_reaches_every_replica(
    replicas: tuple[Replica, Replica], new_app: NewApp
) -> None:
    first, second = replicas
    app = await new_app("guests")
    refused_before = guest_count(second, "disabled")
    failed = await expect_failure(guest(second, app))
    assert (failed.code, failed.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "GUEST_ACCESS_DISABLED")
    assert guest_count(second, "disabled") == refused_before + 1
    shown = (await first.admin.GetApp(admin_pb.GetAppRequest(api_key=app.api_key), metadata=OPS)).app
    assert (shown.guest_access, shown.guest_token_ttl.seconds, shown.anonymous_access) == (False, 86400, False)

    assert (await update(first, app, guest_access=True)).guest_access  # on the first replica
    issued_before = guest_count(second, "issued")

    async def second_issues() -> bool:
        try:
            await guest(second, app, "ann", "Ann")
        except grpc.aio.AioRpcError:
            return False
        return True

    await eventually(second_issues)  # the second replica heard of it
    assert guest_count(second, "issued") == issued_before + 1
    issued = await guest(second, app, "bob", "Bob")
    assert issued.user_id == "guest-bob"
    assert issued.expires_at.ToMicroseconds() - issued.issued_at.ToMicroseconds() == 86400 * S
    for replica in replicas:
        result = await verify(replica, app, issued.token)
        assert result.outcome == pb.VERIFY_OUTCOME_VALID and result.role == pb.ROLE_GUEST
        assert result.user_id == "guest-bob" and result.claims["role"] == "guest" and result.claims["name"] == "Bob"

    audit = await first.admin.ListAuditEvents(
        admin_pb.ListAuditEventsRequest(api_key=app.api_key, action_prefix="app.updated"), metadata=OPS
    )
    assert json_format.MessageToDict(audit.events[0].details)["changed"] == {"guest_access": True}

    await update(first, app, guest_access=False)  # and off again, on every replica

    async def second_refuses() -> bool:
        try:
            await guest(second, app)
        except grpc.aio.AioRpcError as error:
            return error.code() == grpc.StatusCode.FAILED_PRECONDITION
        return False

    await eventually(second_refuses)
    # tokens already issued keep verifying until they expire or are revoked
    assert (await verify(second, app, issued.token)).outcome == pb.VERIFY_OUTCOME_VALID


async def test_guest_ids_never_collide_with_users(
    server: RunningServer, stub: AuthServiceAsyncStub, new_app: NewApp
) -> None:
    app = await new_app("collide", guest_access=True)
    failed = await expect_failure(stub.IssueToken(pb.IssueTokenRequest(user_id="guest-bob"), metadata=backend(app)))
    assert (failed.code, failed.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "RESERVED_USER_ID")
    user = await stub.IssueToken(pb.IssueTokenRequest(user_id="bob"), metadata=backend(app))
    visitor = await stub.IssueGuestToken(pb.IssueGuestTokenRequest(user_id="bob"), metadata=api_key_only(app))
    assert visitor.user_id == "guest-bob"
    randoms = [
        (await stub.IssueGuestToken(pb.IssueGuestTokenRequest(), metadata=api_key_only(app))).user_id for _ in range(20)
    ]
    assert len(set(randoms)) == 20 and all(u.startswith("guest-") and len(u) > 20 for u in randoms)

    async def verdict(token: str) -> pb.VerifyTokenResponse:
        response: pb.VerifyTokenResponse = await stub.VerifyToken(
            pb.VerifyTokenRequest(token=token), metadata=api_key_only(app)
        )
        return response

    assert (await verdict(user.token)).role == pb.ROLE_USER
    # revoking the user leaves the guest, and revoking the guest leaves the user
    await stub.RevokeUser(pb.RevokeUserRequest(user_ids=["bob"]), metadata=backend(app))
    assert (await verdict(user.token)).outcome == pb.VERIFY_OUTCOME_REVOKED
    assert (await verdict(visitor.token)).outcome == pb.VERIFY_OUTCOME_VALID
    await stub.ClearRevocation(pb.ClearRevocationRequest(users=pb.UserIds(user_ids=["bob"])), metadata=backend(app))
    await stub.RevokeUser(pb.RevokeUserRequest(user_ids=["guest-bob"]), metadata=backend(app))
    revoked = await verdict(visitor.token)
    assert (revoked.outcome, revoked.role, revoked.user_id) == (pb.VERIFY_OUTCOME_REVOKED, pb.ROLE_GUEST, "guest-bob")
    assert (await verdict(user.token)).outcome == pb.VERIFY_OUTCOME_VALID
    # RevokeApp covers guests too
    other = await stub.IssueGuestToken(pb.IssueGuestTokenRequest(), metadata=api_key_only(app))
    await stub.RevokeApp(pb.RevokeAppRequest(), metadata=backend(app))
    assert (await verdict(other.token)).outcome == pb.VERIFY_OUTCOME_REVOKED


@pytest.mark.parametrize(
    ("request_fields", "reason"),
    [({"user_id": "bob!"}, "INVALID_USER_ID"), ({"name": "a\u0000b"}, "INVALID_GUEST_NAME")],
    ids=["bad-user-id", "control-character-in-name"],
)
async def test_bad_guest_requests_are_typed_errors(
    stub: AuthServiceAsyncStub, new_app: NewApp, request_fields: dict[str, str], reason: str
) -> None:
    app = await new_app("bad guests", guest_access=True)
    failed = await expect_failure(
        stub.IssueGuestToken(pb.IssueGuestTokenRequest(**request_fields), metadata=api_key_only(app))
    )
    assert (failed.code, failed.reason) == (grpc.StatusCode.INVALID_ARGUMENT, reason)


async def test_a_revoked_guest_token_stays_revoked_when_the_guest_lifetime_grows_again(
    replicas: tuple[Replica, Replica], new_app: NewApp, clock: FakeClock
) -> None:
    first, _ = replicas
    app = await new_app("devices of guests", guest_access=True, guest_token_ttl_seconds=3600)
    now = clock.freeze()
    issued = await guest(first, app)
    await update(first, app, guest_token_ttl={"seconds": 60})  # the token's verdict now says it expires at +60 s
    revoked = await first.auth.RevokeToken(pb.RevokeTokenRequest(token=issued.token), metadata=backend(app))
    # Kept until the token's own exp, not the shorter one of the lifetime in force: pruned at +60 s, it would be
    # gone when the lifetime is raised again and the token, still unexpired by its own claim, would verify.
    assert revoked.expires_at.ToMicroseconds() == issued.expires_at.ToMicroseconds() == now + 3600 * S
    await update(first, app, guest_token_ttl={"seconds": 3600})
    clock.set(now + 600 * S)
    assert (await verify(first, app, issued.token)).outcome == pb.VERIFY_OUTCOME_REVOKED


async def test_a_guest_token_never_outlives_the_guest_token_ttl(
    replicas: tuple[Replica, Replica], new_app: NewApp, clock: FakeClock
) -> None:
    first, second = replicas
    app = await new_app(
        "short guests", guest_access=True, guest_token_ttl_seconds=3600, max_token_lifetime_seconds=7200
    )
    now = clock.freeze()
    issued = await guest(first, app)
    assert (issued.issued_at.ToMicroseconds(), issued.expires_at.ToMicroseconds()) == (now, now + 3600 * S)
    await update(first, app, guest_token_ttl={"seconds": 60})  # bounds the token already out, on every replica
    clock.set(now + 66 * S)  # past 60 s and the 5 s leeway

    async def expired_on_second() -> bool:
        return (await verify(second, app, issued.token)).outcome == pb.VERIFY_OUTCOME_EXPIRED

    await eventually(expired_on_second)
    result = await verify(first, app, issued.token)
    assert result.outcome == pb.VERIFY_OUTCOME_EXPIRED and result.expires_at.ToMicroseconds() == now + 60 * S
    # a max token lifetime shorter than the guest token ttl wins
    await update(first, app, guest_token_ttl={"seconds": 86400})
    clock.set(now)
    shorter = await guest(first, app)
    assert shorter.expires_at.ToMicroseconds() == now + 7200 * S
    failed = await expect_failure(
        first.admin.UpdateApp(
            admin_pb.UpdateAppRequest(api_key=app.api_key, guest_token_ttl={"seconds": 0}), metadata=OPS
        )
    )
    assert failed.reason == "INVALID_TTL"


async def test_guest_tokens_are_rate_limited_per_address_with_a_retry_hint(
    limited: Replica, new_app: NewApp, clock: FakeClock
) -> None:
    first = limited
    app = await new_app("busy guests", guest_access=True)
    clock.freeze()
    for _ in range(4):
        await guest(first, app)
    limited_before = guest_count(first, "rate_limited")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await guest(first, app)
    error = info.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    status = rpc_status.from_call(error)
    assert status is not None
    reasons, delays = [], []
    for detail in status.details:
        found_info, found_retry = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo()
        if detail.Unpack(found_info):
            reasons.append(found_info.reason)
        elif detail.Unpack(found_retry):
            delays.append(found_retry.retry_delay.ToMicroseconds())
    assert reasons == ["GUEST_RATE_LIMITED"] and delays == [15 * S]  # 4 a minute: one every 15 s
    assert guest_count(first, "rate_limited") == limited_before + 1
    clock.advance(15 * S)
    await guest(first, app)  # one more passes once its time came


async def test_the_clients_say_when_a_rate_limited_guest_may_try_again(
    limited: Replica, new_app: NewApp, clock: FakeClock
) -> None:
    app = await new_app("impatient guests", guest_access=True)
    clock.freeze()
    async with AuthClient(f"127.0.0.1:{limited.server.port}", app.api_key) as client:
        for _ in range(4):
            await client.issue_guest_token()
        with pytest.raises(AuthsvcClientError) as info:
            await client.issue_guest_token()
        assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and info.value.reason == "GUEST_RATE_LIMITED"
        assert info.value.retry_after == 15.0  # 4 a minute per address: the next one in 15 s
        clock.advance(15 * S)
        await client.issue_guest_token()  # the hint was right: one passes once it is due
        with pytest.raises(AuthsvcClientError) as again:
            await client.issue_guest_token()
        assert again.value.retry_after == 15.0
    closed = await new_app("no guests here")
    async with AuthClient(f"127.0.0.1:{limited.server.port}", closed.api_key) as client:
        with pytest.raises(AuthsvcClientError) as refused:  # a refusal that is no rate limit says nothing of retrying
            await client.issue_guest_token()
        assert refused.value.reason == "GUEST_ACCESS_DISABLED" and refused.value.retry_after is None


async def test_the_address_limit_holds_over_apps(limited: Replica, new_app: NewApp, clock: FakeClock) -> None:
    first = limited
    apps = [await new_app(f"crowded guests {n}", guest_access=True) for n in range(2)]
    clock.freeze()
    for _ in range(3):
        await guest(first, apps[0])
    await guest(first, apps[1])  # the other app's own limit is far, but the address's is reached
    failed = await expect_failure(guest(first, apps[1]))
    assert failed.reason == "GUEST_RATE_LIMITED" and "address" in failed.message


async def test_anonymous_users_switched_off_and_on_across_replicas(
    replicas: tuple[Replica, Replica], new_app: NewApp
) -> None:
    first, second = replicas
    app = await new_app("watchers")
    user = await first.auth.IssueToken(pb.IssueTokenRequest(user_id="alice"), metadata=backend(app))
    for replica in replicas:
        result = await verify(replica, app, "")
        assert (result.outcome, result.valid, result.role, result.user_id) == (
            pb.VERIFY_OUTCOME_ANONYMOUS_DISABLED,
            False,
            pb.ROLE_UNSPECIFIED,
            "",
        )
    assert (await update(first, app, anonymous_access=True)).anonymous_access

    async def second_lets_anonymous_in() -> bool:
        return (await verify(second, app, "")).valid

    await eventually(second_lets_anonymous_in)
    result = await verify(second, app, "")
    assert (result.outcome, result.role, result.user_id) == (pb.VERIFY_OUTCOME_VALID, pb.ROLE_ANONYMOUS, "")
    batch = await second.auth.VerifyTokens(
        pb.VerifyTokensRequest(tokens=["", user.token, "not-a-token"]), metadata=api_key_only(app)
    )
    assert [(r.outcome, r.role) for r in batch.results] == [
        (pb.VERIFY_OUTCOME_VALID, pb.ROLE_ANONYMOUS),
        (pb.VERIFY_OUTCOME_VALID, pb.ROLE_USER),
        (pb.VERIFY_OUTCOME_MALFORMED, pb.ROLE_UNSPECIFIED),
    ]
    await update(second, app, anonymous_access=False)

    async def first_refuses() -> bool:
        return (await verify(first, app, "")).outcome == pb.VERIFY_OUTCOME_ANONYMOUS_DISABLED

    await eventually(first_refuses)


async def test_local_verifier_follows_the_switches_and_names_roles(
    replicas: tuple[Replica, Replica], new_app: NewApp
) -> None:
    first, second = replicas
    app = await new_app("local", guest_access=True)
    async with (
        AuthClient(f"127.0.0.1:{first.server.port}", app.api_key, app.api_secret) as client,
        LocalVerifier(
            f"127.0.0.1:{second.server.port}", app.api_key, app.api_secret, hs256_secret=app.api_secret, metrics=False
        ) as verifier,
    ):
        visitor = await client.issue_guest_token("carol", name="Carol")
        assert visitor.user_id == "guest-carol" and "Carol" not in repr(visitor) and visitor.token not in repr(visitor)
        local = verifier.verify(visitor.token)
        remote = await client.verify_token(visitor.token)
        assert local.role is remote.role is Role.GUEST and local.user_id == remote.user_id == "guest-carol"
        user = (await client.issue_token("dave")).token
        assert verifier.verify(user).role is Role.USER and (await client.verify_token(user)).role is Role.USER
        assert verifier.verify("").outcome is VerifyOutcome.ANONYMOUS_DISABLED
        assert (await client.verify_token("")).outcome is VerifyOutcome.ANONYMOUS_DISABLED
        await update(first, app, anonymous_access=True)

        async def anonymous_valid() -> bool:
            return verifier.verify("").valid

        await eventually(anonymous_valid)
        anonymous = verifier.verify("")
        assert (anonymous.outcome, anonymous.role, anonymous.user_id) == (VerifyOutcome.VALID, Role.ANONYMOUS, None)
        assert anonymous == await client.verify_token("")
        assert verifier.verify(" ").outcome is VerifyOutcome.MALFORMED


def cli(env: dict[str, str], *args: str) -> Any:
    result = authsvc(*args, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout


async def test_cli_guest_settings_and_tokens_by_hand(
    database_url: str, stub: AuthServiceAsyncStub, state: State
) -> None:
    env = clean_env(AUTHSVC_DATABASE_URL=database_url)

    async def run(*args: str) -> Any:
        return await asyncio.to_thread(cli, env, *args)

    created = json.loads(
        await run("apps", "create", "by hand", "--guest-access", "--guest-token-ttl", "2h", "--anonymous-access")
    )
    assert (created["guest_access"], created["guest_token_ttl_seconds"], created["anonymous_access"]) == (
        True,
        7200,
        True,
    )
    api_key = created["api_key"]
    updated = json.loads(await run("apps", "update", api_key, "--no-guest-access", "--no-anonymous-access"))
    assert (updated["guest_access"], updated["anonymous_access"]) == (False, False)

    token = (await run("tokens", "issue", api_key, "erin", "--ttl", "10m", "--claims", '{"room": "lobby"}')).strip()
    assert token.count(".") == 2 and "\n" not in token
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["user_id"] == "erin" and claims["room"] == "lobby" and claims["exp"] - claims["iat"] == 600
    await state.catch_up()
    served = await stub.VerifyToken(pb.VerifyTokenRequest(token=token), metadata=(("x-api-key", api_key),))
    assert served.outcome == pb.VERIFY_OUTCOME_VALID and served.user_id == "erin"

    verdict = json.loads(await run("tokens", "verify", api_key, token))
    assert verdict["outcome"] == "VALID" and verdict["valid"] is True and verdict["role"] == "USER"
    assert verdict["user_id"] == "erin" and verdict["claims"]["room"] == "lobby" and verdict["expires_at"]
    assert json.loads(await run("tokens", "verify", api_key, "x.y.z"))["outcome"] == "MALFORMED"
    await stub.RevokeUser(
        pb.RevokeUserRequest(user_ids=["erin"]),
        metadata=(("x-api-key", api_key), ("authorization", f"Bearer {created['api_secret']}")),
    )
    revoked = json.loads(await run("tokens", "verify", api_key, token))
    assert (revoked["outcome"], revoked["revoked_by"], revoked["client_action"]) == ("REVOKED", "USER", "LOGOUT")
    assert revoked["revoked_before"]
    # One device logged out: a second token of another user, revoked by its jti, says TOKEN.
    phone = (await run("tokens", "issue", api_key, "frank")).strip()
    await stub.RevokeToken(
        pb.RevokeTokenRequest(token=phone),
        metadata=(("x-api-key", api_key), ("authorization", f"Bearer {created['api_secret']}")),
    )
    by_token = json.loads(await run("tokens", "verify", api_key, phone))
    assert (by_token["outcome"], by_token["revoked_by"], by_token["client_action"]) == ("REVOKED", "TOKEN", "LOGOUT")

    events = json.loads(await run("audit", "list", "--app", api_key, "--action", "token.issued"))
    assert [event["details"]["user_id"] for event in events] == ["frank", "erin"]  # newest first
    assert all(event["actor"].startswith("cli:") for event in events)
    assert token not in json.dumps(events) and phone not in json.dumps(events)

    reserved = await asyncio.to_thread(authsvc, "tokens", "issue", api_key, "guest-x", env=env)
    assert reserved.returncode == 1 and "reserved for guests" in reserved.stderr
    assert len(reserved.stderr.strip().splitlines()) == 1 and "Traceback" not in reserved.stderr
    bad_claims = await asyncio.to_thread(authsvc, "tokens", "issue", api_key, "erin", "--claims", "[1]", env=env)
    assert bad_claims.returncode == 2 and "must be a JSON object" in bad_claims.stderr


async def test_migration_0008_gives_existing_apps_the_defaults(fresh_database: str) -> None:
    # A database of the release before: every migration up to 0008, and an app made then (0007, another
    # change's, may be there or not: 0008 touches only columns of its own).
    conn = await asyncpg.connect(fresh_database)
    try:
        await conn.execute("CREATE TABLE schema_migrations (version text PRIMARY KEY, applied_at timestamptz)")
        for version, sql in migrations.available():
            if version >= "0008":
                break
            await conn.execute(sql)
            await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
        await conn.execute("INSERT INTO apps (api_key, name) VALUES ('before0008', 'old app')")
        assert await migrations.pending(conn) == [v for v, _ in migrations.available() if v >= "0008"]
        await migrations.apply(conn)
        row = await conn.fetchrow(
            "SELECT guest_access, guest_token_ttl_seconds, anonymous_access FROM apps WHERE api_key = 'before0008'"
        )
        assert tuple(row) == (False, 86400, False)
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute("UPDATE apps SET guest_token_ttl_seconds = 0")
    finally:
        await conn.close()


async def test_create_app_takes_the_guest_settings_and_audits_them(replicas: tuple[Replica, Replica]) -> None:
    first, second = replicas
    created = await first.admin.CreateApp(
        admin_pb.CreateAppRequest(
            name="open chat", guest_access=True, guest_token_ttl={"seconds": 7200}, anonymous_access=True
        ),
        metadata=OPS,
    )
    settings = (created.app.guest_access, created.app.guest_token_ttl.seconds, created.app.anonymous_access)
    assert settings == (True, 7200, True)
    listed = await second.admin.ListApps(admin_pb.ListAppsRequest(), metadata=OPS)
    (shown,) = [app for app in listed.apps if app.api_key == created.app.api_key]
    assert (shown.guest_access, shown.guest_token_ttl.seconds, shown.anonymous_access) == settings
    audit = await first.admin.ListAuditEvents(
        admin_pb.ListAuditEventsRequest(api_key=created.app.api_key, action_prefix="app.created"), metadata=OPS
    )
    details = json_format.MessageToDict(audit.events[0].details)
    assert (details["guest_access"], details["guest_token_ttl_seconds"], details["anonymous_access"]) == (
        True,
        7200,
        True,
    )
    failed = await expect_failure(
        first.admin.CreateApp(
            admin_pb.CreateAppRequest(name="bad", guest_token_ttl={"seconds": 1, "nanos": 5}), metadata=OPS
        )
    )
    assert failed.reason == "INVALID_TTL"
