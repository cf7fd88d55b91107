"""The service's own access log: one JSON object per line for every call it answers, refusals included.

Who (the token's ``sub``, user name, client and roles, and the peer address), what (the action and
how many values), which project, when (UTC, RFC 3339), the HTTP status, and for a
re-identification the pseudonym and the stated reason. Never a key, a token, or a real value: the
log must not become a second copy of the identities it protects. Appended with one ``write`` per
record under a lock and flushed, so records are whole lines even with many threads.
"""

from __future__ import annotations

import datetime
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO


class AccessLog:
    def __init__(self, path: Path, clock: Callable[[], datetime.datetime] | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._handle: TextIO = os.fdopen(descriptor, "a", encoding="utf-8")
        self._lock = threading.Lock()
        self._clock = clock or (lambda: datetime.datetime.now(datetime.UTC))

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps({"time": self._clock().isoformat(timespec="milliseconds"), **record},
                          ensure_ascii=True, separators=(",", ":"), sort_keys=True)
        with self._lock:
            self._handle.write(line + "\n")
            self._handle.flush()

    def close(self) -> None:
        with self._lock:
            self._handle.close()
