"""Progress of long operations on stderr, for a person at a terminal (silent in pipes and scripts)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """``update(n)`` at most twice a second: ``label: n records ...`` on one rewritten line."""

    def __init__(self, label: str, enabled: bool | None = None, stream: TextIO | None = None) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.count = 0
        self._shown = 0.0
        self._started = time.monotonic()

    def update(self, count: int, detail: str = "") -> None:
        self.count = count
        now = time.monotonic()
        if self.enabled and now - self._shown >= 0.5:
            self._shown = now
            rate = count / max(now - self._started, 1e-9)
            print(f"\r{self.label}: {count:,} records{detail} ({rate:,.0f}/s) ...", end="", file=self.stream,
                  flush=True)

    def done(self, summary: str | None = None) -> None:
        if self.enabled:
            elapsed = time.monotonic() - self._started
            print(f"\r{self.label}: {summary or f'{self.count:,} records'} in {elapsed:.1f} s" + " " * 20,
                  file=self.stream, flush=True)
