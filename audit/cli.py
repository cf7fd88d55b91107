"""``decision-log``: what security teams run on a server agent's decision log.

    decision-log verify --log decisions.jsonl --public-key decision-log.key.pub [--key-file OLD-HMAC-KEY]
                        [--stale-after 300] [--json]
    decision-log tail   --log decisions.jsonl [-n 20] [-f]
    decision-log search --log decisions.jsonl [--user U] [--patient P] [--study S] [--workstation W]
                        [--action A] [--decision permit|deny] [--reason R] [--since T] [--until T] [--json]
    decision-log export --log decisions.jsonl --format csv|jsonl [filters as for search]
    decision-log report --log decisions.jsonl [--since T] [--until T] [--html FILE]
    decision-log index  --log decisions.jsonl      # then search/export/report use the SQLite index

``verify`` exits with
  0  the chain and every checkpoint hold;
  1  damage: the first broken record and its kind (edited, deleted, reordered, file-missing,
     truncated: a last line cut off by a crash that the agent has not sealed yet, or with
     ``--stale-after`` a log whose last checkpoint is old and not final; unverifiable: signed with
     a kind of key not given);
  3  the chain holds, but a crash once cut a write short and the writer sealed the torn line when it
     restarted: a warning a security officer must see (the rest of that write, unsigned records,
     is lost), not tampering. It stays reported for as long as the file holding it is kept.
(2 is argparse's, for a command line it cannot parse, and a key file that cannot be used.)

``search``, ``export``, ``report`` and ``index`` read each record as an event of
:mod:`audit.events` (records of earlier versions included) and flatten it once, in :mod:`audit.rows`.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from . import index
from .chain import Report, iter_lines, log_files, verify
from .events import Stored, read
from .progress import Progress
from .report import html_page, summarize, text
from .rows import COLUMNS, FILTERS, bookkeeping, matches, row, wanted_reason
from .signing import KeyFileError, Keys, read_hmac_key, read_public_key

SEALED = 3  # verify's exit code for a chain that holds with a sealed torn tail (a warning)


def records(path: Path) -> Iterator[dict[str, Any]]:
    """Every readable record of the log, rotated files first (an unreadable line is verify's business)."""
    for _, _, line in iter_lines(path):
        if line.strip():
            try:
                record = orjson.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
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
    inode = os.fstat(handle.fileno()).st_ino
    partial = b""
    try:
        while True:
            chunk = handle.read()
            if chunk:
                partial += chunk
                *complete, partial = partial.split(b"\n")
                yield from (raw for raw in complete if raw.strip())
                continue
            try:
                renamed = os.stat(log).st_ino != inode
            except FileNotFoundError:
                renamed = False  # between the rename and the new file: wait for it
            if renamed:  # rotated: finish the old file, then read the new one from its start
                partial += handle.read()
                yield from (raw for raw in partial.split(b"\n") if raw.strip())
                handle.close()
                handle = log.open("rb")
                inode = os.fstat(handle.fileno()).st_ino
                partial = b""
                continue
            time.sleep(poll)
    finally:
        handle.close()


def line(row: dict[str, Any]) -> str:
    return (f"{row['time'][:26]:<26} {row['user'] or '-':<12} {row['action'] or row['event']:<9} "
            f"{row['patient'] or '-':<16} {row['decision'] or '-':<7} {row['reason'] or '-':<24} {row['rule_id']}")


def tail_line(raw: bytes) -> str:
    """One line of ``tail``: an event, one of the chain's own records, or a line that is neither."""
    try:
        record = orjson.loads(raw)
    except ValueError:
        record = None
    if not isinstance(record, dict):
        return f"(not a log record: {len(raw)} bytes; decision-log verify says why)"
    stored = read(record)
    return line(row(stored) if stored is not None else bookkeeping(record))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="decision-log", description=(__doc__ or "").split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    v = sub.add_parser("verify", epilog="exit codes: 0 intact, 1 damaged, 3 intact with a sealed torn tail "
                       "(a crash cut a write short; see the report)")
    v.add_argument("--public-key", type=Path, action="append", default=[],
                   help="the agent's public key (PEM, next to its private key as KEY_FILE.pub); repeatable")
    v.add_argument("--key-file", type=Path, action="append", default=[],
                   help="an HMAC key of a version before 2026-12, for the checkpoints it signed; repeatable")
    v.add_argument("--stale-after", type=float, default=None,
                   help="report a log whose last checkpoint is older than this (seconds) and not final as truncated")
    v.add_argument("--json", action="store_true")
    t = sub.add_parser("tail")
    t.add_argument("-n", type=int, default=20)
    t.add_argument("-f", "--follow", action="store_true")
    ix = sub.add_parser("index", help="bring the SQLite index up to date (search, export, report use it)")
    ix.add_argument("--quiet", action="store_true")
    for name in ("search", "export", "report"):
        p = sub.add_parser(name)
        for field in FILTERS:
            p.add_argument(f"--{field}", choices=["permit", "deny"] if field == "decision" else None)
        p.add_argument("--since", help="ISO time, inclusive")
        p.add_argument("--until", help="ISO time, inclusive")
        if name == "search":
            p.add_argument("--json", action="store_true")
        elif name == "export":
            p.add_argument("--format", choices=["csv", "jsonl"], required=True)
        else:
            p.add_argument("--html", type=Path, help="write a self-contained HTML report with charts")
    for p in sub.choices.values():
        p.add_argument("--log", required=True, type=Path, help="the live decision log file")
    return parser


def _keys(args: argparse.Namespace) -> Keys | None:
    if not args.public_key and not args.key_file:
        return None
    return Keys(public=tuple(read_public_key(p) for p in args.public_key),
                hmac=tuple(read_hmac_key(p) for p in args.key_file))


def _verify(args: argparse.Namespace, keys: Keys | None) -> int:
    if keys is None:
        print("decision-log verify: give the agent's public key (--public-key decision-log.key.pub), and for "
              "checkpoints of versions before 2026-12 their HMAC key (--key-file)", file=sys.stderr)
        return 2
    progress = Progress("verify")
    report = verify(args.log, keys, stale_after=args.stale_after, progress=progress.update)
    progress.done(f"{report.records:,} records checked")
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    elif report.ok:
        signed = f"last signed by {report.signature}" + (f" key {report.key_id}" if report.key_id else "")
        print(f"ok: {report.records} records in {report.files} file(s), {report.checkpoints} checkpoints "
              f"({signed if report.checkpoints else 'none signed'}), {report.unsigned_tail} record(s) after the "
              f"last checkpoint{' (closed cleanly)' if report.final else ''}")
        if report.records and not report.checkpoints:
            print("WARNING: no signed checkpoint: nothing proves the agent wrote these records")
        _warn_sealed(report)
    else:
        d = report.damage
        assert d is not None
        print(f"BROKEN: {d.kind} at {d.file}:{d.line} (seq {d.seq}): {d.detail}")
    return 1 if not report.ok else SEALED if report.sealed else 0


def _warn_sealed(report: Report) -> None:
    for sealed in report.sealed:
        print(f"WARNING: a write was cut short (crash, kill -9 or power loss): {sealed.file}:{sealed.line} is a "
              f"torn line of {sealed.torn_bytes} bytes, kept and sealed by the writer with record seq {sealed.seq}; "
              "the rest of that write is lost")


def _tail(args: argparse.Namespace) -> int:
    for raw in last_lines(args.log, args.n):
        print(tail_line(raw))
    if args.follow:
        try:
            for raw in follow(args.log):
                print(tail_line(raw), flush=True)
        except KeyboardInterrupt:
            return 0
    return 0


def _select(args: argparse.Namespace) -> list[Stored]:
    """The events search, export and report work on: from the index when there is one, else read."""
    filters = {name: getattr(args, name, None) for name in FILTERS}
    filters["reason"] = wanted_reason(filters["reason"])
    if index.index_path(args.log).exists():
        try:  # bring it up to date (only what was appended since) and answer from it
            index.build(args.log, progress=Progress("index"))
            return list(index.search(args.log, filters, args.since, args.until))
        except (OSError, sqlite3.Error) as error:
            print(f"index unusable ({error}): reading the log", file=sys.stderr)
    progress = Progress("read")
    selected = []
    for count, stored in enumerate(events(args.log), 1):
        if count % 10_000 == 0:
            progress.update(count)
        if matches(row(stored), filters, args.since, args.until):
            selected.append(stored)
    progress.done()
    return selected


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "verify":
        try:
            keys = _keys(args)
        except KeyFileError as error:
            parser.error(str(error))
        return _verify(args, keys)
    if args.command == "tail":
        return _tail(args)
    if args.command == "index":
        index.build(args.log, progress=Progress("index", enabled=False if args.quiet else None))
        return 0
    selected = _select(args)
    if args.command == "report":
        summary = summarize(selected)
        if args.html:
            period = f"{args.since or 'start'} to {args.until or 'now'}"
            args.html.write_text(html_page(summary, f"Decision log report, {period}"), encoding="utf-8")
            print(f"report written to {args.html}", file=sys.stderr)
        print(text(summary))
        return 0
    rows = [row(stored) for stored in selected]
    if args.command == "search":
        for flat in rows:
            print(json.dumps(flat) if args.json else line(flat))
        if not args.json:
            print(f"{len(rows)} record(s)", file=sys.stderr)
        return 0
    if args.format == "jsonl":
        for flat in rows:
            print(json.dumps(flat))
    else:
        writer = csv.DictWriter(sys.stdout, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return 0


if __name__ == "__main__":  # pragma: no cover
    try:
        sys.exit(main())
    except BrokenPipeError:  # `decision-log search ... | head`
        sys.exit(0)
