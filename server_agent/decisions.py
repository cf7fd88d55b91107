"""Decision events: one record per authentication and authorization decision, hash-chained.

Records go through a bounded queue to a writer thread of their own (the relay's event loop never
waits on the disk), which appends them to a :class:`audit.chain.ChainWriter`: every record is
chained to the one before, and a checkpoint signed with the agent's HMAC key is written every
``checkpoint_interval`` seconds, idle or not. If the disk fails, :attr:`healthy` turns false and
the agent refuses new work (``on_failure = "refuse"``, the default) rather than act unlogged.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import queue
import secrets
import threading
from pathlib import Path
from typing import Any

from audit.chain import ChainWriter
from audit.dicom_audit import AUDITED, audit_message
from audit.syslog import SpooledSender

log = logging.getLogger("server_agent.decisions")

QUEUE_SIZE = 10_000  # events waiting for the disk; beyond it the writer is failing and we say so


def load_key(path: Path) -> bytes:
    """The checkpoint key; created (32 random bytes, mode 0600) on first use."""
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_bytes(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(key.hex())
        return key


class DecisionLog:
    def __init__(self, path: Path, key: bytes, *, max_bytes: int = 64 * 1024 * 1024,
                 checkpoint_interval: float = 60.0, audit: SpooledSender | None = None,
                 source_id: str = "server-agent") -> None:
        self.path = path
        self.audit = audit  # DICOM audit messages (PS3.15 A.5) by syslog, from the same events
        self.source_id = source_id
        self.failed: str | None = None
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(QUEUE_SIZE)
        self._writer = ChainWriter(path, key, max_bytes=max_bytes, checkpoint_interval=checkpoint_interval)
        self._interval = checkpoint_interval
        self._thread = threading.Thread(target=self._run, name="decision-log", daemon=True)
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

    def _run(self) -> None:
        while True:
            try:
                record = self._queue.get(timeout=self._interval)
            except queue.Empty:
                record = {}
            try:
                if record is None:
                    self._writer.close()
                    return
                if record:
                    self._writer.write(record)
                    if self.audit is not None and record.get("event") in AUDITED:
                        self.audit.submit(audit_message(record, self.source_id))
                else:
                    self._writer.checkpoint()  # idle: a signed checkpoint all the same
            except OSError as error:
                self.failed = f"cannot write {self.path}: {error}"
                log.error("DECISION LOG FAILING, refusing new work: %s", self.failed)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(10)
        if self.audit is not None:
            self.audit.close()
