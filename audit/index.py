"""An SQLite index of the decision log, so that months of records are searched, not re-read.

``decision-log index`` adds what was appended since the last run (it remembers how far it read in
each file); once an index exists, ``search``/``export``/``report`` bring it up to date the same way
(incrementally) and answer from it. The index holds no more
than the log does and can be rebuilt at any time; it is not part of the evidence (``verify`` reads
the log itself).

The index holds what the log holds, so it gets the log's own permissions: created private, then
given the log's group (when this user may) and mode; without the log's group it stays without group
access rather than open to another group. SQLite gives its journal the database file's mode.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import orjson

from .chain import log_files
from .period import Bound, instant
from .progress import Progress
from .rows import FILTERS, row
from .stored import Stored, read

# Raised whenever what the index holds changes (2: reasons as codes, read through audit.events; files
# known by inode; 3: times in one canonical UTC form, compared as strings): an index built by another
# version is dropped and rebuilt, never answered from.
SCHEMA_VERSION = 3
SCHEMA = """
CREATE TABLE IF NOT EXISTS records (seq INTEGER PRIMARY KEY, time TEXT, event TEXT, user TEXT, action TEXT,
    patient TEXT, study TEXT, workstation TEXT, decision TEXT, reason TEXT, line TEXT);
CREATE TABLE IF NOT EXISTS files (name TEXT PRIMARY KEY, offset INTEGER, inode INTEGER);
CREATE INDEX IF NOT EXISTS by_user_time ON records (user, time);
CREATE INDEX IF NOT EXISTS by_patient_time ON records (patient, time);
CREATE INDEX IF NOT EXISTS by_time ON records (time);
"""


def index_path(log: Path) -> Path:
    return log.with_name(log.name + ".index.sqlite")


def _guarded(log: Path) -> Path:
    """The index file, created if need be, with the access the log has (never more)."""
    files = log_files(log)
    if not files:
        raise FileNotFoundError(f"{log}: no decision log there")
    like = files[-1].stat()
    path = index_path(log)
    with contextlib.suppress(FileExistsError):  # created private: it is opened to the log's readers below
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    mode = stat.S_IMODE(like.st_mode) & 0o666
    if path.stat().st_gid != like.st_gid:
        try:
            os.chown(path, -1, like.st_gid)
        except OSError:
            mode &= ~0o070  # the log's group is not ours to give: nobody in our group reads it either
    os.chmod(path, mode)
    return path


def _open(log: Path) -> sqlite3.Connection:
    db = sqlite3.connect(_guarded(log))
    if db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
        db.executescript("DROP TABLE IF EXISTS records; DROP TABLE IF EXISTS files;")
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    db.executescript(SCHEMA)
    return db


def build(log: Path, progress: Progress | None = None) -> int:
    """Index the events appended since the last run; returns how many were added. The chain's own
    records (file-start, checkpoint) and unreadable lines are passed over (``verify`` reads them)."""
    db = _open(log)
    added = 0
    with db:
        known = {name: (offset, inode) for name, offset, inode in db.execute("SELECT name, offset, inode FROM files")}
        for file in log_files(log):
            # A rotated file keeps its content; the live file is renamed when it rotates, so offsets
            # are kept per name and inode: a live file that is another file than last time (rotated,
            # however much the new one has grown since) is read from its start.
            status = file.stat()
            offset, inode = known.get(file.name, (0, status.st_ino))
            if inode != status.st_ino or status.st_size < offset:
                offset = 0
            with file.open("rb") as handle:
                handle.seek(offset)
                rows = []
                for raw in handle:
                    if not raw.endswith(b"\n"):
                        break  # a line being written: next time
                    offset += len(raw)
                    stored = _read(raw)
                    if stored is None:
                        continue
                    r = row(stored)
                    rows.append((r["seq"], instant(str(r["time"])), r["event"], r["user"], r["action"], r["patient"],
                                 r["study"], r["workstation"], r["decision"], r["reason"],
                                 raw.decode("utf-8", "replace").rstrip("\n")))
                    if len(rows) >= 50_000:
                        db.executemany("INSERT OR REPLACE INTO records VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
                        added += len(rows)
                        rows = []
                        if progress is not None:
                            progress.update(added)
                db.executemany("INSERT OR REPLACE INTO records VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
                added += len(rows)
            db.execute("INSERT OR REPLACE INTO files VALUES (?, ?, ?)", (file.name, offset, status.st_ino))
    if progress is not None:
        progress.done(f"{added:,} new records indexed")
    db.close()
    return added


def _read(raw: bytes) -> Stored | None:
    try:
        return read(orjson.loads(raw))
    except ValueError:
        return None


def current(log: Path) -> bool:
    """Whether the index covers every complete line of the log now."""
    path = index_path(log)
    if not path.exists():
        return False
    db = sqlite3.connect(path)
    try:
        if db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
            return False
        known = {name: (offset, inode) for name, offset, inode in db.execute("SELECT name, offset, inode FROM files")}
    except sqlite3.Error:
        return False
    finally:
        db.close()
    return all(known.get(f.name) == (f.stat().st_size, f.stat().st_ino) for f in log_files(log))


def search(log: Path, filters: dict[str, str | None], since: Bound | None, until: Bound | None) -> Iterator[Stored]:
    clauses: list[str] = []
    values: list[str] = []
    for name in FILTERS:
        wanted = filters.get(name)
        if wanted:
            clauses.append(f"{name} = ?")
            values.append(wanted)
    if since is not None or until is not None:
        clauses.append("time != ''")  # a record with no readable time is in no period
    if since is not None:
        clauses.append("time >= ?")
        values.append(since.instant)
    if until is not None:
        clauses.append("time < ?")  # the end of the day (minute, ...) --until names
        values.append(until.instant)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    db = sqlite3.connect(index_path(log))
    try:
        for (line,) in db.execute(f"SELECT line FROM records {where} ORDER BY seq", values):
            stored = _read(line.encode("utf-8"))
            if stored is not None:
                yield stored
    finally:
        db.close()
