"""Prometheus metrics, scraped over HTTP from a running server after real calls."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from authsvc.config import Settings
from authsvc.server import RunningServer, start_server
from authsvc.state import State
from authsvc.store import Store
from authsvc.v1 import admin_service_pb2 as admin_pb
from authsvc.v1 import auth_service_pb2 as pb
from tests.conftest import NewApp
from tests.processes import clean_env, serve, served_ports
from tests.support import api_key_only, backend

if TYPE_CHECKING:
    from authsvc.v1.auth_service_pb2_grpc import AuthServiceAsyncStub as Stub

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _get(url: str, method: str = "GET", accept: str | None = None) -> tuple[int, str, bytes]:
    request = urllib.request.Request(url, method=method, headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers["Content-Type"], error.read()


async def http_get(
    server: RunningServer, path: str, method: str = "GET", accept: str | None = None
) -> tuple[int, str, bytes]:
    """An HTTP request to the server, from a thread: the server answers on this test's event loop."""
    return await asyncio.to_thread(_get, f"http://127.0.0.1:{server.http_port}{path}", method, accept)


async def scrape(server: RunningServer) -> Samples:
    """Every sample of /metrics, keyed by name and labels, parsed by the Prometheus client's own parser."""
    status, _, body = await http_get(server, "/metrics")
    assert status == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


@pytest.fixture
async def fresh_server(store: Store, state: State, settings: Settings) -> AsyncIterator[RunningServer]:
    """A server of its own that no call has reached yet."""
    running = await start_server(store, state, settings)
    yield running
    await running.stop(None)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def grpc_labels(method: str, service: str = "authsvc.v1.AuthService", kind: str = "unary") -> Mapping[str, str]:
    return {"grpc_type": kind, "grpc_service": service, "grpc_method": method}


async def test_calls_are_counted_by_method_and_code(server: RunningServer, stub: Stub, new_app: NewApp) -> None:
    app = await new_app()
    token = (await stub.IssueToken(pb.IssueTokenRequest(user_id="alice"), metadata=backend(app))).token
    before = await scrape(server)
    for _ in range(5):
        assert (await stub.VerifyToken(pb.VerifyTokenRequest(token=token), metadata=api_key_only(app))).valid
    for _ in range(2):
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await stub.VerifyToken(pb.VerifyTokenRequest(token=token))  # no API key
        assert failed.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.IssueToken(pb.IssueTokenRequest(user_id="bob"), metadata=backend(app, "not the secret"))
    after = await scrape(server)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    verify = grpc_labels("VerifyToken")
    assert moved("grpc_server_started_total", **verify) == 7
    assert moved("grpc_server_handled_total", **verify, grpc_code="OK") == 5
    assert moved("grpc_server_handled_total", **verify, grpc_code="UNAUTHENTICATED") == 2
    assert moved("grpc_server_handling_seconds_count", **verify) == 7
    assert moved("grpc_server_handling_seconds_bucket", **verify, le="+Inf") == 7
    assert moved("grpc_server_handling_seconds_sum", **verify) > 0
    issue = grpc_labels("IssueToken")
    assert moved("grpc_server_started_total", **issue) == 1
    assert moved("grpc_server_handled_total", **issue, grpc_code="UNAUTHENTICATED") == 1
    assert moved("grpc_server_handled_total", **issue, grpc_code="OK") == 0


async def test_streams_are_counted_with_their_type_and_a_cancelled_one_as_cancelled(
    server: RunningServer, channel: grpc.aio.Channel
) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    watch_labels = grpc_labels("Watch", "grpc.health.v1.Health", "server_stream")
    reflection_labels = grpc_labels("ServerReflectionInfo", "grpc.reflection.v1alpha.ServerReflection", "bidi_stream")
    before = await scrape(server)
    watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
    assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
    watch.cancel()
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    assert len([r async for r in reflection.ServerReflectionInfo(iter([request]))]) == 1
    async with asyncio.timeout(30):
        while True:  # the server learns of the cancellation after the client: wait until it has counted it
            after = await scrape(server)
            cancelled = value(after, "grpc_server_handled_total", **watch_labels, grpc_code="CANCELLED")
            if cancelled - value(before, "grpc_server_handled_total", **watch_labels, grpc_code="CANCELLED") >= 1:
                break
            await asyncio.sleep(0.01)
    assert (
        value(after, "grpc_server_started_total", **watch_labels)
        - value(before, "grpc_server_started_total", **watch_labels)
        == 1
    )
    assert (
        value(after, "grpc_server_handled_total", **reflection_labels, grpc_code="OK")
        - value(before, "grpc_server_handled_total", **reflection_labels, grpc_code="OK")
        == 1
    )


async def test_domain_metrics_and_the_pool_are_read_at_scrape_time(
    server: RunningServer, state: State, pool: asyncpg.Pool
) -> None:
    metrics = server.metrics
    before = await scrape(server)
    metrics.outcome_counts["EXPIRED"] += 2  # as VerifyToken and VerifyTokens count
    metrics.outcome_counts["REVOKED"] += 3
    metrics.count_revocation("user", 4)
    metrics.count_revocation("app")
    metrics.count_revocation("clear", 2)
    metrics.register_pool(pool)
    with pytest.raises(ValueError, match="revocation kind"):
        metrics.count_revocation("everyone")
    async with pool.acquire():
        after = await scrape(server)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("authsvc_verify_outcomes_total", outcome="EXPIRED") == 2
    assert moved("authsvc_verify_outcomes_total", outcome="REVOKED") == 3
    assert moved("authsvc_revocations_total", kind="user") == 4
    assert moved("authsvc_revocations_total", kind="app") == 1
    assert moved("authsvc_revocations_total", kind="clear") == 2
    assert value(after, "authsvc_state_version") == state.version
    # The server's state follows the session database, so it was confirmed current moments ago.
    assert 0 <= value(after, "authsvc_state_staleness_seconds") < 3600
    assert value(after, "authsvc_db_pool_size") == pool.get_size() >= 1
    assert 1 <= value(after, "authsvc_db_pool_in_use") <= value(after, "authsvc_db_pool_size")


async def test_the_watchers_connected_are_a_gauge(server: RunningServer, stub: Stub, new_app: NewApp) -> None:
    app = await new_app()
    before = value(await scrape(server), "authsvc_watchers")
    calls = [stub.WatchState(pb.WatchStateRequest(), metadata=backend(app)) for _ in range(3)]
    for call in calls:
        async for message in call:  # connected once the snapshot came
            if message.snapshot.last:
                break
    assert value(await scrape(server), "authsvc_watchers") == before + 3
    calls[0].cancel()
    calls[1].cancel()
    for _ in range(100):  # the server hears of a cancel on its next read
        if value(await scrape(server), "authsvc_watchers") == before + 1:
            break
        await asyncio.sleep(0.05)
    assert value(await scrape(server), "authsvc_watchers") == before + 1
    calls[2].cancel()


async def test_metrics_speak_both_exposition_formats(server: RunningServer) -> None:
    status, content_type, body = await http_get(server, "/metrics")
    assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
    assert b"# TYPE grpc_server_handled_total counter" in body
    status, content_type, body = await http_get(server, "/metrics", accept="application/openmetrics-text")
    assert status == 200 and content_type.startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")


@pytest.mark.parametrize(
    ("path", "method", "status"),
    [
        ("/", "GET", 404),
        ("/metrics/extra", "GET", 404),
        ("/.well-known/jwks/somekey.json", "GET", 404),
        ("/metrics", "POST", 405),
        ("/metrics", "HEAD", 200),
    ],
)
async def test_other_paths_and_methods_are_refused(server: RunningServer, path: str, method: str, status: int) -> None:
    got, _, body = await http_get(server, path, method)
    assert got == status
    if method == "HEAD":
        assert body == b""


@pytest.mark.parametrize("request_line", [b"garbage\r\n\r\n", b"GET /metrics SPDY/3\r\n\r\n", b"\r\n"])
async def test_a_malformed_request_gets_400(server: RunningServer, request_line: bytes) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.http_port)
    try:
        writer.write(request_line)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")


async def test_every_standard_series_is_there_at_zero_before_the_first_call(fresh_server: RunningServer) -> None:
    samples = await scrape(fresh_server)
    names = {name for name, _ in samples}
    assert not [name for name in names if name.endswith("_created")], "no *_created series"
    for service in (
        pb.DESCRIPTOR.services_by_name["AuthService"],
        admin_pb.DESCRIPTOR.services_by_name["AdminService"],
        health_pb2.DESCRIPTOR.services_by_name["Health"],
    ):
        for method in service.methods:
            kind = "server_stream" if method.server_streaming else "unary"
            labels = grpc_labels(method.name, service.full_name, kind)
            for name in ("grpc_server_started_total", "grpc_server_msg_received_total", "grpc_server_msg_sent_total"):
                assert (name, frozenset(labels.items())) in samples, (name, labels)
            assert ("grpc_server_handled_total", frozenset({**labels, "grpc_code": "OK"}.items())) in samples
    for outcome in pb.VerifyOutcome.keys():
        if outcome not in ("VERIFY_OUTCOME_UNSPECIFIED", "VERIFY_OUTCOME_UNAVAILABLE"):  # never the server's answer
            name = outcome.removeprefix("VERIFY_OUTCOME_")
            assert samples[("authsvc_verify_outcomes_total", frozenset({("outcome", name)}))] == 0
    assert value(samples, "grpc_server_started_total", **grpc_labels("VerifyToken")) == 0


async def test_messages_are_counted_for_unary_calls_and_streams(
    server: RunningServer, stub: Stub, channel: grpc.aio.Channel, new_app: NewApp
) -> None:
    app = await new_app()
    verify = grpc_labels("VerifyToken")
    watch = grpc_labels("WatchState", kind="server_stream")
    reflection = grpc_labels("ServerReflectionInfo", "grpc.reflection.v1alpha.ServerReflection", "bidi_stream")
    before = await scrape(server)
    token = (await stub.IssueToken(pb.IssueTokenRequest(user_id="alice"), metadata=backend(app))).token
    await stub.VerifyToken(pb.VerifyTokenRequest(token=token), metadata=api_key_only(app))
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.VerifyToken(pb.VerifyTokenRequest(token=token))  # no API key: received, nothing sent
    call = stub.WatchState(pb.WatchStateRequest(), metadata=backend(app))
    snapshot = 0
    async for message in call:
        snapshot += 1
        if message.snapshot.last:
            break
    call.cancel()
    requests = [reflection_pb2.ServerReflectionRequest(list_services="") for _ in range(3)]
    replies = [r async for r in reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(iter(requests))]
    after = await scrape(server)

    def moved(name: str, labels: Mapping[str, str]) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("grpc_server_msg_received_total", verify) == 2
    assert moved("grpc_server_msg_sent_total", verify) == 1
    assert moved("grpc_server_msg_received_total", watch) == 1
    assert moved("grpc_server_msg_sent_total", watch) >= snapshot >= 1
    assert moved("grpc_server_msg_received_total", reflection) == 3
    assert moved("grpc_server_msg_sent_total", reflection) == len(replies) == 3


async def test_workers_are_one_scrape_target_with_counters_summed(database_url: str, tmp_path: Path) -> None:
    env = clean_env(AUTHSVC_DATABASE_URL=database_url)
    async with serve(env, tmp_path, workers=2) as served:
        assert len(served_ports(served.records, "HTTP")) == 1, "one HTTP port for the server, whatever its workers"
        health = grpc_labels("Check", "grpc.health.v1.Health")
        url = f"http://127.0.0.1:{served.http_port}/metrics"
        status, _, body = await asyncio.to_thread(_get, url)
        before = parse(body)
        calls = 40
        for _ in range(calls):  # a channel each: separate connections, spread over both workers by the kernel
            async with grpc.aio.insecure_channel(served.target, options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
                await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest())
        status, _, body = await asyncio.to_thread(_get, url)
    assert status == 200
    after = parse(body)
    started = value(after, "grpc_server_started_total", **health) - value(before, "grpc_server_started_total", **health)
    assert started == calls, "the calls of both workers, summed"
    # Gauges are facts of one process: one sample per worker.
    assert {labels for name, labels in after if name == "authsvc_state_version"} == {
        frozenset({("worker", "1")}),
        frozenset({("worker", "2")}),
    }
    assert not [name for name, _ in after if name.endswith("_created")]


def parse(body: bytes) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


async def test_every_series_the_dashboard_reads_is_served(fresh_server: RunningServer, pool: asyncpg.Pool) -> None:
    dashboard = json.loads((Path(__file__).parent.parent / "deploy/grafana/authsvc-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    read = {name for expr in exprs for name in re.findall(r"\b((?:grpc_server|authsvc)_[a-z_]+)\{", expr)}
    fresh_server.metrics.register_pool(pool)
    served = {name for name, _ in await scrape(fresh_server)}
    assert read and read <= served, read - served
    # Pool utilisation is in use over the most the pool may hold (not over what it holds now).
    utilisation = [e for e in exprs if "authsvc_db_pool_in_use" in e and "/" in e]
    assert utilisation and all("authsvc_db_pool_max" in e for e in utilisation)
