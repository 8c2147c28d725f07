"""Prometheus metrics of one server: its gRPC calls under the usual grpc_server_* names (the go-grpc-prometheus
set), and authsvc's own; and the merge of several worker processes' metrics into one scrape (`merge_expositions`).

No `*_created` series: dashboards and alerts never read them, and they double the series of every counter.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import asyncpg
import grpc
from google.protobuf.descriptor import ServiceDescriptor
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.process_collector import ProcessCollector

from authsvc.tokens import Outcome

disable_created_metrics()

# VerifyToken answers in well under a millisecond; the client library's default buckets start at 5 ms.
HANDLING_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

REVOCATION_KINDS = ("user", "app", "token", "clear")
"""The `kind` label values of authsvc_revocations_total."""

VERIFY_OUTCOMES = tuple(outcome.name for outcome in Outcome)
"""The `outcome` label values of authsvc_verify_outcomes_total, each present (at zero) from the start."""
GUEST_RESULTS = ("issued", "disabled", "rate_limited", "invalid")
"""The `result` label values of authsvc_guest_tokens_total."""


def grpc_type(handler: grpc.RpcMethodHandler[Any, Any]) -> str:
    """The grpc_type label of a handler: unary, client_stream, server_stream or bidi_stream."""
    return _kind(handler.request_streaming, handler.response_streaming)


def _kind(request_streaming: bool, response_streaming: bool) -> str:
    if request_streaming:
        return "bidi_stream" if response_streaming else "client_stream"
    return "server_stream" if response_streaming else "unary"


class MethodMetrics:
    """The label children of one method, made once so that a call costs a few increments, not label lookups.

    Messages: a unary request is one message received per call started, a unary answer one message sent per call
    that ended OK, so those counts are read from `started` and `handled(OK)` at scrape time (nothing on the hot
    path); a stream counts its messages in `received` and `sent` as they pass.
    """

    __slots__ = ("started", "handling", "_handled", "_handled_family", "_labels", "kind", "received", "sent")

    def __init__(self, metrics: Metrics, full_method: str, kind: str) -> None:
        service, _, method = full_method.lstrip("/").rpartition("/")
        self.kind = kind
        self._labels = (kind, service, method)
        self.started = metrics.grpc_started.labels(*self._labels)
        self.handling = metrics.grpc_handling.labels(*self._labels)
        self._handled: dict[grpc.StatusCode, Any] = {}
        self._handled_family = metrics.grpc_handled
        self.handled(grpc.StatusCode.OK)  # at zero from the start: dashboards and alerts work before any call
        self.received = 0
        """Messages received on a request stream (client_stream, bidi_stream)."""
        self.sent = 0
        """Messages sent on a response stream (server_stream, bidi_stream)."""

    @property
    def labels(self) -> tuple[str, str, str]:
        """grpc_type, grpc_service, grpc_method."""
        return self._labels

    def messages(self) -> tuple[float, float]:
        """Messages received and sent so far (see the class docstring)."""
        received = self.received if self.kind in ("client_stream", "bidi_stream") else self.started._value.get()
        if self.kind in ("server_stream", "bidi_stream"):
            sent: float = self.sent
        else:
            sent = self.handled(grpc.StatusCode.OK)._value.get()
        return received, sent

    def handled(self, code: grpc.StatusCode) -> Any:
        """The grpc_server_handled_total child of this method for `code`."""
        child = self._handled.get(code)
        if child is None:
            child = self._handled[code] = self._handled_family.labels(*self._labels, code.name)
        return child


class _MessageCollector:
    """grpc_server_msg_received_total and grpc_server_msg_sent_total of every method, read at scrape time."""

    def __init__(self, methods: dict[str, MethodMetrics]) -> None:
        self._methods = methods

    def _families(self) -> tuple[CounterMetricFamily, CounterMetricFamily]:
        labels = ("grpc_type", "grpc_service", "grpc_method")
        return (
            CounterMetricFamily(
                "grpc_server_msg_received", "RPC stream messages received on the server.", labels=labels
            ),
            CounterMetricFamily("grpc_server_msg_sent", "gRPC stream messages sent by the server.", labels=labels),
        )

    def describe(self) -> Iterator[CounterMetricFamily]:
        yield from self._families()

    def collect(self) -> Iterator[CounterMetricFamily]:
        received, sent = self._families()
        for method in list(self._methods.values()):
            counts = method.messages()
            received.add_metric(method.labels, counts[0])
            sent.add_metric(method.labels, counts[1])
        yield received
        yield sent


class _PoolCollector:
    """Reads the database pool's size when scraped (so the hot path never touches these gauges)."""

    def __init__(self) -> None:
        self.pool: asyncpg.Pool | None = None

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily("authsvc_db_pool_size", "Connections the database pool holds.")
        yield GaugeMetricFamily("authsvc_db_pool_max", "Connections the database pool may hold at most.")
        yield GaugeMetricFamily("authsvc_db_pool_in_use", "Connections of the pool lent out to a query.")

    def collect(self) -> Iterator[GaugeMetricFamily]:
        pool = self.pool
        if pool is None:
            return
        size = pool.get_size()
        yield GaugeMetricFamily("authsvc_db_pool_size", "Connections the database pool holds.", value=size)
        yield GaugeMetricFamily(
            "authsvc_db_pool_max", "Connections the database pool may hold at most.", value=pool.get_max_size()
        )
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
        for outcome in VERIFY_OUTCOMES:
            self.counts[outcome] = 0  # present at zero from the start

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
        self._guest_tokens = Counter(
            "authsvc_guest_tokens_total",
            "IssueGuestToken calls by result: issued, disabled (guest_access off), rate_limited, invalid (a bad"
            " user_id or name).",
            ("result",),
            registry=self.registry,
        )
        self._guest_children = {result: self._guest_tokens.labels(result) for result in GUEST_RESULTS}
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
        self.registry.register(_MessageCollector(self._methods))

    def method(self, full_method: str, handler: grpc.RpcMethodHandler[Any, Any]) -> MethodMetrics:
        """The metrics of a method such as `/authsvc.v1.AuthService/VerifyToken` (made on its first call)."""
        found = self._methods.get(full_method)
        if found is None:
            found = self._methods[full_method] = MethodMetrics(self, full_method, grpc_type(handler))
        return found

    def declare_services(self, services: Iterable[ServiceDescriptor]) -> None:
        """Makes the series of every method of `services` (started, handled with code OK, messages) exist at zero
        before its first call."""
        for service in services:
            for method in service.methods:
                full_method = f"/{service.full_name}/{method.name}"
                if full_method not in self._methods:
                    kind = _kind(method.client_streaming, method.server_streaming)
                    self._methods[full_method] = MethodMetrics(self, full_method, kind)

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

    def count_guest_token(self, result: str) -> None:
        """Counts one IssueGuestToken call by its result (GUEST_RESULTS)."""
        self._guest_children[result].inc()

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


# --- several worker processes, one scrape ---------------------------------------------------------------------

_SUMMED = frozenset({"counter", "histogram", "summary"})


def merge_expositions(texts: Iterable[tuple[int, str]]) -> list[Metric]:
    """The metrics of several worker processes as one process would show them: the samples of counters and
    histograms (the grpc_server_* series, outcomes, revocations, CPU seconds) summed over the workers, each
    gauge's sample once per worker with a `worker` label added (a state version, staleness or pool size is a
    fact of one process). `texts` are (worker number, exposition in the Prometheus text format)."""
    families: dict[str, Metric] = {}
    sums: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for worker, text in texts:
        for family in text_string_to_metric_families(text):
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
                sums[family.name] = {}
            if family.type in _SUMMED:
                totals = sums[family.name]
                for sample in family.samples:
                    key = (sample.name, tuple(sample.labels.items()))
                    totals[key] = totals.get(key, 0.0) + sample.value
            else:
                for sample in family.samples:
                    merged.add_sample(sample.name, {**sample.labels, "worker": str(worker)}, sample.value)
    for name, totals in sums.items():
        for (sample_name, labels), total in totals.items():
            families[name].add_sample(sample_name, dict(labels), total)
    return list(families.values())


class MergedRegistry:
    """What prometheus_client's encoders need of a registry (`collect`), over metrics merged beforehand."""

    def __init__(self, metrics: list[Metric]) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        yield from self._metrics
