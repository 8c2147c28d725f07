"""Live figures of each serving process: verify outcomes per second, state version and staleness.

The console's own process is read in memory; the other workers of a `--workers N` server are read from their
/metrics (worker N serves it on AUTHSVC_HTTP_PORT + N - 1), as Prometheus would. A sampler keeps the last two
readings of each, so a rate is the difference of two readings over the time between them.
"""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

log = logging.getLogger(__name__)

SAMPLE_INTERVAL = 1.0
"""Seconds between two readings of every process."""


@dataclass(frozen=True, slots=True)
class Reading:
    """One process's figures at one moment; `error` set when the process could not be read."""

    at: float
    version: int | None = None
    staleness: float | None = None
    outcomes: Mapping[str, float] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ProcessFigures:
    """What the figures page shows of one process."""

    name: str
    version: int | None
    staleness: float | None
    per_second: dict[str, float]
    error: str | None


Source = Callable[[], Reading]

UNKNOWN_PORT = "its /metrics port is unknown here: with AUTHSVC_HTTP_PORT=0 each worker picks its own"


def local_source(version: Callable[[], int], staleness: Callable[[], float], outcomes: Mapping[str, int]) -> Source:
    """Reads this process: its state's version and staleness, and the counts VerifyToken adds to."""
    return lambda: Reading(time.monotonic(), version(), staleness(), dict(outcomes))


def parse_metrics(text: str, at: float) -> Reading:
    """A Reading from the Prometheus text of a worker's /metrics."""
    version: int | None = None
    staleness: float | None = None
    outcomes: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "authsvc_state_version":
                version = int(sample.value)
            elif sample.name == "authsvc_state_staleness_seconds":
                staleness = sample.value
            elif sample.name == "authsvc_verify_outcomes_total":
                outcomes[sample.labels["outcome"]] = sample.value
    return Reading(at, version, staleness, outcomes)


def _fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=SAMPLE_INTERVAL) as answer:  # noqa: S310 (our own worker, http only)
        text: str = answer.read().decode()
        return text


class Figures:
    """Samples every process once a second while started; `current()` is what the figures page shows."""

    def __init__(self, local: Source, remote: Mapping[str, str | None]) -> None:
        """`local`: this process; `remote`: the other workers' names and /metrics URLs (None: not known)."""
        self._local = local
        self._remote = dict(remote)
        self._readings: dict[str, tuple[Reading | None, Reading | None]] = {}
        self._task: asyncio.Task[None] | None = None

    @property
    def names(self) -> list[str]:
        """The processes, this one first."""
        return ["worker 1 (with the console)" if self._remote else "this process", *self._remote]

    async def sample(self) -> None:
        """Takes one reading of every process."""
        readings = [self._local()]
        for url in self._remote.values():
            if url is None:
                readings.append(Reading(time.monotonic(), error=UNKNOWN_PORT))
                continue
            try:
                text = await asyncio.to_thread(_fetch, url)
                readings.append(parse_metrics(text, time.monotonic()))
            except (OSError, ValueError) as exc:
                readings.append(Reading(time.monotonic(), error=f"cannot read its /metrics: {type(exc).__name__}"))
        for name, reading in zip(self.names, readings, strict=True):
            _, last = self._readings.get(name, (None, None))
            self._readings[name] = (last, reading)

    def current(self) -> list[ProcessFigures]:
        """Each process's latest figures, with the outcome rates between its last two readings."""
        shown = []
        for name in self.names:
            before, last = self._readings.get(name, (None, None))
            if last is None:
                shown.append(ProcessFigures(name, None, None, {}, "not read yet"))
                continue
            rates: dict[str, float] = {}
            if before is not None and before.error is None and last.error is None and last.at > before.at:
                span = last.at - before.at
                for outcome, count in last.outcomes.items():
                    rates[outcome] = max(0.0, count - before.outcomes.get(outcome, 0.0)) / span
            shown.append(ProcessFigures(name, last.version, last.staleness, rates, last.error))
        return shown

    def start(self) -> None:
        """Samples in the background until `stop`."""
        self._task = asyncio.create_task(self._run(), name="authsvc-console-figures")

    async def stop(self) -> None:
        """Stops sampling."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                await self.sample()
            except Exception:  # a figure is not worth the console: log and keep sampling
                log.exception("console: reading the live figures failed")
            await asyncio.sleep(SAMPLE_INTERVAL)
