"""``decision-log report --html``: the security officer's page (one file, no script, renders offline).

Top to bottom: the period and selection, the site and its agents, the integrity status (what
``verify`` found), the totals, refusals by reason (each bar links to that reason's records, listed at
the end, each with an anchor), break-glass uses, users who touched unusually many patients, one
timeline per user (a refusal bar links to its record), access outside working hours, totals per user
and per action, writes a crash cut short, then the refused records by reason. Built from a
:class:`audit.report.Summary`; see :mod:`audit.page`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from .integrity import Integrity
from .page import Card, bars, cards, document, esc, long, meta, status, table, timeline
from .period import shown
from .report import LISTED, TIMELINES, Summary, period

HEADERS = ("time (UTC)", "user", "action", "patient", "study", "workstation", "decision", "detail")


def _cells(r: dict[str, Any], decision: bool) -> list[str]:
    cells = [f'<span class="t">{esc(shown(str(r["time"])[:26]))}</span>', esc(r["user"] or "-"),
             esc(r["action"] or "login"), long(r["patient"]), long(r["study"]),
             long(r["workstation"] or r["calling_ae"])]
    if decision:
        cells.append(f'<span class="{esc(r["decision"])}">{esc(r["decision"])}</span> {long(r["reason"])}')
    return [*cells, long(r["detail"])]


def _records(items: Iterable[dict[str, Any]], prefix: str, decision: bool = True) -> str:
    """Records as a table, each row with an anchor (``prefix-seq``); ``decision`` False under a heading
    that says it already (the refusals of one reason)."""
    headers = HEADERS if decision else HEADERS[:6] + HEADERS[7:]
    return table(headers, ((f"{prefix}-{r['seq']}" if isinstance(r["seq"], int) else "", _cells(r, decision))
                           for r in items))


def _more(shown_count: int, total: int, command: str) -> str:
    if total <= shown_count:
        return ""
    return f'<p class="note">{total - shown_count:,} more not listed here: <code>{esc(command)}</code></p>'


def _header(summary: Summary, selection: str, site: str, log: str) -> list[str]:
    sites = sorted({a.details["site"] for a in summary.agents.values() if a.details.get("site")})
    agents = "; ".join(
        f"<b>{esc(a.name)}</b> (started {a.starts}x, last {esc(shown(a.last_start))}"
        + "".join(f", {esc(k)} {esc(v)}" for k, v in sorted(a.details.items()) if k != "site") + ")"
        for a in summary.agents.values()) or "none started in this period (no application-start record)"
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    return [meta("Period", esc(period(summary))), meta("Selection", esc(selection or "every record")),
            meta("Site", esc(site or ", ".join(sites) or "not recorded (give --site)")),
            meta("Agents", agents), meta("Log", esc(log)), meta("Generated", esc(shown(now)))]


def _refused_records(summary: Summary) -> list[str]:
    """The drill-down: under each reason, its refusals (the bars of "Refusals by reason" link here)."""
    out = ["<h2>Refused records, by reason</h2>"]
    for n, (code, count) in enumerate(summary.refusals.most_common()):
        listed = summary.refused.get(code, [])
        out.append(f'<h3 id="reason-{n}">{long(code)}: {count:,} refusal(s)</h3>')
        command = f"decision-log search --decision deny --reason {code}"
        out.append(_records(listed, "r", decision=False) + _more(len(listed), count, command))
    return out


def _timelines(summary: Summary, anchors: dict[str, int]) -> list[str]:
    if not summary.timelines:
        return ["<h2>Per-user timelines</h2><p>none</p>"]
    rows = []
    for user, _ in summary.per_user.most_common(TIMELINES):
        refused = sum(b.denies for b in summary.timelines.get(user, []))
        rows.append((f"u-{anchors[user]}", [
            f"<b>{esc(user)}</b><br><span class='note'>{esc(summary.who.get(user, ''))}</span>",
            f"{summary.per_user[user]:,}", f"{refused:,}", f"{len(summary.patients_per_user.get(user, ())):,}",
            timeline(summary.timelines.get(user, []), f"activity of {user}")]))
    left = len(summary.per_user) - len(rows)
    return ["<h2>Per-user timelines</h2>",
            f'<p class="note">{esc(shown(summary.first))} (left) to {esc(shown(summary.last))} (right); '
            "permitted above the line (blue), refused below (red, links to the record), break-glass marked "
            "(orange); heights on a log scale</p>",
            table(("user", "decisions", "refused", "patients", "activity over the period"), rows),
            f'<p class="note">{left:,} less active user(s) not drawn</p>' if left > 0 else ""]


def _unusual(summary: Summary, anchors: dict[str, int]) -> list[str]:
    unusual = summary.unusual()
    rows = [("", [f'<a href="#u-{anchors[user]}">{esc(user)}</a>', f"{count:,}", f"{summary.threshold():.0f}"])
            for user, count in unusual if user in anchors]
    rows += [("", [esc(user), f"{count:,}", f"{summary.threshold():.0f}"]) for user, count in unusual
             if user not in anchors]
    return ["<h2>Users touching unusually many patients</h2>",
            '<p class="note">distinct patients permitted, above the median of all users + 3 x the median '
            "absolute deviation</p>", table(("user", "patients", "threshold"), rows)]


def html_page(summary: Summary, integrity: Integrity, *, title: str = "Decision log report", selection: str = "",
              site: str = "", log: str = "") -> str:
    anchors = {user: n for n, (user, _) in enumerate(summary.per_user.most_common())}
    permits, denies = summary.per_decision.get("permit", 0), summary.per_decision.get("deny", 0)
    patients = len(set().union(*summary.patients_per_user.values())) if summary.patients_per_user else 0
    body = [*_header(summary, selection, site, log), status(integrity), cards([
        Card(summary.records, "decisions", "decisions"), Card(permits, "permitted", "permitted"),
        Card(denies, "refused", "refused", alert=True), Card(summary.break_glass_count, "break-glass", "break-glass",
                                                             alert=True),
        Card(summary.off_hours_count, "off hours", "off-hours"), Card(len(summary.per_user), "users", "users"),
        Card(patients, "patients", "patients"), Card(len(summary.truncations), "writes cut short", "torn", alert=True),
    ])]
    body += ["<h2>Refusals by reason</h2>", bars([(code, count, f"#reason-{n}") for n, (code, count)
                                                  in enumerate(summary.refusals.most_common())], "deny")]
    body += ["<h2>Break-glass uses</h2>", _records(summary.break_glass, "b"),
             _more(len(summary.break_glass), summary.break_glass_count,
                   "decision-log alerts --format json (lists every break-glass use)")]
    body += _unusual(summary, anchors)
    body += _timelines(summary, anchors)
    body += [f"<h2>Access outside working hours ({esc(summary.hours.describe())})</h2>",
             _records(summary.off_hours, "o"), _more(len(summary.off_hours), summary.off_hours_count,
                   "decision-log search --since ... --until ... (a shorter period)")]
    body += ["<h2>Decisions per user</h2>",
             bars([(u, c, f"#u-{anchors[u]}" if u in summary.timelines else None)
                   for u, c in summary.per_user.most_common(LISTED)]),
             "<h2>Decisions per action</h2>", bars([(a, c, None) for a, c in summary.per_action.most_common()])]
    body += ["<h2>Writes cut short by a crash (torn tails sealed)</h2>",
             table(("time (UTC)", "seq", "what"), (("", [esc(shown(str(r["time"]))), esc(r["seq"]), esc(r["detail"])])
                                                   for r in summary.truncations))]
    return document(title, body + _refused_records(summary))
