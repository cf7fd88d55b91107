"""``decision-log report``: what a reviewer reads first, as text or as one self-contained HTML page
(:mod:`audit.report_page`).

The period the records cover, the agents that wrote them (their ``application-start`` records),
totals per user, per action and per decision; refusals by reason with the records behind each;
break-glass uses; access outside working hours (in the site's time zone); each user's activity over
the period; users who touched unusually many patients; writes a crash cut short (torn tails the
writer sealed). Every number comes from the same selection ``decision-log search`` makes (same
filters, same events), read through :mod:`audit.events`. What a page lists is bounded
(:data:`LISTED` records per list, :data:`TIMELINES` users): each list says how many it left out and
the search that shows them all.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from .events import (
    ApplicationEvent,
    AuthenticationEvent,
    AuthorizationEvent,
    Decision,
    Kind,
    LogTruncated,
)
from .fields import text as as_text
from .page import Bucket
from .period import instant, shown
from .rows import one_patient, row
from .stored import Stored

LISTED = 200  # records a page lists per reason (or for break-glass, off hours); the count is always whole
TIMELINES = 300  # users with a timeline row (the most active); the totals count every user
BUCKETS = 96  # columns of a timeline
UTC = ZoneInfo("UTC")


@dataclass(frozen=True, slots=True, kw_only=True)
class Hours:
    """Working hours in the site's zone (records are UTC): access outside them is listed."""

    zone: ZoneInfo = UTC
    start: int = 7
    end: int = 19  # the first hour no longer counted as working

    def off(self, when: str) -> bool:
        try:
            local = dt.datetime.fromisoformat(when).astimezone(self.zone)
        except ValueError:
            return False
        return not self.start <= local.hour < self.end

    def describe(self) -> str:
        return f"before {self.start:02d}:00 or from {self.end:02d}:00, {self.zone.key}"


@dataclass(slots=True)
class Agent:
    """An agent as its ``application-start`` records describe it."""

    name: str
    starts: int = 0
    stops: int = 0
    last_start: str = ""
    details: dict[str, str] = field(default_factory=dict)  # listen, site, host: whatever the record carried


@dataclass
class Summary:
    records: int = 0
    first: str = ""  # canonical time of the first and last record selected
    last: str = ""
    per_user: Counter[str] = field(default_factory=Counter)
    per_action: Counter[str] = field(default_factory=Counter)
    per_decision: Counter[str] = field(default_factory=Counter)
    refusals: Counter[str] = field(default_factory=Counter)
    refused: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # per reason, at most LISTED each
    break_glass: list[dict[str, Any]] = field(default_factory=list)
    break_glass_count: int = 0
    off_hours: list[dict[str, Any]] = field(default_factory=list)
    off_hours_count: int = 0
    patients_per_user: dict[str, set[str]] = field(default_factory=dict)
    truncations: list[dict[str, Any]] = field(default_factory=list)  # torn tails sealed (a crash mid-write)
    agents: dict[str, Agent] = field(default_factory=dict)
    who: dict[str, str] = field(default_factory=dict)  # user -> roles and organization, as last seen
    timelines: dict[str, list[Bucket]] = field(default_factory=dict)
    hours: Hours = field(default_factory=Hours)

    def unusual(self) -> list[tuple[str, int]]:
        """Users whose distinct patients exceed the median + 3 x (median absolute deviation, at least 1)."""
        counts = {u: len(p) for u, p in self.patients_per_user.items()}
        if len(counts) < 2:
            return []
        median = statistics.median(counts.values())
        spread = max(1.0, statistics.median(abs(c - median) for c in counts.values()))
        return sorted(((u, c) for u, c in counts.items() if c > median + 3 * spread), key=lambda x: -x[1])

    def threshold(self) -> float:
        counts = [len(p) for p in self.patients_per_user.values()]
        if len(counts) < 2:
            return 0.0
        median = statistics.median(counts)
        return median + 3 * max(1.0, statistics.median(abs(c - median) for c in counts))


def summarize(selected: Sequence[Stored], hours: Hours | None = None) -> Summary:
    summary = Summary(hours=hours or Hours())
    for stored in selected:
        when = instant(stored.time)
        if when:
            summary.first = min(summary.first or when, when)
            summary.last = max(summary.last, when)
        event = stored.event
        if isinstance(event, LogTruncated):
            summary.truncations.append(row(stored))
        elif isinstance(event, ApplicationEvent):
            _agent(summary, event, when)
        elif isinstance(event, AuthenticationEvent | AuthorizationEvent):
            _decision(summary, stored, event, when)
    _timelines(summary, selected)
    return summary


def _agent(summary: Summary, event: ApplicationEvent, when: str) -> None:
    agent = summary.agents.setdefault(event.name or "-", Agent(name=event.name or "-"))
    if event.kind is Kind.APPLICATION_START:
        agent.starts += 1
        agent.last_start = max(agent.last_start, when)
        agent.details.update({str(k): as_text(v) for k, v in event.detail.items() if as_text(v)})
    elif event.kind is Kind.APPLICATION_STOP:
        agent.stops += 1


def _decision(summary: Summary, stored: Stored, event: AuthenticationEvent | AuthorizationEvent, when: str) -> None:
    flat = row(stored)
    summary.records += 1
    user = flat["user"] or "-"
    summary.per_user[user] += 1
    if event.user is not None:
        summary.who[user] = ", ".join(filter(None, [", ".join(event.user.roles), event.user.organization]))
    summary.per_action[flat["action"] or "login"] += 1
    summary.per_decision[event.decision.value] += 1
    if event.decision is Decision.DENY:
        code = event.reason_code or "-"
        summary.refusals[code] += 1
        listed = summary.refused.setdefault(code, [])
        if len(listed) < LISTED:
            listed.append(flat)
    if flat["break_glass"]:
        summary.break_glass_count += 1
        if len(summary.break_glass) < LISTED:
            summary.break_glass.append(flat)
    if isinstance(event, AuthorizationEvent) and when and summary.hours.off(when):
        summary.off_hours_count += 1
        if len(summary.off_hours) < LISTED:
            summary.off_hours.append(flat)
    patient = one_patient(event.resource) if isinstance(event, AuthorizationEvent) else ""
    if patient and event.decision is Decision.PERMIT:
        summary.patients_per_user.setdefault(user, set()).add(patient)


def _timelines(summary: Summary, selected: Sequence[Stored]) -> None:
    """Each of the most active users' decisions, counted in :data:`BUCKETS` slices of the period."""
    if not summary.first:
        return
    start = dt.datetime.fromisoformat(summary.first).timestamp()
    span = max(dt.datetime.fromisoformat(summary.last).timestamp() - start, 1.0)
    users = {user for user, _ in summary.per_user.most_common(TIMELINES)}
    listed = {r["seq"] for rows in summary.refused.values() for r in rows}
    counts: dict[str, list[list[int]]] = {user: [[0, 0, 0, -1] for _ in range(BUCKETS)] for user in users}
    for stored in selected:
        event = stored.event
        if not isinstance(event, AuthenticationEvent | AuthorizationEvent):
            continue
        user = event.user.username if event.user is not None else "-"
        when = instant(stored.time)
        if user not in counts or not when:
            continue
        slot = counts[user][min(BUCKETS - 1, int((dt.datetime.fromisoformat(when).timestamp() - start) / span
                                                 * BUCKETS))]
        if event.decision is Decision.PERMIT:
            slot[0] += 1
        else:
            slot[1] += 1
            if slot[3] < 0 and stored.seq is not None and stored.seq in listed:
                slot[3] = stored.seq
        slot[2] += isinstance(event, AuthorizationEvent) and event.pdp is not None and event.pdp.break_glass
    summary.timelines = {user: [Bucket(permits=p, denies=d, break_glass=b, first_refusal=None if r < 0 else r)
                                for p, d, b, r in slots] for user, slots in counts.items()}


def period(summary: Summary) -> str:
    if not summary.first:
        return "no records"
    return f"{shown(summary.first)} to {shown(summary.last)}"


def text(summary: Summary, *, integrity: str = "", selection: str = "") -> str:
    def block(title: str, counter: Counter[str]) -> list[str]:
        return [title] + [f"  {k:<28} {v:>8}" for k, v in counter.most_common()]

    lines = [f"period: {period(summary)}" + (f" ({selection})" if selection else "")]
    lines += [f"agent {a.name}: started {a.starts}x, last {shown(a.last_start)}"
              + "".join(f", {k} {v}" for k, v in sorted(a.details.items())) for a in summary.agents.values()]
    if integrity:
        lines.append(f"integrity: {integrity}")
    lines.append(f"{summary.records} decisions")
    lines += block("per user", summary.per_user) + block("per action", summary.per_action)
    lines += block("per decision", summary.per_decision) + block("refusals by reason", summary.refusals)
    lines.append(f"break-glass uses: {summary.break_glass_count}")
    lines += [f"  {r['time'][:19]} {r['user']} {r['action'] or 'association'} {r['patient']} {r['detail']}"
              .rstrip() for r in summary.break_glass]
    lines.append(f"off-hours access ({summary.hours.describe()}): {summary.off_hours_count}")
    unusual = summary.unusual()
    lines.append("users touching unusually many patients: " + (", ".join(f"{u} ({c})" for u, c in unusual) or "none"))
    lines.append(f"writes cut short by a crash (torn tails sealed): {len(summary.truncations)}")
    lines += [f"  {r['time'][:19]} seq {r['seq']}: {r['detail']}" for r in summary.truncations]
    return "\n".join(lines)
