"""An SQLite index of the decision log, so that months of records are searched, not re-read.

``decision-log index`` adds what was appended since the last run (it remembers how far it read in
each file); once an index exists, ``search``/``export``/``report`` bring it up to date the same way
(incrementally) and answer from it. The index holds no more
than the log does and can be rebuilt at any time; it is not part of the evidence (``verify`` reads
the log itself).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .chain import log_files
from .progress import Progress

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (seq INTEGER PRIMARY KEY, time TEXT, event TEXT, user TEXT, action TEXT,
    patient TEXT, study TEXT, workstation TEXT, decision TEXT, reason TEXT, line TEXT);
CREATE TABLE IF NOT EXISTS files (name TEXT PRIMARY KEY, offset INTEGER);
CREATE INDEX IF NOT EXISTS by_user_time ON records (user, time);
CREATE INDEX IF NOT EXISTS by_patient_time ON records (patient, time);
CREATE INDEX IF NOT EXISTS by_time ON records (time);
"""
FILTERS = ("user", "patient", "study", "workstation", "action", "decision", "reason")


def index_path(log: Path) -> Path:
    return log.with_name(log.name + ".index.sqlite")


def build(log: Path, flatten: Any, progress: Progress | None = None) -> int:
    """Index what is new in the log; returns the number of records added."""
    db = sqlite3.connect(index_path(log))
    db.executescript(SCHEMA)
    added = 0
    with db:
        known = dict(db.execute("SELECT name, offset FROM files"))
        for file in log_files(log):
            # A rotated file keeps its content; the live file is renamed when it rotates, so offsets
            # are kept per name, and a live file smaller than its offset has been rotated: start over.
            offset = known.get(file.name, 0)
            size = file.stat().st_size
            if size < offset:
                offset = 0
            with file.open("rb") as handle:
                handle.seek(offset)
                rows = []
                for raw in handle:
                    if not raw.endswith(b"\n"):
                        break  # a line being written: next time
                    offset += len(raw)
                    try:
                        record = json.loads(raw)
                    except ValueError:
                        continue
                    row = flatten(record)
                    rows.append((row["seq"], row["time"], row["event"], row["user"], row["action"], row["patient"],
                                 row["study"], row["workstation"], row["decision"], row["reason"],
                                 raw.decode("utf-8", "replace").rstrip("\n")))
                    if len(rows) >= 50_000:
                        db.executemany("INSERT OR REPLACE INTO records VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
                        added += len(rows)
                        rows = []
                        if progress is not None:
                            progress.update(added)
                db.executemany("INSERT OR REPLACE INTO records VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
                added += len(rows)
            db.execute("INSERT OR REPLACE INTO files VALUES (?, ?)", (file.name, offset))
    if progress is not None:
        progress.done(f"{added:,} new records indexed")
    db.close()
    return added


def current(log: Path) -> bool:
    """Whether the index covers every complete line of the log now."""
    path = index_path(log)
    if not path.exists():
        return False
    db = sqlite3.connect(path)
    try:
        known = dict(db.execute("SELECT name, offset FROM files"))
    except sqlite3.Error:
        return False
    finally:
        db.close()
    return all(known.get(f.name, -1) == f.stat().st_size for f in log_files(log))


def search(log: Path, filters: dict[str, str | None], since: str | None, until: str | None) -> Iterator[dict[str, Any]]:
    clauses, values = ["event NOT IN ('file-start', 'checkpoint')"], []
    for name in FILTERS:
        if filters.get(name):
            clauses.append(f"{name} = ?")
            values.append(filters[name])
    if since:
        clauses.append("time >= ?")
        values.append(since)
    if until:
        clauses.append("time <= ?")
        values.append(until)
    db = sqlite3.connect(index_path(log))
    try:
        for (line,) in db.execute(f"SELECT line FROM records WHERE {' AND '.join(clauses)} ORDER BY seq", values):
            yield json.loads(line)
    finally:
        db.close()
