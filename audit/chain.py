"""A hash-chained, checkpointed, rotating JSON-lines log (tamper evidence for the decision log).

Every record carries ``seq`` (one more than the record before, across rotated files) and ``prev``,
the SHA-256 of the previous record's line as written. Editing a record breaks the next ``prev``;
deleting one leaves a gap in ``seq``; swapping two breaks both. Each file starts with a
``file-start`` record naming its index and the hash of the last line of the file before, so a
removed rotated file is a gap in the indexes. Every ``checkpoint_interval`` seconds (and when the
writer closes, marked ``final``) a ``checkpoint`` record signs the chain head with HMAC-SHA256 under
a key only the agent holds: records after the last checkpoint are not yet signed, and a log whose
last checkpoint is old and not final has lost its tail.
"""

from __future__ import annotations

import calendar
import dataclasses
import hashlib
import hmac
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

GENESIS = "0" * 64
_ROTATED = re.compile(r"\.(\d{6})$")


def line_hash(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


def checkpoint_mac(key: bytes, record: dict[str, Any]) -> str:
    """HMAC-SHA256 over the checkpoint record as written, without its ``mac`` (RFC 2104)."""
    body = {k: v for k, v in record.items() if k != "mac"}
    return hmac.new(key, encode(body), hashlib.sha256).hexdigest()


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
    """Appends records to ``path``; not thread-safe (one writer thread owns it)."""

    def __init__(self, path: Path, key: bytes, *, max_bytes: int = 64 * 1024 * 1024,
                 checkpoint_interval: float = 60.0) -> None:
        self.path = path
        self.key = key
        self.max_bytes = max_bytes
        self.checkpoint_interval = checkpoint_interval
        path.parent.mkdir(parents=True, exist_ok=True)
        self.seq, self.head, self.file_index = self._resume()
        self._out = self._open()
        self._last_checkpoint = time.monotonic()
        if self._out.tell() == 0:
            self._file_start()

    def _resume(self) -> tuple[int, str, int]:
        files = log_files(self.path)
        index = len([f for f in files if f != self.path])
        for file in reversed(files):
            last = b""
            with file.open("rb") as handle:
                for line in handle:
                    if line.strip():
                        last = line.rstrip(b"\n")
            if last:
                try:
                    record = orjson.loads(last)
                    return int(record["seq"]), line_hash(last), index
                except (ValueError, KeyError, TypeError):
                    raise ValueError(f"{file} does not end with a chained log record: move it aside (it may be "
                                     "a log from before chaining, or damaged: check it with decision-log verify)"
                                     ) from None
        return 0, GENESIS, index

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
            record["mac"] = checkpoint_mac(self.key, record)
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


# ---- verification --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Damage:
    kind: str  # edited | deleted | reordered | truncated | file-missing | unreadable
    file: str
    line: int
    seq: int | None
    detail: str


@dataclass(slots=True)
class Report:
    records: int = 0
    files: int = 0
    checkpoints: int = 0
    unsigned_tail: int = 0
    last_checkpoint: str | None = None
    final: bool = False
    damage: Damage | None = None

    @property
    def ok(self) -> bool:
        return self.damage is None

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in dataclasses.asdict(self).items() if k != "damage"}
        out["ok"] = self.ok
        out["damage"] = dataclasses.asdict(self.damage) if self.damage else None
        return out


def iter_lines(path: Path) -> Iterator[tuple[Path, int, bytes]]:
    for file in log_files(path):
        with file.open("rb") as handle:
            for number, line in enumerate(handle, 1):
                yield file, number, line.rstrip(b"\n")


def verify(path: Path, key: bytes, *, stale_after: float | None = None, now: float | None = None,
           progress: Callable[[int, str], None] | None = None) -> Report:
    """Check the whole chain; the report names the first broken record and the kind of damage.

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
        try:
            present.add(int(orjson.loads(line)["seq"]))
        except (ValueError, KeyError, TypeError):
            continue
    expected_seq, expected_prev, expected_index = 1, GENESIS, 0
    before: tuple[str, int, int] = ("", 0, 0)  # file, line, seq of the record before
    for file, number, line in iter_lines(path):
        if not line.strip():
            continue
        if progress is not None and report.records % 10_000 == 0 and report.records:
            progress(report.records, " (pass 2 of 2)")
        try:
            record = orjson.loads(line)
            seq = int(record["seq"])
            prev = str(record["prev"])
        except (ValueError, KeyError, TypeError):
            report.damage = Damage("edited", str(file), number, None, "not a log record (unparsable)")
            return report
        report.records += 1

        here = (str(file), number, seq)
        if record.get("event") == "file-start":
            index = int(record.get("file_index", -1))
            if index != expected_index:
                return _damaged(report, "file-missing", here, f"file index {index} where {expected_index} was "
                                f"expected: {index - expected_index} rotated file(s) missing")
            expected_index += 1
        if seq != expected_seq:
            if seq > expected_seq and expected_seq not in present:
                return _damaged(report, "deleted", here, f"records seq {expected_seq} to {seq - 1} are missing")
            return _damaged(report, "reordered", here, f"seq {seq} stands where seq {expected_seq} should")
        if prev != expected_prev:
            return _damaged(report, "edited", before, "changed after it was written (the next record's hash "
                            "does not match)")
        if record.get("event") == "checkpoint":
            if record.get("head") != prev or not hmac.compare_digest(
                    str(record.get("mac", "")), checkpoint_mac(key, record)):
                return _damaged(report, "edited", here, "checkpoint signature does not match (wrong key or forged)")
            report.checkpoints += 1
            report.unsigned_tail = 0
            report.last_checkpoint = str(record.get("time"))
            report.final = bool(record.get("final"))
        else:
            report.unsigned_tail += 1
            report.final = False
        expected_seq, expected_prev = seq + 1, line_hash(line)
        before = here
    if stale_after is not None and not report.final and report.last_checkpoint:
        last = calendar.timegm(time.strptime(report.last_checkpoint, "%Y-%m-%dT%H:%M:%SZ"))
        if (now if now is not None else time.time()) - last > stale_after:
            report.damage = Damage("truncated", str(files[-1]), 0, expected_seq - 1,
                                   f"the log stops at seq {expected_seq - 1} with no closing checkpoint; "
                                   f"the last one was at {report.last_checkpoint}")
    return report


def _damaged(report: Report, kind: str, where: tuple[str, int, int], detail: str) -> Report:
    report.damage = Damage(kind, where[0], where[1], where[2], detail)
    return report
