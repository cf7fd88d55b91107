"""``decision-log report``: what a reviewer reads first, as text or as one self-contained HTML page.

Totals per user, per action and per decision; refusals by reason; break-glass uses; access outside
working hours; users who touched unusually many patients; writes a crash cut short (torn tails the
writer sealed). Charts are inline SVG drawn here (no script, no CDN), so the page renders offline and
can be attached to an incident report. Every number comes from the same selection ``decision-log
search`` makes (same filters, same events), read through :mod:`audit.events`.
"""

from __future__ import annotations

import html
import statistics
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .events import AuthenticationEvent, AuthorizationEvent, Decision, LogTruncated, Stored
from .rows import one_patient, row

WORK_HOURS = range(7, 19)  # 07:00-18:59 UTC counts as working hours


@dataclass
class Summary:
    records: int = 0
    per_user: Counter[str] = field(default_factory=Counter)
    per_action: Counter[str] = field(default_factory=Counter)
    per_decision: Counter[str] = field(default_factory=Counter)
    refusals: Counter[str] = field(default_factory=Counter)
    break_glass: list[dict[str, Any]] = field(default_factory=list)
    off_hours: list[dict[str, Any]] = field(default_factory=list)
    patients_per_user: dict[str, set[str]] = field(default_factory=dict)
    truncations: list[dict[str, Any]] = field(default_factory=list)  # torn tails sealed (a crash mid-write)

    def unusual(self) -> list[tuple[str, int]]:
        """Users whose distinct patients exceed the median + 3 x (median absolute deviation, at least 1)."""
        counts = {u: len(p) for u, p in self.patients_per_user.items()}
        if len(counts) < 2:
            return []
        median = statistics.median(counts.values())
        spread = max(1.0, statistics.median(abs(c - median) for c in counts.values()))
        return sorted(((u, c) for u, c in counts.items() if c > median + 3 * spread), key=lambda x: -x[1])


def summarize(selected: Iterable[Stored]) -> Summary:
    summary = Summary()
    for stored in selected:
        event = stored.event
        if isinstance(event, LogTruncated):
            summary.truncations.append(row(stored))
        if not isinstance(event, AuthenticationEvent | AuthorizationEvent):
            continue
        flat = row(stored)
        summary.records += 1
        user = flat["user"] or "-"
        summary.per_user[user] += 1
        summary.per_action[flat["action"] or "login"] += 1
        summary.per_decision[event.decision.value] += 1
        if event.decision is Decision.DENY:
            summary.refusals[event.reason_code or "-"] += 1
        if flat["break_glass"]:
            summary.break_glass.append(flat)
        when = stored.time
        hour = int(when[11:13]) if len(when) > 13 and when[11:13].isdigit() else 12
        if hour not in WORK_HOURS and isinstance(event, AuthorizationEvent):
            summary.off_hours.append(flat)
        patient = one_patient(event.resource) if isinstance(event, AuthorizationEvent) else ""
        if patient and event.decision is Decision.PERMIT:
            summary.patients_per_user.setdefault(user, set()).add(patient)
    return summary


def text(summary: Summary) -> str:
    def block(title: str, counter: Counter[str]) -> list[str]:
        return [title] + [f"  {k:<28} {v:>8}" for k, v in counter.most_common()]

    lines = [f"{summary.records} decisions"]
    lines += block("per user", summary.per_user) + block("per action", summary.per_action)
    lines += block("per decision", summary.per_decision) + block("refusals by reason", summary.refusals)
    lines.append(f"break-glass uses: {len(summary.break_glass)}")
    lines += [f"  {r['time'][:19]} {r['user']} {r['action'] or 'association'} {r['patient']} {r['detail']}".rstrip()
              for r in summary.break_glass]
    lines.append(f"off-hours access: {len(summary.off_hours)}")
    unusual = summary.unusual()
    lines.append("users touching unusually many patients: " + (", ".join(f"{u} ({c})" for u, c in unusual) or "none"))
    lines.append(f"writes cut short by a crash (torn tails sealed): {len(summary.truncations)}")
    lines += [f"  {r['time'][:19]} seq {r['seq']}: {r['detail']}" for r in summary.truncations]
    return "\n".join(lines)


def _bars(title: str, counter: Counter[str], colour: str = "#3b6ea8") -> str:
    items = counter.most_common(15)
    if not items:
        return f"<h2>{html.escape(title)}</h2><p>none</p>"
    width, bar, gap, label = 640, 22, 6, 190
    top = max(v for _, v in items)
    height = len(items) * (bar + gap)
    parts = [f'<svg role="img" aria-label="{html.escape(title)}" width="{width}" height="{height}" '
             f'xmlns="http://www.w3.org/2000/svg" font-family="sans-serif" font-size="13">']
    for n, (key, value) in enumerate(items):
        y = n * (bar + gap)
        length = int((width - label - 60) * value / top)
        parts.append(f'<text x="{label - 8}" y="{y + 16}" text-anchor="end">{html.escape(str(key))[:28]}</text>')
        parts.append(f'<rect x="{label}" y="{y}" width="{max(length, 1)}" height="{bar}" fill="{colour}"/>')
        parts.append(f'<text x="{label + length + 6}" y="{y + 16}">{value}</text>')
    parts.append("</svg>")
    return f"<h2>{html.escape(title)}</h2>" + "".join(parts)


def html_page(summary: Summary, title: str) -> str:
    def rows(items: list[dict[str, Any]], why: bool = False) -> str:
        return "".join(f"<tr><td>{html.escape(str(r['time'])[:19])}</td><td>{html.escape(str(r['user']))}</td>"
                       f"<td>{html.escape(str(r['action'] or 'association'))}</td>"
                       f"<td>{html.escape(str(r['patient']))}</td><td>{html.escape(str(r['workstation']))}</td>"
                       + (f"<td>{html.escape(str(r['detail']))}</td>" if why else "") + "</tr>" for r in items[:200])

    head = "<tr><th>time (UTC)</th><th>user</th><th>action</th><th>patient</th><th>workstation</th></tr>"
    why_head = head.replace("</tr>", "<th>why</th></tr>")  # break-glass: the reason the user gave
    unusual = summary.unusual()
    permits = summary.per_decision.get("permit", 0)
    denies = summary.per_decision.get("deny", 0)
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:60em}}.cards{{display:flex;gap:1em}}
.card{{border:1px solid #ccc;border-radius:6px;padding:.8em 1.2em}}.card b{{font-size:1.6em;display:block}}
table{{border-collapse:collapse}}td,th{{border-bottom:1px solid #ddd;padding:.2em .6em;text-align:left}}
.alert{{color:#a00}}</style></head><body><h1>{html.escape(title)}</h1>
<div class="cards"><div class="card"><b>{summary.records}</b>decisions</div>
<div class="card"><b>{permits}</b>permitted</div><div class="card"><b>{denies}</b>refused</div>
<div class="card"><b class="alert">{len(summary.break_glass)}</b>break-glass</div>
<div class="card"><b>{len(summary.off_hours)}</b>off hours</div></div>
{_bars("Decisions per user", summary.per_user)}
{_bars("Decisions per action", summary.per_action)}
{_bars("Refusals by reason", summary.refusals, "#b5472f")}
<h2>Break-glass uses</h2><table>{why_head}{rows(summary.break_glass, why=True)}</table>
<h2>Users touching unusually many patients</h2>
<p>{", ".join(f"{html.escape(u)} ({c} patients)" for u, c in unusual) or "none"}</p>
<h2>Access outside working hours (before 07:00 or from 19:00 UTC)</h2><table>{head}{rows(summary.off_hours)}</table>
<h2 class="{'alert' if summary.truncations else ''}">Writes cut short by a crash (torn tails sealed)</h2>
<p>{"".join(f"{html.escape(str(r['time'])[:19])} seq {r['seq']}: {html.escape(str(r['detail']))}<br>"
            for r in summary.truncations) or "none"}</p>
</body></html>"""
