"""The reverse mapping, pseudonym -> real value, per scope: what translates a researcher's keys back.

Kept in SQLite (``<state_dir>/mapping.sqlite3``, mode 0600) because it must outlive the process: a
pseudonym handed out yesterday must still find its study today. Only what was handed out is
recorded. Bounded: at most ``max_entries`` pseudonyms per scope; a batch that would go past that is
refused whole (HTTP 507) and nothing of it is recorded, so the service never hands out a pseudonym
it could not translate back. A pseudonym that already maps to another value (a collision, which
80 or 128 bits make unlikely) is refused the same way, never overwritten.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path

KINDS = ("patient", "uid")


class StoreFull(RuntimeError):
    """The scope holds ``max_entries`` pseudonyms: HTTP 507 Insufficient Storage (RFC 4918 11.5)."""


class Collision(RuntimeError):
    """A pseudonym already maps to another value."""


class ReverseMap:
    def __init__(self, path: Path, max_entries: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # Durable across a crash of the service; a power loss may lose the last batches, which the next
        # request for the same values records again (pseudonyms are functions of the key, not stored state).
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS mapping (scope TEXT NOT NULL, kind TEXT NOT NULL, "
                         "pseudonym TEXT NOT NULL, real TEXT NOT NULL, PRIMARY KEY (scope, kind, pseudonym))")
        self._counts: dict[str, int] = dict(self._db.execute("SELECT scope, COUNT(*) FROM mapping GROUP BY scope"))

    def record(self, scope: str, pairs: Iterable[tuple[str, str, str]]) -> None:
        """Record ``(kind, pseudonym, real)`` triples of one scope, all or none."""
        wanted = {(kind, pseudonym): real for kind, pseudonym, real in pairs}
        with self._lock:
            known = self._lookup(scope, wanted)
            for key, real in known.items():
                if real != wanted[key]:
                    raise Collision(f"a {key[0]} pseudonym of scope {scope} already names another value")
            new = [(scope, kind, pseudonym, real) for (kind, pseudonym), real in wanted.items()
                   if (kind, pseudonym) not in known]
            count = self._counts.get(scope, 0)
            if count + len(new) > self.max_entries:
                raise StoreFull(f"scope {scope} holds {count} pseudonyms; {len(new)} more would pass "
                                f"{self.max_entries}")
            if new:
                self._db.execute("BEGIN")
                try:
                    self._db.executemany("INSERT INTO mapping VALUES (?, ?, ?, ?)", new)
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._counts[scope] = count + len(new)

    def originals(self, scope: str, kind: str, pseudonyms: Iterable[str]) -> dict[str, str]:
        """The real values of those ``pseudonyms`` this scope handed out (unknown ones are absent)."""
        with self._lock:
            found = self._lookup(scope, {(kind, p): "" for p in pseudonyms})
        return {pseudonym: real for (_, pseudonym), real in found.items()}

    def _lookup(self, scope: str, keys: Mapping[tuple[str, str], str]) -> dict[tuple[str, str], str]:
        found: dict[tuple[str, str], str] = {}
        for kind in KINDS:
            names = [pseudonym for k, pseudonym in keys if k == kind]
            for start in range(0, len(names), 500):  # SQLite's bound on host parameters is 999 (older builds)
                chunk = names[start:start + 500]
                rows = self._db.execute("SELECT pseudonym, real FROM mapping WHERE scope = ? AND kind = ? AND "
                                        f"pseudonym IN ({', '.join('?' * len(chunk))})", [scope, kind, *chunk])
                found.update({(kind, pseudonym): real for pseudonym, real in rows})
        return found

    def close(self) -> None:
        with self._lock:
            self._db.close()
