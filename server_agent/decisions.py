"""Decision events: one record per authentication and authorization decision, hash-chained.

The server agent hands each decision over as a frozen event of :mod:`audit.events`
(``write(event)``); the relay's event loop only appends ``(time, event)`` to a deque (no lock, no
encoding: a C-FIND whose thousand matches are post-filtered writes a thousand records). A writer thread of its
own drains the deque in batches (``LINGER`` apart at most), encodes and chains each record and appends the batch to a
:class:`audit.chain.ChainWriter` in one write: every record is chained to the one before, and a
checkpoint signed with the agent's HMAC key is written every ``checkpoint_interval`` seconds, idle
or not. If the disk fails, :attr:`healthy` turns false and the agent refuses new work
(``on_failure = "refuse"``, the default) rather than act unlogged; while the writer is behind by
more than ``BACKLOG_HIGH`` records it is unhealthy too, until it catches up.

A log whose live file ends in a torn line (the agent was killed in the middle of a write) is sealed
when the log opens (``audit/chain.py``) and the agent starts; the seal goes to the audit repository
too, as a Security Alert (Audit Recording Stopped, PS3.15 A.5.3.11).

``write(kind, **fields)``, the call of earlier versions, still writes its fields as they are (and
audits them read back through :func:`audit.events.from_record`) until the last call site is gone.
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import os
import secrets
import threading
import time
from pathlib import Path

from audit.chain import ChainWriter
from audit.dicom_audit import audit_message
from audit.events import DecisionEvent
from audit.syslog import SpooledSender

log = logging.getLogger("server_agent.decisions")

BACKLOG_HIGH = 20_000  # records waiting for the disk: above it, new work waits for the writer to catch up
BACKLOG_LIMIT = 200_000  # beyond it records would be lost: the log has failed, loudly (bounded memory)
YIELD_EVERY = 64  # records encoded between two releases of the GIL, so the event loop never waits long
# Woken by a record, the writer lets the next ones gather this long before it writes: one wake-up,
# one GIL hand-over and one write per batch instead of per record (which cost the event loop ~50 us
# a record on 2 busy cores). A record reaches the disk within this much time.
LINGER = 0.01



def _stamp(when: float) -> str:
    return dt.datetime.fromtimestamp(when, dt.UTC).isoformat(timespec="microseconds")


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
    """The chained, checkpointed decision log, written by a thread of its own."""

    def __init__(self, path: Path, key: bytes, *, max_bytes: int = 64 * 1024 * 1024,
                 checkpoint_interval: float = 60.0, audit: SpooledSender | None = None,
                 source_id: str = "server-agent") -> None:
        self.path = path
        self.audit = audit  # DICOM audit messages (PS3.15 A.5) by syslog, from the same events
        self.source_id = source_id
        self.failed: str | None = None
        self.dropped = 0
        self._pending: collections.deque[tuple[float, DecisionEvent]] = collections.deque()
        self._wake = threading.Event()
        self._closing = False
        self._writer = ChainWriter(path, key, max_bytes=max_bytes, checkpoint_interval=checkpoint_interval)
        if self._writer.sealed is not None and audit is not None:  # a crash cut the last write short
            audit.submit(audit_message(self._writer.sealed, source_id, time=_stamp(time.time()), log_file=str(path)))
        self._interval = checkpoint_interval
        self._thread = threading.Thread(target=self._run, name="decision-log", daemon=True)
        self._thread.start()

    def write(self, event: DecisionEvent, /) -> None:
        """Record one event (called on the event loop: an append, and a wake-up when the writer sleeps)."""
        if len(self._pending) >= BACKLOG_LIMIT:
            self.dropped += 1
            if self.failed is None:
                self.failed = f"decision log {BACKLOG_LIMIT} records behind (disk too slow or failing): records lost"
                log.error("DECISION LOG FAILING, refusing new work: %s", self.failed)
            return
        self._pending.append((time.time(), event))
        if not self._wake.is_set():
            self._wake.set()

    @property
    def healthy(self) -> bool:
        return self.failed is None and len(self._pending) < BACKLOG_HIGH

    @property
    def problem(self) -> str | None:
        """Why the log is not healthy, for the refusals it causes."""
        if self.failed is not None:
            return self.failed
        if len(self._pending) >= BACKLOG_HIGH:
            return f"decision log writer {len(self._pending)} records behind"
        return None

    def _run(self) -> None:
        while True:
            woken = self._wake.wait(self._interval)
            if woken and not self._closing:
                time.sleep(LINGER)
            self._wake.clear()
            try:
                if self._pending:
                    self._drain()
                elif not woken:
                    self._writer.checkpoint()  # idle: a signed checkpoint all the same
                if self._closing and not self._pending:
                    self._writer.close()
                    return
            except OSError as error:
                if self.failed is None:  # said once, loudly; not again for every batch after it
                    log.error("DECISION LOG FAILING, refusing new work: cannot write %s: %s", self.path, error)
                self.failed = f"cannot write {self.path}: {error}"
                if self._closing:
                    return

    def _drain(self) -> None:
        records = []
        audited: list[tuple[DecisionEvent, str]] = []
        pending = self._pending
        while pending:
            stamp, event = pending.popleft()  # atomic against the event loop's append
            when = _stamp(stamp)
            records.append({"time": when, **event.record()})
            if self.audit is not None:
                audited.append((event, when))
            if len(records) % YIELD_EVERY == 0:
                time.sleep(0)  # let the event loop take the GIL between chunks of encoding
        self._writer.write_many(records)
        if self.audit is not None:
            for event, when in audited:
                self.audit.submit(audit_message(event, self.source_id, time=when))

    def close(self) -> None:
        self._closing = True
        self._wake.set()
        self._thread.join(10)
        if self.audit is not None:
            self.audit.close()


class UnloggedDecisions:
    """``[decision_log] enabled = false``: nothing is recorded. Exists to measure what logging costs
    (issue 6: <= 5% of the C-FIND benchmark); the agent says so loudly at start."""

    path = None
    failed: str | None = None
    problem: str | None = None
    healthy = True

    def write(self, event: DecisionEvent, /) -> None:
        pass

    def close(self) -> None:
        pass


Decisions = DecisionLog | UnloggedDecisions
