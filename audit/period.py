"""``--since`` and ``--until``: what a reviewer types, read as an interval of UTC instants.

A bound names a day, an hour, a minute, a second or an instant (ISO 8601 / RFC 3339 shapes:
``2026-12-01``, ``2026-12-01T08``, ``2026-12-01T08:30``, ``2026-12-01 08:30:15``,
``2026-12-01T08:30:15.25+01:00``, ``...Z``). ``--since`` includes all of what it names from its
start, ``--until`` all of it to its end: ``--until 2026-12-01`` is every record of that day. A time
without a zone is UTC (the log's own zone). Anything else is an error that names the option.

Records carry RFC 3339 times as the writer made them (``2026-12-01T08:30:15.123456+00:00``);
:func:`instant` brings any record time to that one form, so bounds and records compare as strings
(in Python and in the SQLite index alike).
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
from dataclasses import dataclass

_SHAPE = re.compile(r"(?P<date>\d{4}-\d{2}-\d{2})"
                    r"(?:[T ](?P<hour>\d{2})(?::(?P<minute>\d{2})(?::(?P<second>\d{2})(?P<fraction>\.\d{1,6})?)?)?"
                    r"(?P<zone>Z|z|[+-]\d{2}:?\d{2})?)?")
_CANONICAL = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}\+00:00")
EXAMPLES = "2026-12-01, 2026-12-01T08:30, 2026-12-01T08:30:00+01:00"


@dataclass(frozen=True, slots=True, kw_only=True)
class Bound:
    """A bound as typed (for the report's header) and as the instant it stands for (canonical UTC)."""

    typed: str
    instant: str


def _parse(value: str) -> tuple[dt.datetime, dt.timedelta]:
    """The start of what ``value`` names, in UTC, and how long it lasts (its precision)."""
    found = _SHAPE.fullmatch(value.strip())
    if found is None:
        raise ValueError("not a date or time")
    parts = found.groupdict()
    zone = parts["zone"]
    text = parts["date"] + "T" + (parts["hour"] or "00") + ":" + (parts["minute"] or "00") + ":" + (
        parts["second"] or "00") + (parts["fraction"] or "")
    if zone and zone not in ("Z", "z"):
        text += zone if ":" in zone else f"{zone[:3]}:{zone[3:]}"
    start = dt.datetime.fromisoformat(text)  # checks the calendar: 2026-02-30 and hour 24 are refused
    start = start.replace(tzinfo=dt.UTC) if start.tzinfo is None else start.astimezone(dt.UTC)
    if parts["fraction"]:
        length = dt.timedelta(microseconds=1)
    elif parts["second"]:
        length = dt.timedelta(seconds=1)
    elif parts["minute"]:
        length = dt.timedelta(minutes=1)
    elif parts["hour"]:
        length = dt.timedelta(hours=1)
    else:
        length = dt.timedelta(days=1)
    return start, length


def _canonical(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="microseconds")


def since(value: str) -> Bound:
    """An argparse type: the first instant included."""
    try:
        start, _ = _parse(value)
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(f"{value!r} is not a date or time (for example {EXAMPLES})") from None
    return Bound(typed=value, instant=_canonical(start))


def until(value: str) -> Bound:
    """An argparse type: the first instant no longer included (the end of the day, minute ... named)."""
    try:
        start, length = _parse(value)
        end = start + length
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(f"{value!r} is not a date or time (for example {EXAMPLES})") from None
    return Bound(typed=value, instant=_canonical(end))


def instant(value: str) -> str:
    """A record's time in the canonical form ("" when it is no time: such a record is outside any period)."""
    if _CANONICAL.fullmatch(value):
        return value
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        return _canonical(moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment)
    except (ValueError, OverflowError):
        return ""


def within(when: str, start: Bound | None, end: Bound | None) -> bool:
    """Whether a record's canonical time lies in [start, end)."""
    if start is None and end is None:
        return True
    if not when:
        return False
    return (start is None or when >= start.instant) and (end is None or when < end.instant)


def shown(when: str) -> str:
    """A canonical time as a reader sees it: ``2026-12-01 08:30:15 UTC``."""
    return f"{when[:10]} {when[11:19]} UTC" if len(when) >= 19 else when or "-"
