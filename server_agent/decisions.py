"""Decision events: one record per authentication and authorization decision, hash-chained.

The server agent hands each decision over as a frozen event of :mod:`audit.events`
(``write(event)``); the relay's event loop only appends ``(time, event)`` to a deque (no lock, no
encoding: a C-FIND whose thousand matches are post-filtered writes a thousand records). A writer thread of its
own drains the deque in batches (``LINGER`` apart at most), encodes and chains each record and appends the batch to a
:class:`audit.chain.ChainWriter` in one write: every record is chained to the one before, and a
checkpoint signed with the agent's Ed25519 private key (:func:`load_key`) is written every
``checkpoint_interval`` seconds, idle or not. If the disk fails, :attr:`healthy` turns false and the
agent refuses new work (``on_failure = "refuse"``, the default) rather than act unlogged; while the
writer is behind by more than ``BACKLOG_HIGH`` records it is unhealthy too, until it catches up.

A log whose live file ends in a torn line (the agent was killed in the middle of a write) is sealed
when the log opens (``audit/chain.py``) and the agent starts; the seal goes to the audit repository
too, as a Security Alert (Audit Recording Stopped, PS3.15 A.5.3.11).

``write(kind, **fields)``, the call of earlier versions, still writes its fields as they are (and
audits them read back through :func:`audit.stored.from_record`) until the last call site is gone.
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import os
import threading
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit.chain import ChainWriter
from audit.dicom_audit import audit_message
from audit.events import DecisionEvent
from audit.signing import Ed25519Signer, KeyFileError, Signer, is_hmac_key, public_key_path, read_private_key
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


def load_key(path: Path) -> Ed25519Signer:
    """The checkpoint signing key (``[decision_log] key_file``): an Ed25519 private key (RFC 8032) in
    PEM, mode 0600, created on first start with its public key next to it (``PATH.pub``, mode 0644:
    what ``decision-log verify --public-key`` needs, and all it needs).

    The HMAC key of a version before 2026-12 found there is moved to ``PATH.hmac`` (kept: the log's
    earlier checkpoints verify with it, ``--key-file``) and a new Ed25519 key takes its place; the log
    goes on in the same chain. A private key that others may read is refused: whoever reads it can
    sign a forged log.
    """
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return _create_key(path)
    with path.open("rb") as handle:
        head = handle.read(4096)
    if is_hmac_key(head):
        _retire_hmac_key(path)
        return _create_key(path)
    if mode & 0o077:
        raise KeyFileError(f"{path}: the decision log's private key is open to other users (mode "
                           f"{mode & 0o777:04o}): anyone who reads it can sign a forged log; chmod 600 {path}")
    signer = read_private_key(path)
    _write_public_key(path, signer)
    return signer


def _create_key(path: Path) -> Ed25519Signer:
    path.parent.mkdir(parents=True, exist_ok=True)
    signer = Ed25519Signer.of(Ed25519PrivateKey.generate())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(signer.private_pem())
    _write_public_key(path, signer)
    log.info("decision log signing key created: %s (public key %s, key id %s)", path, public_key_path(path),
             signer.key_id)
    return signer


def _write_public_key(path: Path, signer: Ed25519Signer) -> None:
    """Write ``PATH.pub`` (0644 whatever the umask: it is public) unless it already holds this key."""
    public, pem = public_key_path(path), signer.public_pem()
    try:
        if public.read_bytes() == pem:
            return
        log.warning("%s did not hold the public key of %s: rewritten (key id %s)", public, path, signer.key_id)
    except FileNotFoundError:
        pass
    staging = public.with_name(public.name + ".tmp")
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
        os.fchmod(out.fileno(), 0o644)
    os.replace(staging, public)


def _retire_hmac_key(path: Path) -> None:
    """Move an old HMAC key aside (never over another file): the checkpoints it signed need it."""
    kept = path.with_name(path.name + ".hmac")
    try:
        os.link(path, kept)
    except FileExistsError:
        raise KeyFileError(f"{path} holds an HMAC key and {kept} exists already: keep the one the log's HMAC "
                           f"checkpoints verify with as {kept} and remove {path}") from None
    os.unlink(path)
    log.warning("decision log checkpoints are now signed with Ed25519: the HMAC key of the earlier checkpoints "
                "was moved to %s; verify with decision-log verify --public-key %s --key-file %s", kept,
                public_key_path(path), kept)


# A restart overlaps the old process while it lets live associations finish (10 s) and writes its closing
# record: the new one waits this long for the log before refusing to start (issue 15 item 2).
HANDOVER_WAIT = 20.0


class DecisionLogBusy(OSError):
    """Another process writes this decision log: two writers would interleave two chains (and ``verify``
    would call the log tampered with)."""


class WriterLock:
    """One writer per decision log: an exclusive ``flock`` on ``LOG.lock``, held while the log is open,
    with the holder's PID in it for the message. The kernel drops it when the holder dies (kill -9)."""

    def __init__(self, log: Path, wait: float = HANDOVER_WAIT) -> None:
        import fcntl

        self.path = log.with_name(log.name + ".lock")
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(self._fd, 32, 0).decode("ascii", "replace").strip() or "?"
                    os.close(self._fd)
                    raise DecisionLogBusy(f"decision log {log} is written by another process (PID {holder}, "
                                          f"lock {self.path}); waited {wait:g} s for it to finish") from None
                time.sleep(0.05)
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the only descriptor releases the flock
            self._fd = -1


class DecisionLog:
    """The chained, checkpointed decision log, written by a thread of its own, by one process at a time
    (:class:`WriterLock`: a restart waits for the old process's closing record, then continues its chain)."""

    def __init__(self, path: Path, key: Signer | bytes, *, max_bytes: int = 64 * 1024 * 1024,
                 checkpoint_interval: float = 60.0, audit: SpooledSender | None = None,
                 source_id: str = "server-agent", handover_wait: float = HANDOVER_WAIT) -> None:
        self.path = path
        self._lock = WriterLock(path, handover_wait)  # before the chain's tail is read
        self.audit = audit  # DICOM audit messages (PS3.15 A.5) by syslog, from the same events
        self.source_id = source_id
        self.failed: str | None = None
        self.dropped = 0
        self._pending: collections.deque[tuple[float, DecisionEvent]] = collections.deque()
        self._wake = threading.Event()
        self._closing = False
        try:
            self._writer = ChainWriter(path, key, max_bytes=max_bytes, checkpoint_interval=checkpoint_interval)
        except BaseException:
            self._lock.release()
            raise
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
        if not self._thread.is_alive():  # its closing record is written: the next process may continue
            self._lock.release()
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
