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

``--since``/``--until`` take a day, a time or an instant (``2026-12-01``, ``2026-12-01T08:30``,
``2026-12-01T08:30:00+01:00``; UTC without a zone), each inclusive: ``--until 2026-12-01`` ends with
that day's last record. A bad value is an error naming the option.

Output into a pipe that closes early (``decision-log search ... | head``) ends the command quietly,
as ``cat`` or ``grep`` end: killed by SIGPIPE, with no traceback.

``search``, ``export``, ``report`` and ``index`` read each record as an event of
:mod:`audit.events` (records of earlier versions included) and flatten it once, in :mod:`audit.rows`.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import sqlite3
import sys
from pathlib import Path

from . import index, period
from .chain import Report, verify
from .events import Stored, read
from .progress import Progress
from .reading import events, follow, last_lines, parsed
from .report import html_page, summarize, text
from .rows import COLUMNS, FILTERS, bookkeeping, line, matches, row, wanted_reason
from .signing import KeyFileError, Keys, read_hmac_key, read_public_key

SEALED = 3  # verify's exit code for a chain that holds with a sealed torn tail (a warning)


def tail_line(raw: bytes) -> str:
    """One line of ``tail``: an event, one of the chain's own records, or a line that is neither."""
    record = parsed(raw)
    if record is None:
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
        p.add_argument("--since", type=period.since, help="a day, time or instant: from its start (inclusive)")
        p.add_argument("--until", type=period.until, help="a day, time or instant: to its end (inclusive)")
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
        sys.stdout.flush()
        for raw in follow(args.log):
            print(tail_line(raw), flush=True)
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


def _run(argv: list[str] | None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    since, until = getattr(args, "since", None), getattr(args, "until", None)
    if since is not None and until is not None and since.instant >= until.instant:
        parser.error(f"argument --until: {until.typed!r} ends before --since {since.typed!r} begins")
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
            covered = f"{args.since.typed if args.since else 'start'} to {args.until.typed if args.until else 'now'}"
            args.html.write_text(html_page(summary, f"Decision log report, {covered}"), encoding="utf-8")
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


def main(argv: list[str] | None = None) -> int:
    try:
        code = _run(argv)
        sys.stdout.flush()  # a pipe closed early shows here, not in the interpreter's last flush
        return code
    except BrokenPipeError:
        return _reader_gone()
    except KeyboardInterrupt:  # ^C in tail -f, alerts --follow
        return 130


def _reader_gone() -> int:
    """The reading end of stdout closed (``| head`` had enough): end as ``cat`` and ``grep`` do, killed
    by SIGPIPE (exit status 141 in a shell), with nothing on stderr. Python ignores SIGPIPE and raises
    instead; stdout goes to /dev/null first so that the interpreter's last flush fails no more."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    sigpipe = getattr(signal, "SIGPIPE", None)
    if sigpipe is not None:  # POSIX
        signal.signal(sigpipe, signal.SIG_DFL)
        os.kill(os.getpid(), sigpipe)
    return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
