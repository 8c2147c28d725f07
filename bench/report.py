"""The report of `make bench`: the machine, the versions, every figure, the targets, and Mermaid charts."""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Sequence
from typing import Any

from bench.context import Row, Target
from bench.servers import REPO


def machine() -> dict[str, str]:
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
                break
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    return {
        "CPU": model,
        "cores": str(os.cpu_count()),
        "memory": f"{mem_kib / 1024 / 1024:.1f} GiB",
        "kernel": f"{platform.system()} {platform.release()}",
        "load average at start (1, 5, 15 min)": load,
    }


def versions(postgres: str) -> dict[str, str]:
    import asyncpg
    import grpc
    import jwt
    from google.protobuf import __version__ as protobuf_version

    result = {
        "Python": platform.python_version(),
        "grpcio": grpc.__version__,
        "protobuf": protobuf_version,
        "PyJWT": jwt.__version__,
        "asyncpg": asyncpg.__version__,
        "PostgreSQL": postgres,
    }
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "authsvc"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        result["authsvc"] = commit + (" + uncommitted changes in authsvc/" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        result["authsvc"] = "unknown"
    return result


def _num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "—"
    return f"{value:,.{digits}f}"


def _ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def results_table(rows: Sequence[Row]) -> list[str]:
    lines = [
        "| scenario | server | calls/s | tokens/s | p50 ms | p99 ms | server CPU µs/call | server CPU % | "
        "PostgreSQL CPU µs/call | generators CPU % | other CPU % | calls |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        if r.error is not None:
            lines.append(f"| {r.label} | {r.server} | failed: {r.error} |  |  |  |  |  |  |  |  |  |")
            continue
        lines.append(
            f"| {r.label} | {r.server} | {_num(r.calls_per_s)} | {_num(r.tokens_per_s)} | {_ms(r.p50_ms)} | "
            f"{_ms(r.p99_ms)} | {_num(r.server_cpu_us)} | {_num(r.server_cpu_pct)} | {_num(r.db_cpu_us)} | "
            f"{_num(r.gen_cpu_pct)} | {_num(r.other_cpu_pct)} | {r.calls:,} |"
        )
    return lines


def targets_table(targets: Sequence[Target]) -> list[str]:
    lines = ["| ratio or figure | this run | target | verdict |", "| --- | ---: | ---: | --- |"]
    for t in targets:
        sign = "≥" if t.higher_is_better else "≤"
        value = "—" if t.value is None else f"{t.value:.2f}{t.unit}"
        verdict = {True: "**met**", False: "**not met**", None: "not measured"}[t.met]
        detail = f" ({t.detail})" if t.detail else ""
        lines.append(f"| {t.name}{detail} | {value} | {sign} {t.threshold:g}{t.unit} | {verdict} |")
    return lines


def _chart(title: str, axis: str, rows: Sequence[tuple[str, float]]) -> list[str]:
    top = max((v for _, v in rows), default=1.0) * 1.1 or 1.0
    labels = ", ".join(f'"{label}"' for label, _ in rows)
    values = ", ".join(f"{v:.1f}" if v < 100 else f"{v:.0f}" for _, v in rows)
    return [
        "```mermaid",
        "xychart-beta",
        f'    title "{title}"',
        f"    x-axis [{labels}]",
        f'    y-axis "{axis}" 0 --> {top:.0f}' if top >= 10 else f'    y-axis "{axis}" 0 --> {top:.1f}',
        f"    bar [{values}]",
        "```",
    ]


def charts(rows: Sequence[Row]) -> list[str]:
    ok = [r for r in rows if r.error is None and r.calls_per_s is not None]
    throughput = [(r.chart_label, r.calls_per_s or 0.0) for r in ok]
    p99 = [(r.chart_label, r.p99_ms or 0.0) for r in ok]
    return [
        *_chart("Throughput per scenario (calls/s, higher is better)", "calls/s", throughput),
        "",
        *_chart("p99 latency per scenario (ms, lower is better)", "p99 ms", p99),
    ]


def key_value_table(values: dict[str, Any], header: tuple[str, str] = ("", "")) -> list[str]:
    lines = [f"| {header[0]} | {header[1]} |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in values.items()]
    return lines
