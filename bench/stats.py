"""Latency samples and their percentiles, shared by the benchmark sections."""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Measure:
    """Samples in seconds; percentiles reported in milliseconds."""

    name: str
    samples: list[float]
    target_p50_ms: float | None = None
    cpu_ms: float | None = None  # CPU of the part measured, per sample, where the section reads it

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
