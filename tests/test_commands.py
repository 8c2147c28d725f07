"""The `authsvc` command line as a user runs it: serve, migrate and apps, in real processes."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from authsvc import migrations
from authsvc.v1 import auth_service_pb2 as pb
from authsvc.v1 import auth_service_pb2_grpc
from tests.processes import AUTHSVC, authsvc, clean_env, serve, served_ports


def test_apps_create_list_show(database_url: str) -> None:
    env = clean_env(AUTHSVC_DATABASE_URL=database_url)
    created = authsvc("apps", "create", "my chat", "--token-ttl", "1h", "--require-iat", env=env)
    assert created.returncode == 0, created.stderr
    app = json.loads(created.stdout)
    assert app["name"] == "my chat" and app["token_ttl_seconds"] == 3600 and app["require_iat"]
    assert len(app["api_secret"]) >= 43 and app["api_key"]
    listed = authsvc("apps", "list", env=env)
    assert listed.returncode == 0
    assert app["api_key"] in [a["api_key"] for a in json.loads(listed.stdout)]
    assert app["api_secret"] not in listed.stdout
    shown = authsvc("apps", "show", app["api_key"], env=env)
    assert shown.returncode == 0 and json.loads(shown.stdout)["name"] == "my chat"
    assert app["api_secret"] not in shown.stdout
    missing = authsvc("apps", "show", "no-such-key", env=env)
    assert missing.returncode == 1 and "no app has API key" in missing.stderr


# Where a wrong setting went unnoticed, serve would reach the database: none there, so it fails another way.
_NO_DATABASE = {"AUTHSVC_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}


@pytest.mark.parametrize(
    ("args", "env_extra", "message"),
    [
        (["apps", "create", "x", "--token-ttl", "forever"], {}, "invalid duration"),
        (["apps", "create", "x", "--algorithm", "none"], {}, "invalid choice"),
        (["apps", "frobnicate"], {}, "invalid choice"),
        (["serve"], {"AUTHSVC_PORT": "http"}, "AUTHSVC_PORT must be a port number"),
        (["serve"], {"AUTHSVC_LOG_LEVEL": "LOUD"}, "AUTHSVC_LOG_LEVEL must be one of"),
        (["apps", "list"], {"AUTHSVC_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}, "database"),
        (
            ["serve"],
            {**_NO_DATABASE, "AUTHSVC_DATABASE_TIMEOUT": "0"},
            "AUTHSVC_DATABASE_TIMEOUT must be longer than 0",
        ),
        (["serve"], {**_NO_DATABASE, "AUTHSVC_STATE_CHECK_INTERVAL": "0s"}, "AUTHSVC_STATE_CHECK_INTERVAL must be"),
        (["serve"], {**_NO_DATABASE, "AUTHSVC_MAX_STALENESS": "0"}, "AUTHSVC_MAX_STALENESS must be longer than 0"),
        (
            ["serve"],
            {**_NO_DATABASE, "AUTHSVC_STATE_CHECK_INTERVAL": "1m", "AUTHSVC_MAX_STALENESS": "30s"},
            "AUTHSVC_STATE_CHECK_INTERVAL (60s) must be shorter than AUTHSVC_MAX_STALENESS (30s)",
        ),
        (["serve"], {**_NO_DATABASE, "AUTHSVC_MIGRATE": "perhaps"}, "AUTHSVC_MIGRATE must be true or false"),
        (["serve"], {**_NO_DATABASE, "AUTHSVC_KEEPALIVE_TIME": "0"}, "AUTHSVC_KEEPALIVE_TIME must be longer than 0"),
        (["serve"], {**_NO_DATABASE, "AUTHSVC_MAX_CONNECTION_AGE": "soon"}, "invalid duration 'soon'"),
        (["serve", "--workers", "0"], _NO_DATABASE, "--workers must be at least 1"),
    ],
    ids=[
        "bad-ttl",
        "bad-algorithm",
        "bad-command",
        "bad-port",
        "bad-log-level",
        "database-down",
        "database-timeout-0",
        "state-check-interval-0",
        "max-staleness-0",
        "check-interval-beyond-staleness",
        "bad-migrate",
        "keepalive-0",
        "bad-connection-age",
        "workers-0",
    ],
)
def test_bad_flags_and_settings_give_one_line_and_nonzero_exit(
    args: list[str], env_extra: dict[str, str], message: str
) -> None:
    result = authsvc(*args, env=clean_env(**env_extra))
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_reader_that_goes_away_gets_no_traceback() -> None:
    """`authsvc ... | head`: when the pipe's reader has gone, the command ends (exit 1) without a traceback."""
    reader, writer = os.pipe()
    os.close(reader)
    try:
        result = subprocess.run(
            [*AUTHSVC, "keys", "new-kek"],
            env=clean_env(),
            stdout=writer,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(writer)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, result.stderr


def test_database_errors_name_the_server_and_never_the_password(server_url: str) -> None:
    url = "postgresql://nobody:hunter2@127.0.0.1:1/none?sslmode=disable&password=hunter3"
    refused = authsvc("apps", "list", env=clean_env(AUTHSVC_DATABASE_URL=url))
    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1 and "127.0.0.1:1" in refused.stderr, refused.stderr
    assert "refused" in refused.stderr and "hunter" not in refused.stderr, refused.stderr

    parts = urlsplit(server_url)
    unknown_role = urlunsplit(parts._replace(netloc=f"no_such_role@{parts.netloc.rpartition('@')[2]}"))
    denied = authsvc("apps", "list", env=clean_env(AUTHSVC_DATABASE_URL=unknown_role))
    assert denied.returncode == 1 and "Traceback" not in denied.stderr, denied.stderr
    assert denied.stderr.count("\n") == 1 and 'role "no_such_role" does not exist' in denied.stderr, denied.stderr


def test_a_misspelled_setting_is_warned_about_in_one_line(database_url: str) -> None:
    result = authsvc("migrate", env=clean_env(AUTHSVC_DATABASE_URL=database_url, AUTHSVC_DATABSE_TIMEOUT="1s"))
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert "AUTHSVC_DATABSE_TIMEOUT (did you mean AUTHSVC_DATABASE_TIMEOUT?)" in result.stderr


def test_migrate_applies_once(fresh_database: str) -> None:
    env = clean_env(AUTHSVC_DATABASE_URL=fresh_database)
    first = authsvc("migrate", env=env)
    assert first.returncode == 0 and "applied 0001_initial" in first.stdout, first.stderr
    again = authsvc("migrate", env=env)
    assert again.returncode == 0 and "up to date" in again.stdout


async def test_replicas_migrating_at_once_apply_each_migration_once(fresh_database: str) -> None:
    conns = [await asyncpg.connect(fresh_database) for _ in range(6)]
    try:
        results = await asyncio.gather(*(migrations.apply(conn) for conn in conns))
        versions = [v for v, _ in migrations.available()]
        assert sorted(v for applied in results for v in applied) == versions
        assert await migrations.pending(conns[0]) == []
    finally:
        for conn in conns:
            await conn.close()


def _postmaster_running(pgdata: Path) -> bool:
    pid_file = pgdata / "postmaster.pid"
    if not pid_file.exists():
        return False
    pid = int(pid_file.read_text().split()[0])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def _health(target: str) -> Any:
    async with grpc.aio.insecure_channel(target) as channel:
        return await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))


async def _reflected_services(target: str) -> list[str]:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        async for response in stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        ):
            return [service.name for service in response.list_services_response.service]
    return []


@pytest.fixture
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    # A short path: the embedded PostgreSQL puts its unix socket in the data dir.
    yield tmp_path_factory.mktemp("srv")


async def test_serve_with_embedded_postgresql_keeps_data_and_stops_cleanly(workdir: Path) -> None:
    env = clean_env()
    # As `make run` starts it on a fresh machine: no key-encryption key (one is made in the data dir) and no
    # XDG_RUNTIME_DIR, which pgserver's import asks platformdirs for (a warning that must not reach the log).
    env.pop("AUTHSVC_KEK")
    env.pop("XDG_RUNTIME_DIR", None)
    pgdata = workdir / ".authsvc" / "pgdata"
    async with serve(env, workdir) as served:
        assert any("embedded PostgreSQL" in message for message in served.messages())
        assert (await _health(served.target)).status == health_pb2.HealthCheckResponse.SERVING
        assert {"authsvc.v1.AuthService", "grpc.health.v1.Health"} <= set(await _reflected_services(served.target))
        # The CLI works on the same data dir while the server runs.
        created = await asyncio.to_thread(authsvc, "apps", "create", "embedded", env=env, cwd=workdir)
        assert created.returncode == 0, created.stderr
        app = json.loads(created.stdout)
        async with grpc.aio.insecure_channel(served.target) as channel:
            stub = auth_service_pb2_grpc.AuthServiceStub(channel)
            issued = await stub.IssueToken(
                pb.IssueTokenRequest(user_id="alice"),
                metadata=(("x-api-key", app["api_key"]), ("authorization", f"Bearer {app['api_secret']}")),
            )
        assert _postmaster_running(pgdata)
    assert served.process.returncode == 0, "".join(served.log)
    assert "Traceback" not in "".join(served.log)
    assert "XDG_RUNTIME_DIR" not in "".join(served.log)
    assert not _postmaster_running(pgdata), "the embedded PostgreSQL must stop with the server"

    async with serve(env, workdir) as served:
        async with grpc.aio.insecure_channel(served.target) as channel:
            stub = auth_service_pb2_grpc.AuthServiceStub(channel)
            result = await stub.VerifyToken(
                pb.VerifyTokenRequest(token=issued.token), metadata=(("x-api-key", app["api_key"]),)
            )
        assert result.valid and result.user_id == "alice"
    assert served.process.returncode == 0, "".join(served.log)


async def test_serve_with_a_database_url_starts_no_embedded_database(database_url: str, workdir: Path) -> None:
    env = clean_env(AUTHSVC_DATABASE_URL=database_url)
    async with serve(env, workdir) as served:
        assert any("using PostgreSQL at" in message for message in served.messages())
        assert (await _health(served.target)).status == health_pb2.HealthCheckResponse.SERVING
    assert served.process.returncode == 0
    assert not (workdir / ".authsvc").exists()


async def test_dev_mode_apps_are_warned_about_at_start(database_url: str, workdir: Path) -> None:
    env = clean_env(AUTHSVC_DATABASE_URL=database_url)
    created = await asyncio.to_thread(authsvc, "apps", "create", "sandbox", "--disable-auth-checks", env=env)
    api_key = json.loads(created.stdout)["api_key"]
    async with serve(env, workdir) as served:
        pass
    warnings = [r["message"] for r in served.records if r["level"] == "WARNING" and api_key in r["message"]]
    assert warnings and "auth checks disabled" in warnings[0]


async def test_workers_share_one_port_and_stop_together(database_url: str, workdir: Path) -> None:
    env = clean_env(AUTHSVC_DATABASE_URL=database_url)
    created = await asyncio.to_thread(authsvc, "apps", "create", "workers", env=env)
    app = json.loads(created.stdout)
    backend = (("x-api-key", app["api_key"]), ("authorization", f"Bearer {app['api_secret']}"))
    async with serve(env, workdir, workers=2) as served:
        ports = set(served_ports(served.records, "gRPC"))
        assert len(ports) == 1, "both workers listen on the same port"
        target = served.target
        issued = []
        for _ in range(8):  # separate channels: separate connections, spread over the workers by the kernel
            async with grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
                stub = auth_service_pb2_grpc.AuthServiceStub(ch)
                issued.append((await stub.IssueToken(pb.IssueTokenRequest(user_id="alice"), metadata=backend)).token)
        await asyncio.sleep(0.01)
        async with grpc.aio.insecure_channel(target) as ch:
            await auth_service_pb2_grpc.AuthServiceStub(ch).RevokeUser(
                pb.RevokeUserRequest(user_ids=["alice"]), metadata=backend
            )
        for _ in range(8):
            async with grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
                stub = auth_service_pb2_grpc.AuthServiceStub(ch)
                for token in issued:
                    while True:  # the other worker learns of the revocation through NOTIFY
                        result = await stub.VerifyToken(pb.VerifyTokenRequest(token=token), metadata=backend[:1])
                        if result.outcome == pb.VERIFY_OUTCOME_REVOKED:
                            break
                        assert result.outcome == pb.VERIFY_OUTCOME_VALID
                        await asyncio.sleep(0.01)
    assert served.process.returncode == 0, served.output
