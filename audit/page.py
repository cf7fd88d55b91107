"""One self-contained HTML page: the parts the report and the patient accounting are built from.

Everything a page shows comes from the log, and a log's values are hostile (a user name, an AE title,
a reason the PDP chose): every value goes through :func:`esc`, anchors are made of numbers only
(``r-123``), never of a value. The page has no script and loads nothing: its Content-Security-Policy
forbids both, so it renders the same offline, attached to an incident report, years later. Charts
are inline SVG and CSS; labels wrap, they are never cut.
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .integrity import Integrity

# No script, no request of any kind: whatever a value smuggled past escaping could not run or call home.
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
CSS = """
body{font-family:system-ui,"DejaVu Sans",sans-serif;margin:1.5em auto;max-width:90em;padding:0 1em;color:#222}
h1{font-size:1.5em;margin-bottom:.2em}h2{margin-top:1.6em;border-bottom:1px solid #ccc;padding-bottom:.2em}
.meta{color:#444;margin:.2em 0}.meta b{color:#222}
.cards{display:flex;flex-wrap:wrap;gap:.8em;margin:1em 0}
.card{border:1px solid #ccc;border-radius:6px;padding:.6em 1em;min-width:7em}
.card b{font-size:1.6em;display:block}.card.alert b{color:#a11}
.status{border-radius:6px;padding:.7em 1em;margin:1em 0;border:2px solid}
.status.intact{border-color:#2a7a2a;background:#eef8ee}.status.warning{border-color:#b07800;background:#fff7e0}
.status.broken{border-color:#a11;background:#fdecec}.status.unchecked{border-color:#777;background:#f3f3f3}
.status p{margin:.2em 0}.status .headline{font-weight:bold}
table{border-collapse:collapse;width:100%;margin:.5em 0}
td,th{border-bottom:1px solid #ddd;padding:.25em .5em;text-align:left;vertical-align:top}
.w{overflow-wrap:anywhere}
th{background:#f4f4f4}tr:target{background:#fff3b0}
td.n{text-align:right;white-space:nowrap}.t{white-space:nowrap}
.bar{height:1em;background:#3b6ea8;min-width:1px}.bar.deny{background:#b5472f}
.deny{color:#a11}.permit{color:#2a6a2a}.flag{color:#b06000;font-weight:bold}
.note{color:#555;font-size:.9em}svg{display:block}
@media print{.status,.card{break-inside:avoid}}
"""


def esc(value: Any) -> str:
    """A value from the log, safe as HTML text and inside a quoted attribute."""
    return html.escape("" if value is None else str(value), quote=True)


def long(value: Any) -> str:
    """A value that may be one long word (a UID, a PDP's reason code): it wraps anywhere, whole."""
    return f'<span class="w">{esc(value)}</span>'


def document(title: str, body: Iterable[str]) -> str:
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f'<meta name="viewport" content="width=device-width"><title>{esc(title)}</title>'
            f"<style>{CSS}</style></head><body><h1>{esc(title)}</h1>{''.join(body)}</body></html>")


def meta(label: str, value: str) -> str:
    """A line of the page's header: ``label: value`` (value already HTML)."""
    return f'<p class="meta"><b>{esc(label)}:</b> {value}</p>'


@dataclass(frozen=True, slots=True)
class Card:
    count: int
    label: str
    key: str  # data-count attribute: what a test (or a scraper) finds the number by
    alert: bool = False


def cards(items: Sequence[Card]) -> str:
    return '<div class="cards">' + "".join(
        f'<div class="card{" alert" if c.alert and c.count else ""}" data-count="{esc(c.key)}">'
        f"<b>{c.count:,}</b>{esc(c.label)}</div>" for c in items) + "</div>"


def status(integrity: Integrity) -> str:
    details = "".join(f"<p>{esc(line)}</p>" for line in integrity.details)
    return (f'<div class="status {esc(integrity.level)}" id="integrity"><p class="headline">'
            f"{esc(integrity.headline)}</p>{details}</div>")


def bars(rows: Sequence[tuple[str, int, str | None]], kind: str = "") -> str:
    """A bar chart as a table: the whole label (wrapping), a bar, the count; a label with an anchor
    links to the records behind it."""
    if not rows:
        return "<p>none</p>"
    top = max(count for _, count, _ in rows) or 1
    out = ['<table class="bars"><colgroup><col style="width:40%"><col style="width:50%"><col></colgroup>']
    for label, count, href in rows:
        text = f'<a href="{esc(href)}">{long(label)}</a>' if href else long(label)
        out.append(f'<tr><td>{text}</td><td><div class="bar {esc(kind)}" style="width:{100 * count / top:.1f}%">'
                   f'</div></td><td class="n">{count:,}</td></tr>')
    return "".join(out) + "</table>"


def table(headers: Sequence[str], rows: Iterable[tuple[str, Sequence[str]]]) -> str:
    """A table of records: each row is (its anchor id or "", its cells as HTML)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join(_row(anchor, cells) for anchor, cells in rows)
    return f"<table><tr>{head}</tr>{body}</table>" if body else "<p>none</p>"


def _row(anchor: str, cells: Sequence[str]) -> str:
    attribute = f' id="{esc(anchor)}"' if anchor else ""
    return f"<tr{attribute}>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>"


@dataclass(frozen=True, slots=True, kw_only=True)
class Bucket:
    """What one user did in one slice of the period (a timeline's column)."""

    permits: int = 0
    denies: int = 0
    break_glass: int = 0
    first_refusal: int | None = None  # seq of the first refusal in it, when the page lists that record


def timeline(buckets: Sequence[Bucket], label: str, width: int = 480, height: int = 30) -> str:
    """One user's activity over the period: permits up (blue), refusals down (red), break-glass marked
    (orange); bar heights on a log scale, so one access still shows beside a thousand. A refusal bar
    links to the first refusal of its slice."""
    step = width / max(len(buckets), 1)
    middle = height / 2
    top = max((max(b.permits, b.denies) for b in buckets), default=0) or 1
    scale = (middle - 2) / math.log1p(top)
    parts = [f'<svg role="img" aria-label="{esc(label)}" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">'
             f'<line x1="0" y1="{middle}" x2="{width}" y2="{middle}" stroke="#bbb" stroke-width="1"/>']
    for n, b in enumerate(buckets):
        x = n * step
        if b.permits:
            h = max(1.0, math.log1p(b.permits) * scale)
            parts.append(f'<rect x="{x:.1f}" y="{middle - h:.1f}" width="{max(step - 1, 1):.1f}" height="{h:.1f}" '
                         f'fill="#3b6ea8"><title>{b.permits} permitted</title></rect>')
        if b.denies:
            h = max(1.0, math.log1p(b.denies) * scale)
            bar = (f'<rect x="{x:.1f}" y="{middle:.1f}" width="{max(step - 1, 1):.1f}" height="{h:.1f}" '
                   f'fill="#b5472f"><title>{b.denies} refused</title></rect>')
            parts.append(f'<a href="#r-{b.first_refusal}">{bar}</a>' if b.first_refusal is not None else bar)
        if b.break_glass:
            parts.append(f'<path d="M{x:.1f} 0 h{max(step, 4):.1f} l-{max(step, 4) / 2:.1f} 6 z" fill="#e08000">'
                         f"<title>{b.break_glass} break-glass</title></path>")
    return "".join(parts) + "</svg>"


def write_private(path: Path, text: str) -> None:
    """Write a page that holds what the log holds: readable by its owner only, whatever the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        os.fchmod(out.fileno(), 0o600)
        out.write(text)
