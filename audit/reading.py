"""Reading a decision log for review: every record, the last few, and what is appended from now on.

Nothing here checks the chain (``decision-log verify`` does, :mod:`audit.chain`): an unreadable line
is passed over. Each reader bounds what it holds: a line longer than :data:`MAX_LINE` is skipped
(it is no record the agent wrote; ``verify`` names it), so a hostile file cannot fill memory.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from .chain import MAX_LINE, iter_lines, log_files
from .stored import Stored, read


def parsed(raw: bytes) -> dict[str, Any] | None:
    """A line as a JSON object, or None."""
    if len(raw) > MAX_LINE or not raw.strip():
        return None
    try:
        record = orjson.loads(raw)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def records(path: Path) -> Iterator[dict[str, Any]]:
    """Every readable record of the log, rotated files first (an unreadable line is verify's business)."""
    for _, _, line in iter_lines(path):
        record = parsed(line)
        if record is not None:
            yield record


def events(path: Path) -> Iterator[Stored]:
    for record in records(path):
        stored = read(record)
        if stored is not None:
            yield stored


def last_lines(log: Path, count: int, block: int = 65536) -> list[bytes]:
    """The last ``count`` complete, non-empty lines of the log, read backwards from the end of the
    newest file (and of older rotated files when it has fewer): no re-reading of months of records."""
    found: list[bytes] = []
    for file in reversed(log_files(log)):
        with file.open("rb") as handle:
            end = handle.seek(0, os.SEEK_END)
            data = b""
            while end > 0 and data.count(b"\n") <= count - len(found):
                start = max(0, end - block)
                handle.seek(start)
                data = handle.read(end - start) + data
                end = start
        lines = [raw for raw in data.split(b"\n") if raw.strip()]
        if end > 0:
            lines = lines[1:]  # the first may be the cut end of a longer line
        found = lines[-(count - len(found)):] + found if count > len(found) else found
        if len(found) >= count:
            break
    return found[-count:] if count else []


def follow(log: Path, poll: float = 0.5) -> Iterator[bytes]:
    """Lines appended to the live file from now on, across rotations (as ``tail -F``): reads only what
    is new, never the whole log again."""
    handle = log.open("rb")
    handle.seek(0, os.SEEK_END)
    return _follow(handle, log, poll)


def _follow(handle: BinaryIO, log: Path, poll: float) -> Iterator[bytes]:
    """The lines of ``handle`` from where it stands, then of each file that takes the live file's name.
    A line still being written waits for its newline; one longer than :data:`MAX_LINE` is dropped."""
    inode = os.fstat(handle.fileno()).st_ino
    partial = b""
    try:
        while True:
            chunk = handle.read(MAX_LINE)
            if chunk:
                partial += chunk
                *complete, partial = partial.split(b"\n")
                if len(partial) > MAX_LINE:
                    partial = b""  # no record: skip it (verify reports it), do not grow without end
                yield from (raw for raw in complete if raw.strip())
                continue
            try:
                renamed = os.stat(log).st_ino != inode
            except FileNotFoundError:
                renamed = False  # between the rename and the new file: wait for it
            if renamed:  # rotated: finish the old file, any rotated since, then the new one from its start
                partial += handle.read()
                yield from (raw for raw in partial.split(b"\n") if raw.strip())
                handle.close()
                handle = log.open("rb")
                yield from _between(log, inode, os.fstat(handle.fileno()).st_ino)
                inode = os.fstat(handle.fileno()).st_ino
                partial = b""
                continue
            time.sleep(poll)
    finally:
        handle.close()


def _between(log: Path, old: int, new: int) -> Iterator[bytes]:
    """The lines of the files rotated after the file ``old`` and before the live file ``new`` (several
    rotations between two polls): none is skipped. Nothing if ``old`` is gone (removed meanwhile)."""
    files = log_files(log)
    inodes = [file.stat().st_ino for file in files]
    if old not in inodes:
        return
    end = inodes.index(new) if new in inodes else len(files)
    for file in files[inodes.index(old) + 1:end]:
        with file.open("rb") as lines:
            yield from (line.rstrip(b"\n") for line in lines if line.strip() and len(line) <= MAX_LINE)


def everything_then_follow(log: Path, poll: float = 0.5) -> Iterator[dict[str, Any]]:
    """Every record of the log, then each one appended, once each and in order whatever rotates
    meanwhile: the live file is opened first, then the rotated files are read, and a record whose
    ``seq`` was seen already (the live file rotated in between) is passed over."""
    handle = log.open("rb")
    last = 0
    rotated = [file for file in log_files(log) if file != log]
    for file in rotated:
        with file.open("rb") as lines:
            for line in lines:
                record = parsed(line.rstrip(b"\n"))
                if record is not None and _new(record, last):
                    last = max(last, _seq(record))
                    yield record
    for raw in _follow(handle, log, poll):
        record = parsed(raw)
        if record is not None and _new(record, last):
            last = max(last, _seq(record))
            yield record


def _seq(record: dict[str, Any]) -> int:
    seq = record.get("seq")
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else 0


def _new(record: dict[str, Any], last: int) -> bool:
    seq = _seq(record)
    return seq == 0 or seq > last
