"""Decision events: one JSON line per authentication and authorization decision.

Written by a thread of its own from a bounded queue, so the relay's event loop never waits on the
disk. (The decision-log issue adds the hash chain, rotation and checkpoints on top of this.)
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import queue
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger("server_agent.decisions")

QUEUE_SIZE = 10_000  # events waiting for the disk; beyond it the writer is failing and we say so


class DecisionLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(QUEUE_SIZE)
        self._thread = threading.Thread(target=self._writer, name="decision-log", daemon=True)
        self.failed: str | None = None
        self._thread.start()

    def write(self, event: str, **fields: Any) -> None:
        record = {"time": dt.datetime.now(dt.UTC).isoformat(timespec="microseconds"), "event": event, **fields}
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self.failed = "decision log queue full (disk too slow or failing)"
            log.error("%s: event dropped: %s", self.failed, event)

    @property
    def healthy(self) -> bool:
        return self.failed is None

    def _writer(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        with os.fdopen(fd, "a", buffering=1) as out:
            while True:
                record = self._queue.get()
                if record is None:
                    return
                try:
                    out.write(json.dumps(record, sort_keys=True, default=str) + "\n")
                except OSError as error:
                    self.failed = f"cannot write {self.path}: {error}"
                    log.error("DECISION LOG FAILING: %s", self.failed)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(5)
