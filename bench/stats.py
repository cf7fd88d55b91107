"""Latency samples and their percentiles, shared by the benchmark sections."""

from __future__ import annotations

import statistics
from dataclasses import dataclass


@dataclass
class Measure:
    """Samples in seconds; percentiles reported in milliseconds."""

    name: str
    samples: list[float]
    target_p50_ms: float | None = None

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
