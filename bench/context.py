"""What every part of a bench run shares: its options, the figures it collects (rows, targets) and the ratios
between them, its notes and failures, and its log on stderr."""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.database import PostgresServer


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def first_line(exc: BaseException) -> str:
    """An exception as one short line, for a row or a failure in the report."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"[:300]


@dataclass
class Options:
    duration: float
    warmup: float
    quick: bool
    generators: int
    channels: int
    concurrency: int
    fresh_tokens: int
    batch_tokens: int
    revoke_requests: int
    eddsa_fresh_tokens: int
    propagation_iterations: int
    revocations: int
    repeat: int
    rounds: int
    placement: tuple[frozenset[int], frozenset[int]] | None
    """(the server's CPUs, the generators' CPUs) for every load measurement, or None: not pinned."""
    quiet_cores: float
    quiet_budget: float
    output: Path | None
    only: frozenset[str] | None = None

    def selected(self, key: str) -> bool:
        """Whether scenario `key` (a row key such as `b-fresh`, or `g`/`h`) runs in this invocation: `--only` names
        it, or a prefix of it by whole parts (`b` selects every (b) row, `b-eddsa` both EdDSA rows)."""
        if self.only is None:
            return True
        parts = key.split("-")
        return any("-".join(parts[:n]) in self.only for n in range(1, len(parts) + 1))


@dataclass
class Row:
    """One scenario's figures."""

    key: str
    label: str
    chart_label: str
    server: str
    calls_per_s: float | None = None
    tokens_per_s: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    server_cpu_us: float | None = None
    """Server CPU time per call, µs (user + system, every thread)."""
    server_cpu_pct: float | None = None
    """Server CPU use during the window, % of one core."""
    db_cpu_us: float | None = None
    """PostgreSQL CPU time per call, µs (postmaster and backends)."""
    gen_cpu_pct: float | None = None
    """Load generators' CPU use during the window, % of one core (summed)."""
    other_cpu_pct: float | None = None
    """CPU use on the machine by anything else during the window, % of one core."""
    calls: int = 0
    window_s: float = 0.0
    error: str | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class Target:
    name: str
    value: float | None
    threshold: float
    higher_is_better: bool
    unit: str = ""
    detail: str = ""

    @property
    def met(self) -> bool | None:
        if self.value is None:
            return None
        return self.value >= self.threshold if self.higher_is_better else self.value <= self.threshold


Figure = tuple[str, str]
"""A figure of a row: (row key, Row attribute), such as ("b-rep", "calls_per_s")."""


def figure(row: Row | None, attr: str) -> float | None:
    """A figure of a row that ran, else None."""
    if row is None:
        return None
    value = getattr(row, attr)
    return None if value is None else float(value)


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


@dataclass
class Bench:
    opts: Options
    pg: PostgresServer
    tmp: Path
    iat: int
    rows: list[Row]
    notes: list[str]
    failures: list[str]
    """The bench could not measure something, or an answer was wrong: `make bench` exits non-zero."""
    findings: list[str] = field(default_factory=list)
    """Something about authsvc worth a headline that is not a target (a start-up failure, say)."""
    quiet_waited: float = 0.0
    rounds: dict[str, list[Row]] = field(default_factory=dict)
    """Every trial of the interleaved scenarios (a, b, c), by row key, in round order (failed ones too)."""

    def row(self, key: str) -> Row | None:
        """The table's row `key`, when it ran."""
        for row in self.rows:
            if row.key == key and row.error is None:
                return row
        return None

    def paired(self, num: Figure, den: Figure) -> tuple[float | None, str]:
        """The ratio num ÷ den: the median of its values round by round when the two were measured in interleaved
        rounds, else the ratio of the two rows the table keeps; and how it was taken."""
        if not self.rounds.get(num[0]) or not self.rounds.get(den[0]):
            return ratio(figure(self.row(num[0]), num[1]), figure(self.row(den[0]), den[1])), ""
        ratios = self.round_ratios(num, den)
        if not ratios:
            return None, ""
        if len(ratios) == 1:
            return ratios[0], "one round"
        return statistics.median(ratios), f"median of {len(ratios)} rounds: " + ", ".join(f"{r:.2f}" for r in ratios)

    def round_ratios(self, num: Figure, den: Figure) -> list[float]:
        """num ÷ den round by round, for the rounds where both ran."""
        return [
            r
            for a, b in zip(self.rounds.get(num[0], []), self.rounds.get(den[0], []), strict=False)
            if a.error is None and b.error is None and (r := ratio(figure(a, num[1]), figure(b, den[1]))) is not None
        ]

    def paired_target(
        self, name: str, num: Figure, den: Figure, threshold: float, higher: bool, what: str = ""
    ) -> Target:
        """A target on the ratio num ÷ den (see `paired`)."""
        value, rounds = self.paired(num, den)
        return Target(name, value, threshold, higher, detail="; ".join(d for d in (what, rounds) if d))
