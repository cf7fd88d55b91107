"""The benchmark's PNG chart: throughput rows as multiples of direct, latency rows in milliseconds."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: render to a file
import matplotlib.pyplot as plt


def draw(path: Path, ratios: list[tuple[str, float, float | None]], latencies: list[tuple[str, float, float]],
         title: str) -> Path:
    """``ratios``: (row, x direct, target or None); ``latencies``: (row, p50 ms, p99 ms)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(15, 6.5), gridspec_kw={"width_ratios": [1.15, 1]})
    names = [r[0] for r in ratios]
    values = [r[1] for r in ratios]
    colours = ["#b5472f" if (t is not None and v > t) else "#3b6ea8" for _, v, t in ratios]
    left.barh(names, values, color=colours)
    left.set_xscale("log")
    left.axvline(1.0, color="#555", linewidth=1)
    for n, (_, value, target) in enumerate(ratios):
        left.text(value * 1.05, n, f"{value:.2f}x" + (f" (target {target:g}x)" if target else ""), va="center",
                  fontsize=8)
        if target:
            left.plot([target, target], [n - 0.4, n + 0.4], color="#222", linewidth=2)
    left.invert_yaxis()
    left.set_xlabel("multiple of the row's baseline: direct, or the C tunnel (log scale; red: target missed)")
    left.tick_params(axis="y", labelsize=8)
    lat_names = [r[0] for r in latencies]
    ys = range(len(latencies))
    right.barh([y - 0.2 for y in ys], [r[1] for r in latencies], height=0.4, label="p50", color="#3b6ea8")
    right.barh([y + 0.2 for y in ys], [r[2] for r in latencies], height=0.4, label="p99", color="#9bb7d6")
    right.set_yticks(list(ys), lat_names, fontsize=8)
    right.invert_yaxis()
    right.set_xlabel("association set-up + C-ECHO + release (release not timed where a row says so), ms")
    right.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
