"""The integrity status a report shows: what ``decision-log verify`` found, in words for a reader.

A report or a patient's accounting is only as good as the log it was read from, so both open with
this status: intact or broken (the first damage, as :func:`audit.chain.verify` names it), the last
signed checkpoint (when, by which key), whether the log was closed cleanly, writes a crash cut short
(sealed torn tails), and "not checked" when no key was given: a report never says more than the
check it ran.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .chain import Report, verify
from .signing import ED25519, Keys


@dataclass(frozen=True, slots=True, kw_only=True)
class Integrity:
    level: str  # "intact" | "warning" (intact, with something a reader must see) | "broken" | "unchecked"
    headline: str
    details: tuple[str, ...] = ()
    report: Report | None = None

    @property
    def ok(self) -> bool:
        return self.level in ("intact", "warning")


def check(log: Path, keys: Keys | None, *, stale_after: float | None = None,
          progress: Callable[[int, str], None] | None = None) -> Integrity:
    if keys is None or not (keys.public or keys.hmac):
        return Integrity(level="unchecked", headline="Integrity not checked: no key given (--public-key "
                         "decision-log.key.pub, and --key-file for checkpoints of versions before 2026-12)")
    return describe(verify(log, keys, stale_after=stale_after, progress=progress))


def _signed_by(report: Report) -> str:
    if report.signature == ED25519:
        return f"Ed25519, key {report.key_id}"
    return report.signature or "unsigned"


def describe(report: Report) -> Integrity:
    """The status of one :class:`audit.chain.Report`, headline first."""
    if report.damage is not None:
        d = report.damage
        return Integrity(level="broken", report=report,
                         headline=f"BROKEN: {d.kind} at {d.file}:{d.line} (seq {d.seq}): {d.detail}",
                         details=(f"{report.records:,} records read before the damage",))
    details: list[str] = []
    level = "intact"
    if report.checkpoints:
        closed = ("closed cleanly (final checkpoint)" if report.final else
                  "not closed: the agent is running, or stopped without closing")
        headline = (f"Intact: {report.records:,} records in {report.files} file(s); last signed checkpoint "
                    f"{_when(report.last_checkpoint)} ({_signed_by(report)}); {closed}")
        if report.unsigned_tail:
            details.append(f"{report.unsigned_tail:,} record(s) after the last checkpoint, not yet signed")
    else:
        level = "warning"
        headline = (f"Chain intact but NOT SIGNED: {report.records:,} records and no signed checkpoint; "
                    "nothing proves the agent wrote them")
    if report.hmac_checkpoints:
        details.append(f"{report.hmac_checkpoints} checkpoint(s) signed with HMAC-SHA256 (versions before 2026-12: "
                       "whoever holds that key could have made them)")
    if report.unchecked:
        details.append(f"{report.unchecked} HMAC checkpoint(s) not checked (no HMAC key given), each covered by "
                       "a later Ed25519 checkpoint")
    for sealed in report.sealed:
        level = "warning"
        details.append(f"a write was cut short by a crash: {sealed.file}:{sealed.line}, a torn line of "
                       f"{sealed.torn_bytes} bytes, sealed by the writer (record seq {sealed.seq}); the rest of "
                       "that write is lost")
    return Integrity(level=level, headline=headline, details=tuple(details), report=report)


def _when(stamp: str | None) -> str:
    """A checkpoint's time (``2026-12-01T10:00:00Z``) as a reader sees it."""
    if not stamp:
        return "-"
    return stamp.replace("T", " ").removesuffix("Z") + " UTC" if stamp.endswith("Z") else stamp
