"""Prometheus metrics of one server: its gRPC calls under the usual grpc_server_* names, and authsvc's own."""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator
from typing import Any

import asyncpg
import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.process_collector import ProcessCollector

# VerifyToken answers in well under a millisecond; the client library's default buckets start at 5 ms.
HANDLING_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

REVOCATION_KINDS = ("user", "app", "token", "clear")
"""The `kind` label values of authsvc_revocations_total."""


def grpc_type(handler: grpc.RpcMethodHandler[Any, Any]) -> str:
    """The grpc_type label of a handler: unary, client_stream, server_stream or bidi_stream."""
    if handler.request_streaming:
        return "bidi_stream" if handler.response_streaming else "client_stream"
    return "server_stream" if handler.response_streaming else "unary"


class MethodMetrics:
    """The label children of one method, made once so that a call costs a few increments, not label lookups."""

    __slots__ = ("started", "handling", "_handled", "_handled_family", "_labels")

    def __init__(self, metrics: Metrics, full_method: str, kind: str) -> None:
        service, _, method = full_method.lstrip("/").rpartition("/")
        self._labels = (kind, service, method)
        self.started = metrics.grpc_started.labels(*self._labels)
        self.handling = metrics.grpc_handling.labels(*self._labels)
        self._handled: dict[grpc.StatusCode, Any] = {}
        self._handled_family = metrics.grpc_handled

    def handled(self, code: grpc.StatusCode) -> Any:
        """The grpc_server_handled_total child of this method for `code`."""
        child = self._handled.get(code)
        if child is None:
            child = self._handled[code] = self._handled_family.labels(*self._labels, code.name)
        return child


class _PoolCollector:
    """Reads the database pool's size when scraped (so the hot path never touches these gauges)."""

    def __init__(self) -> None:
        self.pool: asyncpg.Pool | None = None

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily("authsvc_db_pool_size", "Connections the database pool holds.")
        yield GaugeMetricFamily("authsvc_db_pool_in_use", "Connections of the pool lent out to a query.")

    def collect(self) -> Iterator[GaugeMetricFamily]:
        pool = self.pool
        if pool is None:
            return
        size = pool.get_size()
        yield GaugeMetricFamily("authsvc_db_pool_size", "Connections the database pool holds.", value=size)
        yield GaugeMetricFamily(
            "authsvc_db_pool_in_use", "Connections of the pool lent out to a query.", value=size - pool.get_idle_size()
        )


class _OutcomeCollector:
    """authsvc_verify_outcomes_total from plain counts: the hot path adds to a dict, a scrape reads it.

    A prometheus_client Counter child takes a lock on every increment; the counts here are only written on
    the event loop, which also serves /metrics, so nothing needs one.
    """

    NAME = "authsvc_verify_outcomes"
    HELP = "Tokens verified, by outcome."

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()

    def describe(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(self.NAME, self.HELP, labels=("outcome",))

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(self.NAME, self.HELP, labels=("outcome",))
        for outcome, count in sorted(self.counts.items()):
            family.add_metric((outcome,), count)
        yield family


class Metrics:
    """The metrics of one server, in a registry of its own so that many servers can share a process (tests)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ("grpc_type", "grpc_service", "grpc_method")
        self.grpc_started = Counter(
            "grpc_server_started_total", "RPCs started on the server.", labels, registry=self.registry
        )
        self.grpc_handled = Counter(
            "grpc_server_handled_total",
            "RPCs completed on the server, whatever their status.",
            (*labels, "grpc_code"),
            registry=self.registry,
        )
        self.grpc_handling = Histogram(
            "grpc_server_handling_seconds",
            "Time the server took to complete an RPC.",
            labels,
            buckets=HANDLING_BUCKETS,
            registry=self.registry,
        )
        self._outcomes = _OutcomeCollector()
        self.registry.register(self._outcomes)
        self._revocations = Counter(
            "authsvc_revocations_total",
            "Revocations written: users revoked (user), apps revoked (app), revocations cleared (clear).",
            ("kind",),
            registry=self.registry,
        )
        self._revocation_children = {kind: self._revocations.labels(kind) for kind in REVOCATION_KINDS}
        self._state_version = Gauge(
            "authsvc_state_version", "Version of the change log the in-memory state is at.", registry=self.registry
        )
        self._staleness = Gauge(
            "authsvc_state_staleness_seconds",
            "Seconds since the in-memory state was last confirmed current against the database.",
            registry=self.registry,
        )
        self._watchers = Gauge(
            "authsvc_watchers", "WatchState streams (LocalVerifiers) connected to this process.", registry=self.registry
        )
        self._pool = _PoolCollector()
        self.registry.register(self._pool)
        ProcessCollector(registry=self.registry)
        self._methods: dict[str, MethodMetrics] = {}

    def method(self, full_method: str, handler: grpc.RpcMethodHandler[Any, Any]) -> MethodMetrics:
        """The metrics of a method such as `/authsvc.v1.AuthService/VerifyToken` (made on its first call)."""
        found = self._methods.get(full_method)
        if found is None:
            found = self._methods[full_method] = MethodMetrics(self, full_method, grpc_type(handler))
        return found

    @property
    def outcome_counts(self) -> collections.Counter[str]:
        """The verifications by outcome name, for the hot path to add to in place (no call per token)."""
        return self._outcomes.counts

    def count_revocation(self, kind: str, n: int = 1) -> None:
        """Counts `n` revocations of a kind: `user` (per user), `app`, `token`, or `clear` (per revocation lifted)."""
        child = self._revocation_children.get(kind)
        if child is None:
            raise ValueError(f"revocation kind must be one of {', '.join(REVOCATION_KINDS)}, not {kind!r}")
        child.inc(n)

    def set_version_source(self, source: Callable[[], int]) -> None:
        """Makes every scrape read authsvc_state_version from `source`."""
        self._state_version.set_function(source)

    def set_staleness_source(self, source: Callable[[], float]) -> None:
        """Makes every scrape read authsvc_state_staleness_seconds from `source` (seconds)."""
        self._staleness.set_function(source)

    def set_watchers_source(self, source: Callable[[], int]) -> None:
        """Makes every scrape read authsvc_watchers from `source` (the WatchState streams open now)."""
        self._watchers.set_function(source)

    def register_pool(self, pool: asyncpg.Pool) -> None:
        """Makes every scrape read authsvc_db_pool_size and authsvc_db_pool_in_use from `pool`."""
        self._pool.pool = pool
