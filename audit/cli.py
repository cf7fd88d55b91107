"""``decision-log``: what security teams run on a server agent's decision log.

    decision-log verify  --log decisions.jsonl --public-key decision-log.key.pub [--key-file OLD-HMAC-KEY]
                         [--stale-after 300] [--json]
    decision-log tail    --log decisions.jsonl [-n 20] [-f]
    decision-log search  --log decisions.jsonl [--user U] [--patient P] [--study S] [--workstation W]
                         [--action A] [--decision permit|deny] [--reason R] [--since T] [--until T] [--json]
    decision-log export  --log decisions.jsonl --format csv|jsonl [filters as for search]
    decision-log report  --log decisions.jsonl [filters] [--html FILE] [--public-key P] [--site NAME]
                         [--timezone Europe/Paris] [--work-hours 7-19]
    decision-log patient PATIENT-ID --log decisions.jsonl [--since T] [--until T] [--html FILE] [--json]
    decision-log alerts  --log decisions.jsonl [--follow] [--format json|syslog] [--target HOST:PORT]
    decision-log index   --log decisions.jsonl      # then search/export/report use the SQLite index

``--since``/``--until`` take a day, a time or an instant (``2026-12-01``, ``2026-12-01T08:30``,
``2026-12-01T08:30:00+01:00``; UTC without a zone), each inclusive: ``--until 2026-12-01`` ends with
that day's last record. A bad value is an error naming the option.

``verify`` exits with
  0  the chain and every checkpoint hold;
  1  damage: the first broken record and its kind (edited, deleted, reordered, file-missing,
     truncated: a last line cut off by a crash that the agent has not sealed yet, or with
     ``--stale-after`` a log whose last checkpoint is old and not final; unverifiable: signed with
     a kind of key not given);
  3  the chain holds, with a warning a security officer must see: a crash once cut a write short and
     the writer sealed the torn line when it restarted (the rest of that write, unsigned records, is
     lost; not tampering, and reported for as long as the file holding it is kept); or no record is
     covered by a signed checkpoint at all (a log younger than its first checkpoint interval, an agent
     killed before it, or a file rewritten without them: a hash chain alone anyone can rebuild).
(2 is argparse's, for a command line it cannot parse, and a key file that cannot be used.)

Output into a pipe that closes early (``decision-log search ... | head``) ends the command quietly,
as ``cat`` or ``grep`` end: killed by SIGPIPE, with no traceback.
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
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dicomwire.version import add_version

from . import accounting, index, period, report_page
from .alerts import SD_ID, Detector, Thresholds
from .chain import Report, verify
from .integrity import check
from .page import write_private
from .progress import Progress
from .reading import events, everything_then_follow, follow, last_lines, parsed, records
from .report import Hours, summarize, text
from .rows import COLUMNS, FILTERS, bookkeeping, line, matches, row, wanted_reason
from .signing import KeyFileError, Keys, read_hmac_key, read_public_key
from .stored import Stored, read
from .syslog import SpooledSender, SyslogTarget

WARNED = 3  # verify's exit code for a chain that holds with a warning: a sealed torn tail, or nothing signed


def tail_line(raw: bytes) -> str:
    """One line of ``tail``: an event, one of the chain's own records, or a line that is neither."""
    record = parsed(raw)
    if record is None:
        return f"(not a log record: {len(raw)} bytes; decision-log verify says why)"
    stored = read(record)
    return line(row(stored) if stored is not None else bookkeeping(record))


def _zone(value: str) -> ZoneInfo:
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise argparse.ArgumentTypeError(f"{value!r} is no IANA time zone (for example Europe/Paris)") from None


def _hours(value: str) -> tuple[int, int]:
    start, _, end = value.partition("-")
    if not (start.isdigit() and end.isdigit() and 0 <= int(start) < int(end) <= 24):
        raise argparse.ArgumentTypeError(f"{value!r} is not START-END in whole hours (for example 7-19)")
    return int(start), int(end)


def _keys_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--public-key", type=Path, action="append", default=[],
                   help="the agent's public key (PEM, next to its private key as KEY_FILE.pub); repeatable")
    p.add_argument("--key-file", type=Path, action="append", default=[],
                   help="an HMAC key of a version before 2026-12, for the checkpoints it signed; repeatable")


def _period_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--since", type=period.since, help="a day, time or instant: from its start (inclusive)")
    p.add_argument("--until", type=period.until, help="a day, time or instant: to its end (inclusive)")


def _parser() -> argparse.ArgumentParser:
    parser = add_version(argparse.ArgumentParser(prog="decision-log", description=(__doc__ or "").split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter))
    sub = parser.add_subparsers(dest="command", required=True)
    v = sub.add_parser("verify", epilog="exit codes: 0 intact, 1 damaged, 3 intact with a sealed torn tail "
                       "(a crash cut a write short; see the report)")
    _keys_options(v)
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
        _period_options(p)
        if name == "search":
            p.add_argument("--json", action="store_true")
        elif name == "export":
            p.add_argument("--format", choices=["csv", "jsonl"], required=True)
        else:
            _report_options(p)
    pt = sub.add_parser("patient", help="every access to one patient's data (an accounting of disclosures)")
    pt.add_argument("patient_id", metavar="PATIENT-ID")
    pt.add_argument("--issuer", help="the Issuer of Patient ID (records naming another issuer are left out)")
    _period_options(pt)
    _keys_options(pt)
    pt.add_argument("--html", type=Path, help="write the accounting as one self-contained HTML page")
    pt.add_argument("--json", action="store_true", help="one JSON object per access")
    _alerts_options(sub.add_parser("alerts", help="break-glass uses, refusal bursts, unusual volume, for a SIEM"))
    for p in sub.choices.values():
        p.add_argument("--log", required=True, type=Path, help="the live decision log file")
    return parser


def _report_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--html", type=Path, help="write a self-contained HTML report with charts")
    _keys_options(p)
    p.add_argument("--site", default="", help="the site's name for the report's header")
    p.add_argument("--timezone", type=_zone, default=ZoneInfo("UTC"), help="the site's zone, for working hours")
    p.add_argument("--work-hours", type=_hours, default=(7, 19), help="START-END (default 7-19)")


def _alerts_options(a: argparse.ArgumentParser) -> None:
    _period_options(a)
    a.add_argument("-f", "--follow", action="store_true",
                   help="keep reading the log as it grows (from its end, or from --since), across rotations")
    a.add_argument("--format", choices=["json", "syslog"], default="json")
    a.add_argument("--target", help="send syslog to HOST[:PORT] instead of stdout (TLS 6514, UDP 514)")
    a.add_argument("--transport", choices=["tls", "udp"], default="tls")
    for name in ("ca", "certificate", "key"):
        a.add_argument(f"--{name}", type=Path, help=f"TLS {name} file for --target")
    a.add_argument("--server-name", help="the name the target's certificate must carry (default: its host)")
    a.add_argument("--spool", type=Path, help="where messages wait for the target (default ~/.cache/decision-log)")
    a.add_argument("--sd-id", default=SD_ID, help="STRUCTURED-DATA id (NAME@your private enterprise number)")
    a.add_argument("--burst", type=int, default=5, help="refusals for one user or source that make a burst")
    a.add_argument("--burst-window", type=float, default=300.0, help="seconds")
    a.add_argument("--volume", type=int, default=50, help="distinct patients per user above which to alert")
    a.add_argument("--volume-window", type=float, default=3600.0, help="seconds")


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
    chains = chains_of(args.log)
    results = []
    for chain in chains:  # [server] workers: one chain per worker, each verified whole (its own seq and keys)
        if len(chains) > 1 and not args.json:
            print(f"{chain}:")
        results.append(_verify_chain(args, keys, chain))
    return max(results, key=lambda code: (code == 1, code == WARNED, code))


def chains_of(log: Path) -> list[Path]:
    """The chains a log names: itself, and the workers' own chains beside it (``NAME.wI.SUFFIX``, written
    with ``[server] workers``); the log itself only when no worker chain exists or it was written too."""
    def worker(path: Path) -> int | None:
        middle = path.name[len(log.stem) + 2:len(path.name) - len(log.suffix)]
        return int(middle) if middle.isdigit() else None

    found = [p for p in log.parent.glob(f"{log.stem}.w[0-9]*{log.suffix}") if worker(p) is not None]
    workers = sorted(found, key=lambda p: worker(p) or 0)
    return [*([log] if log.exists() or not workers else []), *workers]


def _verify_chain(args: argparse.Namespace, keys: Keys, log: Path) -> int:
    progress = Progress("verify")
    report = verify(log, keys, stale_after=args.stale_after, progress=progress.update)
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
    unsigned = report.records > 0 and not report.checkpoints
    return 1 if not report.ok else WARNED if report.sealed or unsigned else 0


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


def _selection(args: argparse.Namespace) -> str:
    """The filters given, as the command line said them (for a report's header)."""
    given = [f"--{name} {getattr(args, name)}" for name in FILTERS if getattr(args, name, None)]
    given += [f"--{name} {getattr(args, name).typed}" for name in ("since", "until") if getattr(args, name, None)]
    return " ".join(given)


def _report(args: argparse.Namespace, keys: Keys | None) -> int:
    selected = _select(args)
    integrity = check(args.log, keys, progress=Progress("verify").update)
    summary = summarize(selected, Hours(zone=args.timezone, start=args.work_hours[0], end=args.work_hours[1]))
    if args.html:
        write_private(args.html, report_page.html_page(summary, integrity, selection=_selection(args), site=args.site,
                                                       log=str(args.log)))
        print(f"report written to {args.html}", file=sys.stderr)
    print(text(summary, integrity=integrity.headline, selection=_selection(args)))
    return 1 if integrity.level == "broken" else 0


def _patient(args: argparse.Namespace, keys: Keys | None) -> int:
    found = accounting.accesses(args.log, args.patient_id, issuer=args.issuer, since=args.since, until=args.until)
    integrity = check(args.log, keys, progress=Progress("verify").update)
    if args.json:
        for item in found:
            print(json.dumps(item.as_dict()))
    else:
        print("\n".join(accounting.text_lines(args.patient_id, found, integrity)))
    if args.html:
        covered = (f"{period.shown(args.since.instant) if args.since else 'the log start'} to "
                   f"{period.shown(args.until.instant) + ' (excluded)' if args.until else 'its end'}")
        write_private(args.html, accounting.html_page(args.patient_id, found, integrity, period=covered,
                                                      log=str(args.log)))
        print(f"accounting written to {args.html}", file=sys.stderr)
    return 1 if integrity.level == "broken" else 0


def _sender(args: argparse.Namespace) -> SpooledSender | None:
    if not args.target:
        return None
    host, _, port = args.target.rpartition(":") if args.target.count(":") == 1 else (args.target, "", "")
    target = SyslogTarget(host=host, port=int(port) if port.isdigit() else 6514 if args.transport == "tls" else 514,
                          transport=args.transport, ca=args.ca, certificate=args.certificate, key=args.key,
                          server_name=args.server_name)
    spool = args.spool or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "decision-log" / "alerts"
    return SpooledSender(target, spool, app="decision-log")


def _alerts(args: argparse.Namespace) -> int:
    detector = Detector(Thresholds(burst=args.burst, burst_window=args.burst_window, volume=args.volume,
                                   volume_window=args.volume_window))
    sender = _sender(args)
    if not args.follow:
        source = records(args.log)
    else:
        source = everything_then_follow(args.log) if args.since else (r for r in map(parsed, follow(args.log)) if r)
    try:
        for record in source:
            stored = read(record)
            if stored is None or not period.within(period.instant(stored.time), args.since, args.until):
                continue
            for alert in detector.feed(stored):
                if args.format == "json":
                    print(alert.json().decode(), flush=args.follow)
                elif sender is not None:
                    sender.submit_message(alert.syslog(sd_id=args.sd_id))
                else:
                    sys.stdout.buffer.write(alert.syslog(sd_id=args.sd_id) + b"\n")
                    if args.follow:
                        sys.stdout.buffer.flush()
    finally:
        if sender is not None:
            sender.close(10)
    if sender is not None and sender.pending():
        print(f"decision-log alerts: {sender.pending()} message(s) not delivered yet, kept in {sender.spool}",
              file=sys.stderr)
        return 1
    return 0


def _search_or_export(args: argparse.Namespace) -> int:
    rows = [row(stored) for stored in _select(args)]
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


def _run(argv: list[str] | None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    since, until = getattr(args, "since", None), getattr(args, "until", None)
    if since is not None and until is not None and since.instant >= until.instant:
        parser.error(f"argument --until: {until.typed!r} ends before --since {since.typed!r} begins")
    try:
        keys = _keys(args) if hasattr(args, "public_key") else None
    except KeyFileError as error:
        parser.error(str(error))
    if args.command == "verify":
        return _verify(args, keys)
    if args.command == "tail":
        return _tail(args)
    if args.command == "index":
        index.build(args.log, progress=Progress("index", enabled=False if args.quiet else None))
        return 0
    if args.command == "report":
        return _report(args, keys)
    if args.command == "patient":
        return _patient(args, keys)
    if args.command == "alerts":
        return _alerts(args)
    return _search_or_export(args)


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
