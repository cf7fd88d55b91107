"""A hash-chained, checkpointed, rotating JSON-lines log (tamper evidence for the decision log).

Every record carries ``seq`` (one more than the record before, across rotated files) and ``prev``,
the SHA-256 of the previous record's line as written. Editing a record breaks the next ``prev``;
deleting one leaves a gap in ``seq``; swapping two breaks both. Each file starts with a
``file-start`` record naming its index and the hash of the last line of the file before, so a
removed rotated file is a gap in the indexes. Every ``checkpoint_interval`` seconds (and when the
writer closes, marked ``final``) a ``checkpoint`` record signs the chain head with the agent's
Ed25519 private key (:mod:`audit.signing`; HMAC-SHA256 in logs of earlier versions): records after
the last checkpoint are not yet signed, and a log whose last checkpoint is old and not final has
lost its tail. ``verify`` needs only the public key; a log that switched from HMAC to Ed25519 at an
upgrade verifies across the switch with both keys, and with the public key alone once an Ed25519
checkpoint covers the HMAC-signed part (it signs the head of a chain that includes it).

A torn tail: a crash (kill -9, power loss, a full disk) in the middle of a write leaves the live
file ending in part of a line, with no newline and no record in it. ``verify`` reports that as
``truncated`` (not ``edited``: nothing was changed, the rest of that write is lost). The writer,
when it starts on such a file, seals it rather than refusing to start: it keeps the torn bytes as
they are (they are evidence), ends their line, and chains a ``log-truncated`` record right after
them with their length and SHA-256, then carries on. ``verify`` accepts a torn line followed by the
seal that describes it, and lists it in :attr:`Report.sealed`; an unreadable line anywhere else, or
a seal that does not match the line before it, is ``edited``. Only the last line of the live file is
ever sealed: a damaged line in the middle of the log stops the writer as before.
"""

from __future__ import annotations

import calendar
import dataclasses
import datetime as dt
import hashlib
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from . import signing
from .events import Kind, LogTruncated
from .signing import HmacSigner, Keys, Signer

log = logging.getLogger("audit.chain")

GENESIS = "0" * 64
_ROTATED = re.compile(r"\.(\d{6})$")
BLOCK = 65536  # read backwards from a file's end in blocks this size (start-up reads no more than it needs)
MAX_LINE = 1 << 20  # a last line longer than this is no record this writer wrote: torn, without parsing it


def line_hash(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


def signed_body(record: dict[str, Any]) -> bytes:
    """What a checkpoint's signature covers: the record as written, without its signature."""
    return encode({k: v for k, v in record.items() if k not in signing.SIGNATURE_FIELDS})


def encode(record: dict[str, Any]) -> bytes:
    """Compact JSON, keys sorted (so a checkpoint's MAC can be recomputed from its parsed record),
    UTF-8 (RFC 8259 section 8.1); what json.dumps(sort_keys=True, separators=(",", ":")) writes for
    ASCII content, ten times faster."""
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS, default=str)


def log_files(path: Path) -> list[Path]:
    """The rotated files (``NAME.000001`` ...) in order, then the live file."""
    rotated = sorted((p for p in path.parent.glob(path.name + ".*") if _ROTATED.search(p.name)),
                     key=lambda p: int(_ROTATED.search(p.name).group(1)))  # type: ignore[union-attr]
    return [*rotated, *([path] if path.exists() else [])]


class ChainWriter:
    """Appends records to ``path``; not thread-safe (one writer thread owns it).

    ``key`` signs the checkpoints: the agent's :class:`audit.signing.Ed25519Signer`; raw bytes are an
    HMAC key, as versions before 2026-12 signed (tests write such logs with it)."""

    def __init__(self, path: Path, key: Signer | bytes, *, max_bytes: int = 64 * 1024 * 1024,
                 checkpoint_interval: float = 60.0) -> None:
        self.path = path
        self.signer: Signer = HmacSigner(key) if isinstance(key, bytes) else key
        self.max_bytes = max_bytes
        self.checkpoint_interval = checkpoint_interval
        self.sealed: LogTruncated | None = None  # the torn tail this writer found and sealed when it started
        path.parent.mkdir(parents=True, exist_ok=True)
        ending = self._resume()
        self.seq, self.head, self.file_index = ending.seq, ending.head, ending.index
        self._out = self._open()
        self._last_checkpoint = time.monotonic()
        if ending.torn is not None:
            self._seal(*ending.torn)
        elif ending.unterminated:  # the crash came between a record and its newline: nothing was torn
            self._write_all(b"\n")
        if not ending.live_records:
            self._file_start()
        if ending.seq == 0:
            # A new log is signed from its first line, so that a log with no checkpoint at all is never
            # ours (verify warns: a chain without one anyone can rebuild). Never at a restart: that would
            # sign records this process did not write.
            self.checkpoint()

    def _resume(self) -> _Ending:
        """Where the chain stands: the last record of the newest file that holds one, and the state of
        the live file's end (a torn last line to seal, or a whole record missing only its newline)."""
        files = log_files(self.path)
        ending = _Ending(index=len([f for f in files if f != self.path]))
        for file in reversed(files):
            with file.open("rb") as handle:
                end = handle.seek(0, os.SEEK_END)
                cut = _after_last_newline(handle, end)
                last = _read(handle, cut, end) if 0 < end - cut <= MAX_LINE else b""
                if cut < end and _record(last) is None:
                    if file != self.path:  # only the live file is ever written to: this is damage
                        raise ValueError(f"{file} ends in part of a line: check it with decision-log verify")
                    ending.torn = (end - cut, _sha256(handle, cut, end))
                    last = b""
                elif cut < end:
                    ending.unterminated = file == self.path
                while not last.strip() and cut > 0:  # the last whole line; blank ones were always skipped
                    start = _after_last_newline(handle, cut - 1)
                    if cut - 1 - start > MAX_LINE:
                        raise ValueError(f"{file} ends in a line of {cut - 1 - start} bytes, not a log record: "
                                         "check it with decision-log verify")
                    last, cut = _read(handle, start, cut - 1), start
            record = _record(last)
            if record is not None:
                ending.seq, ending.head = record[0], line_hash(last)
                ending.live_records = ending.live_records or file == self.path
                return ending
            if last.strip():
                raise ValueError(f"{file} does not end with a chained log record: move it aside (it may be "
                                 "a log from before chaining, or damaged: check it with decision-log verify)")
        return ending

    def _seal(self, size: int, digest: str) -> None:
        """End the torn line (its bytes stay as they are) and chain a record that says so, in one write."""
        event = LogTruncated(torn_bytes=size, torn_sha256=digest,
                             detail="the writer stopped in the middle of a write (crash, kill -9 or power loss); "
                                    "the torn bytes are the line before this record; the rest of that write is lost")
        stamp = dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")
        self._write_all(b"\n" + self._chain({"time": stamp, **event.record()}))
        os.fsync(self._out.fileno())
        self.sealed = event
        log.warning("decision log %s ended in a torn line (%d bytes, sha256 %s) left by a crash: kept and sealed "
                    "with record seq %d; decision-log verify reports it", self.path, size, digest, self.seq)

    def _open(self) -> Any:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        return os.fdopen(fd, "ab", buffering=0)

    def _file_start(self) -> None:
        self._append({"event": "file-start", "file_index": self.file_index})

    def _chain(self, record: dict[str, Any]) -> bytes:
        """The record's line (with ``seq`` and ``prev``), and the chain head moved past it."""
        self.seq += 1
        record = {**record, "seq": self.seq, "prev": self.head}
        if record.get("event") == "checkpoint":
            record.update(self.signer.header)
            name, signature = self.signer.sign(signed_body(record))
            record[name] = signature
        line = encode(record)
        self.head = line_hash(line)
        return line + b"\n"

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:  # an unbuffered write may be partial
            view = view[self._out.write(view):]

    def _append(self, record: dict[str, Any]) -> None:
        self._write_all(self._chain(record))

    def write(self, record: dict[str, Any]) -> None:
        self.write_many([record])

    def write_many(self, records: list[dict[str, Any]]) -> None:
        """Chain ``records`` and append them in one write (a batch never straddles a rotation)."""
        self._write_all(b"".join([self._chain(record) for record in records]))
        if time.monotonic() - self._last_checkpoint >= self.checkpoint_interval:
            self.checkpoint()
        if self._out.tell() >= self.max_bytes:
            self.rotate()

    def checkpoint(self, *, final: bool = False) -> None:
        self._append({"event": "checkpoint", "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                      "head": self.head, "final": final})
        self._last_checkpoint = time.monotonic()
        os.fsync(self._out.fileno())

    def rotate(self) -> None:
        self.checkpoint()
        self._out.close()
        self.file_index += 1
        os.rename(self.path, self.path.with_name(f"{self.path.name}.{self.file_index:06d}"))
        self._out = self._open()
        self._file_start()

    def close(self) -> None:
        self.checkpoint(final=True)
        self._out.close()


@dataclass(slots=True, kw_only=True)
class _Ending:
    """How the log ends, as :meth:`ChainWriter._resume` found it."""

    index: int  # the live file's index (one more than the rotated files)
    seq: int = 0
    head: str = GENESIS
    torn: tuple[int, str] | None = None  # length and SHA-256 of a torn last line of the live file
    unterminated: bool = False  # the live file's last record lacks only its newline
    live_records: bool = False  # the live file holds a record (else it still needs its file-start)


def _after_last_newline(handle: IO[bytes], end: int) -> int:
    """The offset just past the last newline before ``end`` (0 if there is none), read backwards."""
    while end > 0:
        start = max(0, end - BLOCK)
        handle.seek(start)
        at = handle.read(end - start).rfind(b"\n")
        if at >= 0:
            return start + at + 1
        end = start
    return 0


def _read(handle: IO[bytes], start: int, end: int) -> bytes:
    handle.seek(start)
    return handle.read(end - start)


def _sha256(handle: IO[bytes], start: int, end: int) -> str:
    digest = hashlib.sha256()
    handle.seek(start)
    while start < end:
        chunk = handle.read(min(BLOCK, end - start))
        if not chunk:
            break
        digest.update(chunk)
        start += len(chunk)
    return digest.hexdigest()


def _record(line: bytes) -> tuple[int, str] | None:
    """``(seq, prev)`` of a chained record's line, or None for anything else."""
    try:
        record = orjson.loads(line)
        return int(record["seq"]), str(record["prev"])
    except (ValueError, KeyError, TypeError):
        return None


# ---- verification --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Damage:
    # edited | deleted | reordered | truncated | file-missing | unverifiable (signed with a key of a kind not given)
    kind: str
    file: str
    line: int
    seq: int | None
    detail: str


@dataclass(frozen=True, slots=True)
class Sealed:
    """A torn line the writer found when it started, kept, and sealed with a ``log-truncated`` record."""

    file: str
    line: int  # the torn line
    seq: int  # the log-truncated record right after it
    torn_bytes: int


@dataclass(slots=True)
class Report:
    records: int = 0
    files: int = 0
    checkpoints: int = 0
    unsigned_tail: int = 0
    last_checkpoint: str | None = None
    final: bool = False
    signature: str = ""  # how the last checkpoint checked was signed: "Ed25519" or "HMAC-SHA256"
    key_id: str = ""  # ... and by which Ed25519 key
    hmac_checkpoints: int = 0  # of ``checkpoints``, those signed with an HMAC key (logs of earlier versions)
    unchecked: int = 0  # HMAC checkpoints not checked (no HMAC key given), each covered by a later Ed25519 one
    damage: Damage | None = None
    sealed: list[Sealed] = field(default_factory=list)  # crashes in the middle of a write, each sealed

    @property
    def ok(self) -> bool:
        """The chain holds (sealed torn lines included: they are reported in :attr:`sealed`)."""
        return self.damage is None

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in dataclasses.asdict(self).items() if k != "damage"}
        out["ok"] = self.ok
        out["damage"] = dataclasses.asdict(self.damage) if self.damage else None
        return out


def iter_lines(path: Path) -> Iterator[tuple[Path, int, bytes]]:
    for file, number, line, _ in _lines(path):
        yield file, number, line


def _lines(path: Path) -> Iterator[tuple[Path, int, bytes, bool]]:
    """Each line of each file, without its newline, and whether it had one."""
    for file in log_files(path):
        with file.open("rb") as handle:
            for number, line in enumerate(handle, 1):
                terminated = line.endswith(b"\n")
                yield file, number, line[:-1] if terminated else line, terminated


def verify(path: Path, key: Keys | bytes | Ed25519PublicKey, *, stale_after: float | None = None,
           now: float | None = None, progress: Callable[[int, str], None] | None = None) -> Report:
    """Check the whole chain; the report names the first broken record and the kind of damage.

    ``key``: the agent's public key, an HMAC key (bytes: logs of earlier versions), or both (:class:`Keys`).

    ``stale_after``: a log whose last checkpoint is older than this many seconds and not final has
    lost its tail (the writer checkpoints every interval, even when idle). ``progress(lines, pass)``
    is called every 10,000 lines of each of the two passes.
    """
    report = Report()
    files = log_files(path)
    report.files = len(files)
    if not files:
        return report
    # First pass: which sequence numbers exist at all (tells a deletion from a reordering).
    present: set[int] = set()
    for count, (_, _, line) in enumerate(iter_lines(path), 1):
        if progress is not None and count % 10_000 == 0:
            progress(count, " (pass 1 of 2)")
        record = _record(line)
        if record is not None:
            present.add(record[0])
    checker = _Checker(Keys.of(key), report, present, live=files[-1])
    for count, (file, number, line, terminated) in enumerate(_lines(path), 1):
        if progress is not None and count % 10_000 == 0:
            progress(count, " (pass 2 of 2)")
        if not checker.line(str(file), number, line, terminated):
            return report
    if not checker.end():
        return report
    if stale_after is not None and not report.final and report.last_checkpoint:
        last = calendar.timegm(time.strptime(report.last_checkpoint, "%Y-%m-%dT%H:%M:%SZ"))
        if (now if now is not None else time.time()) - last > stale_after:
            report.damage = Damage("truncated", str(files[-1]), 0, checker.expected_seq - 1,
                                   f"the log stops at seq {checker.expected_seq - 1} with no closing checkpoint; "
                                   f"the last one was at {report.last_checkpoint}")
    return report


class _Checker:
    """The second pass of :func:`verify`: each line against the chain before it."""

    def __init__(self, keys: Keys, report: Report, present: set[int], live: Path) -> None:
        self.keys, self.report, self.present, self.live = keys, report, present, str(live)
        self.ed25519_seen = False  # once the agent signs with Ed25519 it never goes back to HMAC
        self.unchecked_since: tuple[str, int, int] | None = None  # an HMAC checkpoint no Ed25519 one covers yet
        self.expected_seq, self.expected_prev, self.expected_index = 1, GENESIS, 0
        self.before: tuple[str, int, int | None] = ("", 0, 0)  # file, line, seq of the record before
        self.previous: tuple[str, int, bytes] = ("", 0, b"")  # the line just read, whatever it held
        # An unreadable line (file, line, whether it ended): only the seal that describes it may follow.
        self.torn: tuple[str, int, bool] | None = None

    def line(self, file: str, number: int, line: bytes, terminated: bool) -> bool:
        """Check one line; False once the report names damage."""
        previous, self.previous = self.previous, (file, number, line)
        try:
            record = orjson.loads(line)
            seq, prev = int(record["seq"]), str(record["prev"])
        except (ValueError, KeyError, TypeError):
            record = None
        if self.torn is not None:
            torn, self.torn = self.torn, None
            if record is None or record.get("event") != Kind.LOG_TRUNCATED or not _describes(record, previous, file):
                return self._damaged("edited", (torn[0], torn[1], None), "not a log record (unparsable)")
        if record is None:
            if line.strip():  # (blank lines were always passed over)
                self.torn = (file, number, terminated)
            return True
        here = (file, number, seq)
        if record.get("event") == Kind.LOG_TRUNCATED:
            if not _describes(record, previous, file):
                return self._damaged("edited", here, "a log-truncated record whose torn line is not the line before it")
            self.report.sealed.append(Sealed(file, previous[1], seq, int(record["torn_bytes"])))
        return self._chained(record, here, seq, prev, line)

    def _chained(self, record: dict[str, Any], here: tuple[str, int, int], seq: int, prev: str, line: bytes) -> bool:
        report = self.report
        report.records += 1
        if record.get("event") == "file-start":
            index = int(record.get("file_index", -1))
            if index != self.expected_index:
                return self._damaged("file-missing", here, f"file index {index} where {self.expected_index} was "
                                     f"expected: {index - self.expected_index} rotated file(s) missing")
            self.expected_index += 1
        if seq != self.expected_seq:
            if seq > self.expected_seq and self.expected_seq not in self.present:
                return self._damaged("deleted", here, f"records seq {self.expected_seq} to {seq - 1} are missing")
            return self._damaged("reordered", here, f"seq {seq} stands where seq {self.expected_seq} should")
        if prev != self.expected_prev:
            return self._damaged("edited", self.before, "changed after it was written (the next record's hash "
                                 "does not match)")
        if record.get("event") != "checkpoint" or not self._checkpoint(record, here, prev):
            if self.report.damage is not None:
                return False
            report.unsigned_tail += 1
            report.final = False
        self.expected_seq, self.expected_prev = seq + 1, line_hash(line)
        self.before = here
        return True

    def _checkpoint(self, record: dict[str, Any], here: tuple[str, int, int], prev: str) -> bool:
        """Check a checkpoint's signature: True when it signs the chain so far, False when it was not
        checked (an HMAC one without the HMAC key) or is damage (then the report names it)."""
        if record.get("head") != prev:
            return self._damaged("edited", here, "checkpoint head is not the hash of the record before it")
        verdict = signing.check(record, signed_body(record), self.keys)
        if verdict.algorithm == signing.HMAC_SHA256 and self.ed25519_seen:
            return self._damaged("edited", here, "an HMAC-signed checkpoint after Ed25519-signed ones: the agent "
                                 "never goes back to HMAC (forged by someone holding the old key)")
        if verdict.problem:
            return self._damaged("unverifiable" if verdict.unverifiable else "edited", here, verdict.problem)
        report = self.report
        if not verdict.checked:
            report.unchecked += 1
            self.unchecked_since = self.unchecked_since or here
            return False
        if verdict.algorithm == signing.ED25519:
            self.ed25519_seen = True
            self.unchecked_since = None  # its signature covers the whole chain before it
        report.checkpoints += 1
        report.hmac_checkpoints += verdict.algorithm == signing.HMAC_SHA256
        report.unsigned_tail = 0
        report.last_checkpoint = str(record.get("time"))
        report.final = record.get("final") is True
        report.signature, report.key_id = verdict.algorithm, verdict.key_id
        return True

    def end(self) -> bool:
        """After the last line: an unreadable line nothing sealed is a torn tail if it is the live file's
        last line and has no newline (a write cut short), and damage anywhere else. HMAC checkpoints
        left unchecked and covered by no Ed25519 one prove nothing: the log is not shown to hold."""
        if self.torn is None:
            if self.unchecked_since is None:
                return True
            return self._damaged("unverifiable", self.unchecked_since,
                                 "checkpoints from here on are signed with HMAC-SHA256 (a version before 2026-12) "
                                 "and no Ed25519 checkpoint follows: verify with the old key too (--key-file)")
        file, number, terminated = self.torn
        if file == self.live and not terminated:
            return self._damaged("truncated", (file, number, self.expected_seq - 1),
                                 f"the last line ({len(self.previous[2])} bytes) was cut off in the middle of a write "
                                 "(a crash, kill -9 or power loss) and is not a record: the rest of that write is "
                                 "lost; the server agent seals it when it next starts")
        return self._damaged("edited", (file, number, None), "not a log record (unparsable)")

    def _damaged(self, kind: str, where: tuple[str, int, int | None], detail: str) -> bool:
        self.report.damage = Damage(kind, where[0], where[1], where[2], detail)
        return False


def _describes(seal: dict[str, Any], previous: tuple[str, int, bytes], file: str) -> bool:
    """Whether a ``log-truncated`` record describes the line right before it, in the same file."""
    torn = previous[2]
    return (previous[0] == file and previous[1] > 0 and seal.get("torn_bytes") == len(torn)
            and seal.get("torn_sha256") == hashlib.sha256(torn).hexdigest())
