"""What the bench reads from /proc (CPU time, memory, listening ports, process trees) and where it pins processes."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Collection, Sequence

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    # The command name (field 2) is in parentheses and may hold spaces: split after the last ')'.
    return text[text.rindex(")") + 2 :].split()


def cpu_seconds(pid: int, *, with_reaped_children: bool = False) -> float:
    """User + system CPU time of a process (all its threads, live or exited)."""
    f = _stat_fields(pid)
    ticks = int(f[11]) + int(f[12])  # utime, stime (fields 14, 15)
    if with_reaped_children:
        ticks += int(f[13]) + int(f[14])  # cutime, cstime
    return ticks / CLK_TCK


def parent_of(pid: int) -> int:
    return int(_stat_fields(pid)[1])


def process_tree(root: int) -> list[int]:
    """The process and its descendants, alive now."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                children.setdefault(parent_of(int(entry)), []).append(int(entry))
            except (OSError, ValueError):
                continue
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def set_affinity(root: int, cpus: Collection[int]) -> None:
    """Lets every thread of the process tree at `root` run only on `cpus` (threads made later inherit it)."""
    for pid in process_tree(root):
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(int(tid), cpus)


def tree_cpu_seconds(root: int, *, with_reaped_children: bool = False) -> float:
    """CPU time of a process and its live descendants (and of its reaped ones, if asked)."""
    return sum(tree_cpu_by_process(root, with_reaped_children=with_reaped_children).values())


def tree_cpu_by_process(root: int, *, with_reaped_children: bool = False) -> dict[int, float]:
    """CPU time of a process and of each of its live descendants (with the root's reaped ones, if asked)."""
    times: dict[int, float] = {}
    for pid in process_tree(root):
        with contextlib.suppress(OSError):
            times[pid] = cpu_seconds(pid, with_reaped_children=with_reaped_children and pid == root)
    return times


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in KiB."""
    values: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    return values


def machine_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + parts[4]  # idle, iowait
    total = sum(parts[:8])  # guest time is already counted in user
    return total - idle, total


def listening_ports(pids: Sequence[int]) -> set[int]:
    """TCP ports the processes listen on (IPv4 and IPv6), from their socket inodes and /proc/net/tcp*."""
    inodes: set[str] = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if link.startswith("socket:["):
                        inodes.add(link[8:-1])
        except OSError:
            continue
    ports: set[int] = set()
    if not inodes:
        return ports
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pids[0]}/net/{table}") as f:
                next(f)
                for line in f:
                    cols = line.split()
                    if cols[3] == "0A" and cols[9] in inodes:  # 0A: LISTEN
                        ports.add(int(cols[1].rsplit(":", 1)[1], 16))
        except (OSError, IndexError, StopIteration):
            continue
    return ports


def placement() -> tuple[frozenset[int], frozenset[int]] | None:
    """The server's CPU and the generators' CPUs: the first CPU this process may use, and the rest (None with
    fewer than two, or where affinity cannot be set)."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    return frozenset(cpus[:1]), frozenset(cpus[1:])
