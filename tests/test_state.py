"""The in-memory verification state: propagation, read-your-writes, outages, pruning.

No test here is timed: waits are bounded polls for an event, and staleness runs on an injected clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
import grpc
import pytest

from authsvc import apps, migrations
from authsvc import state as state_module
from authsvc.audit import Actor
from authsvc.clock import MICROS_PER_SECOND as S
from authsvc.config import Settings
from authsvc.server import RunningServer, start_server
from authsvc.state import State
from authsvc.store import Store, create_pool
from authsvc.tokens import App, user_hash
from authsvc.v1 import auth_service_pb2 as pb
from authsvc.v1 import auth_service_pb2_grpc
from tests.conftest import TEST_KEYRING, NewApp
from tests.processes import clean_env, serve
from tests.support import FakeClock, api_key_only, backend, expect_failure, stored_revocation

if TYPE_CHECKING:
    from authsvc.v1.auth_service_pb2_grpc import AuthServiceAsyncStub

TEST_ACTOR = Actor("test")


class ManualMonotonic:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def eventually(check: Callable[[], Awaitable[bool]], *, within: float = 15.0) -> None:
    """Polls `check` until it holds; fails after `within` seconds (a bound on a hang, not a speed goal)."""
    async with asyncio.timeout(within):
        while not await check():  # noqa: ASYNC110 - the condition lives in another process
            await asyncio.sleep(0.02)


async def test_app_made_elsewhere_is_found_at_once(stub: AuthServiceAsyncStub, store: Store) -> None:
    # Another process (here: the store directly, as the CLI does) creates an app; the very next call finds it.
    app = await apps.create_app(store, "made-elsewhere")
    response = await stub.IssueToken(pb.IssueTokenRequest(user_id="alice"), metadata=backend(app))
    assert response.token


@pytest.fixture
async def quiet_server(
    store: Store, database_url: str, settings: Settings, session_clock: FakeClock
) -> AsyncIterator[tuple[RunningServer, State]]:
    """A second server whose state follows nothing on its own: no listener, no periodic check."""
    state = State(store, database_url, check_interval=3600, max_staleness=3600)
    await state.load()
    running = await start_server(store, state, settings, session_clock)
    yield running, state
    await running.stop(None)


async def test_read_your_writes_without_any_notification(
    quiet_server: tuple[RunningServer, State], new_app: Callable[..., Awaitable[App]], clock: FakeClock
) -> None:
    running, state = quiet_server
    app = await new_app()
    clock.freeze()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub = auth_service_pb2_grpc.AuthServiceStub(channel)
        token = (await stub.IssueToken(pb.IssueTokenRequest(user_id="alice"), metadata=backend(app))).token
        clock.advance(S)
        await stub.RevokeUser(pb.RevokeUserRequest(user_ids=["alice"]), metadata=backend(app))
        # The state was brought up to the revocation's version before RevokeUser answered.
        result = await stub.VerifyToken(pb.VerifyTokenRequest(token=token), metadata=api_key_only(app))
        assert result.outcome == pb.VERIFY_OUTCOME_REVOKED


async def test_revocation_propagates_to_another_process(
    stub: AuthServiceAsyncStub, new_app: Callable[..., Awaitable[App]], database_url: str, tmp_path: Path
) -> None:
    app = await new_app()
    token = (await stub.IssueToken(pb.IssueTokenRequest(user_id="alice"), metadata=backend(app))).token
    env = clean_env(AUTHSVC_DATABASE_URL=database_url, AUTHSVC_STATE_CHECK_INTERVAL="1h", AUTHSVC_MAX_STALENESS="2h")
    async with serve(env, tmp_path) as other, grpc.aio.insecure_channel(other.target) as channel:
        other_stub = auth_service_pb2_grpc.AuthServiceStub(channel)

        async def outcome() -> int:
            response = await other_stub.VerifyToken(pb.VerifyTokenRequest(token=token), metadata=api_key_only(app))
            value: int = response.outcome
            return value

        assert await outcome() == pb.VERIFY_OUTCOME_VALID
        await asyncio.sleep(0.01)  # the token's iat must lie before the revocation
        await stub.RevokeUser(pb.RevokeUserRequest(user_ids=["alice"]), metadata=backend(app))

        async def revoked_there() -> bool:
            return await outcome() == pb.VERIFY_OUTCOME_REVOKED

        # With periodic checks off (1h), only LISTEN/NOTIFY can bring the change over.
        await eventually(revoked_there)
        await stub.ClearRevocation(
            pb.ClearRevocationRequest(users=pb.UserIds(user_ids=["alice"])), metadata=backend(app)
        )

        async def restored_there() -> bool:
            return await outcome() == pb.VERIFY_OUTCOME_VALID

        await eventually(restored_there)


async def test_issue_token_fails_closed_past_the_staleness_bound_like_verify_token(
    store: Store, database_url: str, settings: Settings, session_clock: FakeClock, new_app: NewApp
) -> None:
    # Past the bound the state may still hold a secret rotated out, or a key retired, since: it must not sign.
    monotonic = ManualMonotonic()
    state = State(store, database_url, check_interval=3600, max_staleness=30, monotonic=monotonic)
    await state.load()
    running = await start_server(store, state, settings, session_clock)
    try:
        app = await new_app()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = auth_service_pb2_grpc.AuthServiceStub(channel)

            def issue() -> Awaitable[pb.IssueTokenResponse]:
                response: Awaitable[pb.IssueTokenResponse] = stub.IssueToken(
                    pb.IssueTokenRequest(user_id="alice"), metadata=backend(app)
                )
                return response

            token = (await issue()).token
            monotonic.now += 29  # within the bound: minted from memory
            assert (await issue()).token
            monotonic.now += 2
            for call in (issue(), stub.VerifyToken(pb.VerifyTokenRequest(token=token), metadata=api_key_only(app))):
                stale = await expect_failure(call)
                assert (stale.code, stale.reason) == (grpc.StatusCode.UNAVAILABLE, "STATE_STALE")
            await state.catch_up()  # the database answers again
            assert (await issue()).token
    finally:
        await running.stop(None)


async def test_verify_token_issues_no_query(
    database_url: str, settings: Settings, session_clock: FakeClock, new_app: Callable[..., Awaitable[App]]
) -> None:
    queries: list[str] = []

    async def log_queries(conn: asyncpg.Connection) -> None:
        conn.add_query_logger(lambda record: queries.append(record.query))

    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2, init=log_queries)
    store = Store(pool, TEST_KEYRING)
    # No background following (that queries on its own schedule): any query below would be the RPCs' own.
    state = State(store, database_url, check_interval=3600, max_staleness=3600)
    await state.load()
    running = await start_server(store, state, settings, session_clock)
    try:
        app = await new_app()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = auth_service_pb2_grpc.AuthServiceStub(channel)
            token = (await stub.IssueToken(pb.IssueTokenRequest(user_id="alice"), metadata=backend(app))).token
            await stub.RevokeUser(pb.RevokeUserRequest(user_ids=["bob"]), metadata=backend(app))
            assert queries, "the query logger sees the writes"
            queries.clear()
            for _ in range(50):
                result = await stub.VerifyToken(pb.VerifyTokenRequest(token=token), metadata=api_key_only(app))
                assert result.valid
            batch = await stub.VerifyTokens(pb.VerifyTokensRequest(tokens=[token] * 100), metadata=api_key_only(app))
            assert all(r.valid for r in batch.results)
            assert queries == []
    finally:
        await running.stop(None)
        await state.stop()
        await pool.close()


@pytest.fixture
async def own_store(fresh_database: str) -> AsyncIterator[Store]:
    """A store on a migrated database of this test's own: no other State follows or prunes it."""
    pool = await create_pool(fresh_database)
    try:
        async with pool.acquire() as conn:
            await migrations.apply(conn)
        yield Store(pool, TEST_KEYRING)
    finally:
        await pool.close()


async def _listeners(store: Store) -> set[int]:
    """The server processes of the connections LISTENing on this database."""
    async with store._pool.acquire() as conn:  # noqa: SLF001 - the test inspects the server's sessions
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN %'"
        )
    return {row["pid"] for row in rows}


async def test_a_lost_listener_connection_is_reopened_at_once(own_store: Store, fresh_database: str) -> None:
    store = own_store
    app = await apps.create_app(store, "listened-again")
    # Periodic checks off (1h): only a listener brings changes over, and nothing but its loss wakes a follower.
    follower = State(store, fresh_database, check_interval=3600, max_staleness=3600)
    await follower.start()
    try:
        first: set[int] = set()

        async def listening() -> bool:
            first.update(await _listeners(store))
            return bool(first)

        await eventually(listening)
        async with store._pool.acquire() as conn:  # noqa: SLF001
            await conn.execute("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid", list(first))

        async def listening_again() -> bool:
            return bool(await _listeners(store) - first)

        await eventually(listening_again)
        await store.revoke_users(app.id, ["alice"], await _db_now(store), actor=TEST_ACTOR)

        async def revoked_there() -> bool:
            return follower.user_revoked_before(app.id, "alice") is not None

        await eventually(revoked_there)
    finally:
        await follower.stop()


async def test_old_revocations_are_pruned(own_store: Store, fresh_database: str) -> None:
    store = own_store
    app = await apps.create_app(store, "short-lived", max_token_lifetime_seconds=3600)
    # Revoked two hours ago (beyond the 1 h lifetime) and just now.
    _, old_version = await store.revoke_users(app.id, ["old"], await _db_now(store) - 7200 * S, actor=TEST_ACTOR)
    _, new_version = await store.revoke_users(app.id, ["new"], await _db_now(store), actor=TEST_ACTOR)
    state = State(store, fresh_database, check_interval=3600, max_staleness=3600)
    await state.load()
    assert state.user_revoked_before(app.id, "old") is not None
    assert await state.prune()
    assert state.user_revoked_before(app.id, "old") is None
    assert state.user_revoked_before(app.id, "new") is not None
    assert await stored_revocation(store._pool, app.id, "old") is None  # noqa: SLF001
    assert await stored_revocation(store._pool, app.id, "new") is not None  # noqa: SLF001
    assert old_version < new_version


async def test_pruning_goes_in_batches_that_every_process_applies(own_store: Store, fresh_database: str) -> None:
    store = own_store
    app = await apps.create_app(store, "pruned-in-batches", max_token_lifetime_seconds=3600)
    old = [f"old-{i}" for i in range(5)]
    _, first = await store.revoke_users(app.id, old, await _db_now(store) - 7200 * S, actor=TEST_ACTOR)
    follower = State(store, fresh_database, check_interval=3600, max_staleness=3600)
    await follower.load()
    # More changes than one read of the change log takes: the follower catches up in steps, and all of them.
    recent = [f"new-{i}" for i in range(state_module._CHANGES_PER_READ + 20)]  # noqa: SLF001
    for user in recent:
        await store.revoke_users(app.id, [user], await _db_now(store), actor=TEST_ACTOR)
    await follower.catch_up()
    assert all(follower.user_revoked_before(app.id, u) is not None for u in old + recent)
    # A pruning of five revocations, two at a time: three changes, each as small as its batch.
    versions: list[int] = []

    async def applied(version: int) -> None:
        versions.append(version)

    assert await store.prune(fresh_database, 0, applied, batch=2)
    pruned = [c for c in await store.changes_since(first, limit=1000) if c.kind == "clear"]
    assert [len(c.user_hashes) for c in pruned] == [2, 2, 1]
    assert sorted(h for c in pruned for h in c.user_hashes) == sorted(user_hash(u) for u in old)
    assert versions == [c.version for c in pruned]
    await follower.catch_up()
    assert [follower.user_revoked_before(app.id, u) for u in old] == [None] * 5
    assert all(follower.user_revoked_before(app.id, u) is not None for u in recent)
    assert await store.prune(fresh_database, 0, applied, batch=2)
    assert len(versions) == 3, "nothing left to prune: no change logged"


async def test_one_process_prunes_at_a_time(own_store: Store, fresh_database: str) -> None:
    store = own_store
    app = await apps.create_app(store, "pruned-once", max_token_lifetime_seconds=3600)
    old = [f"old-{i}" for i in range(5)]
    _, first = await store.revoke_users(app.id, old, await _db_now(store) - 7200 * S, actor=TEST_ACTOR)
    one, other = (State(store, fresh_database, check_interval=3600, max_staleness=3600) for _ in range(2))
    await one.load()
    await other.load()
    # The first process's pass stops between its batches, until the test lets it go on.
    between_batches, go_on = asyncio.Event(), asyncio.Event()

    async def applied(version: int) -> None:
        await one.catch_up(version)
        between_batches.set()
        await go_on.wait()

    first_pass = asyncio.create_task(store.prune(fresh_database, 0, applied, batch=2))
    try:
        async with asyncio.timeout(15):
            await between_batches.wait()
            # Meanwhile the other process's own pass (every minute in production) finds it running, and skips.
            ran = await other.prune()
            assert await _pruning_events(store, app.api_key) == [2], "the other process pruned too"
            assert not ran
            go_on.set()
            assert await first_pass
    finally:
        go_on.set()
        first_pass.cancel()
    # Every revocation was pruned once, by the one pass, in its three batches; both processes dropped them.
    assert await _pruning_events(store, app.api_key) == [2, 2, 1]
    pruned = [c for c in await store.changes_since(first, limit=1000) if c.kind == "clear"]
    assert [len(c.user_hashes) for c in pruned] == [2, 2, 1]
    await other.catch_up()
    for state in (one, other):
        assert [state.user_revoked_before(app.id, u) for u in old] == [None] * 5
    # Once the pass is over, the next one of any process runs (and finds nothing left).
    assert await other.prune()
    assert await _pruning_events(store, app.api_key) == [2, 2, 1]


async def _pruning_events(store: Store, api_key: str) -> list[int]:
    """The users of each recorded pruning of the app, oldest first."""
    events = await store.audit_events(api_key=api_key, action="revocations.pruned")
    return [event.details["users"] for event in reversed(events)]


async def _db_now(store: Store) -> int:
    async with store._pool.acquire() as conn:  # noqa: SLF001 - the test needs the database's own clock
        value: int = await conn.fetchval("SELECT (extract(epoch from now()) * 1000000)::bigint")
    return value


async def test_user_hash_in_postgresql_matches_the_process(store: Store) -> None:
    app = await apps.create_app(store, "hash-check")
    ids = ["alice", "bob@example.com", "a" * 255, "x_-@9"]
    await store.revoke_users(app.id, ids, 0, actor=TEST_ACTOR)
    async with store._pool.acquire() as conn:  # noqa: SLF001
        rows = await conn.fetch("SELECT user_id, user_hash FROM user_revocations WHERE app_id = $1", app.id)
    assert {row["user_id"]: row["user_hash"] for row in rows} == {u: user_hash(u) for u in ids}
