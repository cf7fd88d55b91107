"""Latency samples and their percentiles, shared by the benchmark sections."""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Measure:
    """Samples in seconds; percentiles reported in milliseconds."""

    name: str
    samples: list[float]
    target_p50_ms: float | None = None
    cpu_ms: float | None = None  # CPU of the part measured, per sample, where the section reads it
    cpu: dict[str, list[float]] = field(default_factory=dict)  # CPU seconds per sample, by process

    def cpu_median(self, process: str) -> float:
        return statistics.median(self.cpu[process])

    @property
    def p50(self) -> float:
        return statistics.median(self.samples) * 1000

    def pct(self, q: float) -> float:
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000

    @property
    def per_second(self) -> float:
        return len(self.samples) / sum(self.samples)

    @property
    def met(self) -> bool | None:
        return None if self.target_p50_ms is None else self.p50 <= self.target_p50_ms


def proc_usage(pid: int) -> tuple[float, int]:
    """(CPU seconds, peak RSS in bytes) of a live process, from /proc (Linux)."""
    ticks = os.sysconf("SC_CLK_TCK")
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    peak = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            peak = int(line.split()[1]) * 1024
    return cpu, peak


def _stat_fields(pid: int) -> list[str]:
    # The command name (field 2) may hold spaces and parentheses: split after its closing one.
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def children(pid: int) -> list[int]:
    """The live children of every thread of ``pid`` (Linux ``/proc/PID/task/TID/children``)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):  # the thread ended meanwhile
            continue
    return found


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of process ``pid`` and of every process under it: its threads, the
    ones that ended included (the kernel sums them into the process), its live descendants, and the
    children it has reaped (cutime/cstime). A process that ends between two readings is missed until
    its parent reaps it, so read after the work has finished."""
    ticks = os.sysconf("SC_CLK_TCK")
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        try:
            fields = _stat_fields(current)
            total += sum(int(fields[n]) for n in (11, 12, 13, 14)) / ticks  # utime stime cutime cstime
            todo += children(current)
        except (OSError, IndexError, ValueError):  # gone meanwhile (a forked child that finished)
            if current == pid:
                raise
    return total


def cpu_times() -> tuple[float, float]:
    """(busy, total) seconds of every core since boot, all processes (Linux /proc/stat): the share of the
    machine a measurement had, others' work included (``busy`` excludes idle and I/O wait)."""
    ticks = os.sysconf("SC_CLK_TCK")
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    total = sum(values[:8])  # user nice system idle iowait irq softirq steal (guest is inside user)
    return (total - values[3] - values[4]) / ticks, total / ticks
