"""``decision-log patient PATIENT-ID``: every access to one patient's data, the accounting of
disclosures a patient can ask for ("who accessed my images": HIPAA 45 CFR 164.528, GDPR art. 15).

An access is any decision record whose resource names the patient (``resource.patient_id``, and the
issuer when one is asked for): a request (C-FIND, C-MOVE, C-GET, C-STORE), a match of a wider query
shown to or withheld from the user (``post_filter``), an image sent for a C-MOVE or C-GET
(``sub_operation_of``), a transfer's summary; and a record without a Patient ID whose study is one
of this patient's (a retrieval that named the study alone). Each says who (user, roles,
organization), when, from which workstation, what, allowed or refused and why, and whether it was a
break-glass access.

De-identified disclosures (issue 16's research view): a permit whose PDP obligations include
``de-identify`` (or ``de-identify:...``), or any record marked ``"de_identified": true``, is listed as
one, with its ``project`` and ``profile`` when the record carries them. A record of a kind this
version does not know (``from_record`` reads None) is still listed when its resource names the
patient, read field by field: a later writer's new kind of disclosure is not left out of the
accounting.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from .events import AuthorizationEvent, TransferSummary, Who
from .fields import mapping, strings, text, whole
from .integrity import Integrity
from .page import Card, cards, document, esc, long, meta, status, table
from .period import Bound, instant, shown, within
from .reading import records
from .stored import Stored, read

CHAIN_RECORDS = frozenset({"file-start", "checkpoint"})
LISTED = 5000  # accesses a page lists (the counts are always whole)


@dataclass(frozen=True, slots=True, kw_only=True)
class Access:
    seq: int | None
    time: str  # canonical UTC
    user: str
    roles: str  # roles and organization, as the identity provider said
    workstation: str
    action: str
    kind: str  # request | query match | image of C-MOVE | transfer | <event kind>
    study: str
    what: str  # level, series, instance, destination: what else the record names
    decision: str  # permit | deny | "" (a transfer's summary)
    reason: str
    detail: str
    break_glass: bool = False
    de_identified: bool = False
    matched_by: str = "patient"  # or "study": the record names this patient's study, no Patient ID

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _who(user: Who | None) -> tuple[str, str]:
    if user is None:
        return "-", ""
    return user.username, ", ".join(filter(None, [", ".join(user.roles), user.organization]))


def _what(resource: Mapping[str, Any], destination: str = "") -> str:
    parts = [f"{text(resource.get('level'))} level" if text(resource.get("level")) else "",
             f"series {text(resource.get('series_instance_uid'))}" if resource.get("series_instance_uid") else "",
             f"instance {text(resource.get('sop_instance_uid'))}" if resource.get("sop_instance_uid") else "",
             f"accession {text(resource.get('accession_number'))}" if resource.get("accession_number") else "",
             f"to {destination}" if destination else ""]
    return ", ".join(filter(None, parts))


def _deidentified(obligations: Iterable[str], record: Mapping[str, Any]) -> tuple[bool, str]:
    marked = [o for o in obligations if o == "de-identify" or o.startswith("de-identify")]
    if not marked and record.get("de_identified") is not True:
        return False, ""
    extra = [f"{name} {text(record.get(name))}" for name in ("project", "profile") if text(record.get(name))]
    return True, "; ".join([*marked, *extra])


def access(stored: Stored, record: Mapping[str, Any], matched_by: str = "patient") -> Access | None:
    """The access a known event records (None for an event that touches no patient data)."""
    event = stored.event
    if not isinstance(event, AuthorizationEvent | TransferSummary):
        return None
    user, roles = _who(event.user)
    base = Access(seq=stored.seq, time=instant(stored.time), user=user, roles=roles, workstation=event.workstation,
                  action=event.action.value, kind="transfer", study=text(event.resource.get("study_instance_uid")),
                  what=_what(event.resource, event.move_destination), decision="", reason="", detail="",
                  matched_by=matched_by)
    if isinstance(event, TransferSummary):
        return replace(base, detail=f"{event.sub_operations} image(s) sent")
    kind = ("query match" if event.post_filter else f"image of {event.sub_operation_of.value}"
            if event.sub_operation_of is not None else "request")
    obligations = event.pdp.obligations if event.pdp is not None else ()
    de_identified, note = _deidentified(obligations, record)
    return replace(base, kind=kind, decision=event.decision.value, reason=event.reason_code,
                   detail="; ".join(filter(None, [event.detail, note])),
                   break_glass=event.pdp is not None and event.pdp.break_glass,
                   de_identified=de_identified and event.decision.value == "permit")


def unknown_access(record: Mapping[str, Any], matched_by: str = "patient") -> Access:
    """A record of a kind this version does not know, read field by field (never raises)."""
    resource = mapping(record.get("resource"))
    user = Who.from_record(record.get("user"))
    name, roles = _who(user)
    de_identified, note = _deidentified(strings(record.get("obligations")), record)
    return Access(seq=whole(record.get("seq")), time=instant(text(record.get("time"))), user=name, roles=roles,
                  workstation=text(record.get("workstation")), action=text(record.get("action")),
                  kind=text(record.get("event")) or "?", study=text(resource.get("study_instance_uid")),
                  what=_what(resource, text(record.get("move_destination"))), decision=text(record.get("decision")),
                  reason=text(record.get("reason")), detail="; ".join(filter(None, [text(record.get("detail")), note])),
                  break_glass=record.get("break_glass") is True, de_identified=de_identified, matched_by=matched_by)


def _names(record: Mapping[str, Any], patient: str, issuer: str | None) -> bool:
    resource = mapping(record.get("resource"))
    if text(resource.get("patient_id")) != patient:
        return False
    written = text(resource.get("patient_id_issuer"))
    return issuer is None or not written or written == issuer


def accesses(log: Path, patient: str, *, issuer: str | None = None, since: Bound | None = None,
             until: Bound | None = None) -> list[Access]:
    """Every access to ``patient`` in the period, in log order (two passes: the second finds records
    that name one of the patient's studies and no Patient ID)."""
    found: list[Access] = []
    studies: set[str] = set()
    for record in _in_period(records(log), since, until):
        if _names(record, patient, issuer):
            item = _access(record, "patient")
            if item is not None:
                found.append(item)
                if item.study:
                    studies.add(item.study)
    if studies:
        for record in _in_period(records(log), since, until):
            resource = mapping(record.get("resource"))
            if not text(resource.get("patient_id")) and text(resource.get("study_instance_uid")) in studies:
                item = _access(record, "study")
                if item is not None:
                    found.append(item)
    found.sort(key=lambda a: (a.seq if a.seq is not None else -1))
    return found


def _in_period(source: Iterable[dict[str, Any]], since: Bound | None, until: Bound | None
               ) -> Iterator[dict[str, Any]]:
    for record in source:
        if text(record.get("event")) not in CHAIN_RECORDS and within(instant(text(record.get("time"))), since, until):
            yield record


def _access(record: dict[str, Any], matched_by: str) -> Access | None:
    stored = read(record)
    if stored is None:
        return unknown_access(record, matched_by)
    return access(stored, record, matched_by)


# ---- what a reader sees ----------------------------------------------------------------------------------


def counts(found: list[Access]) -> dict[str, int]:
    return {"accesses": len(found), "permitted": sum(a.decision == "permit" for a in found),
            "refused": sum(a.decision == "deny" for a in found), "users": len({a.user for a in found}),
            "break-glass": sum(a.break_glass for a in found), "de-identified": sum(a.de_identified for a in found),
            "images": sum(a.kind.startswith("image of") and a.decision == "permit" for a in found)}


def _flags(a: Access) -> str:
    return ", ".join(filter(None, ["BREAK-GLASS" if a.break_glass else "", "de-identified" if a.de_identified else "",
                                   "by study" if a.matched_by == "study" else ""]))


def text_lines(patient: str, found: list[Access], integrity: Integrity) -> list[str]:
    c = counts(found)
    lines = [f"accesses to patient {patient}: {c['accesses']} ({c['permitted']} permitted, {c['refused']} refused) "
             f"by {c['users']} user(s); break-glass {c['break-glass']}; de-identified disclosures "
             f"{c['de-identified']}", f"integrity: {integrity.headline}"]
    for a in found:
        lines.append(f"{shown(a.time)}  {a.user:<12} {a.workstation or '-':<8} {a.action:<8} {a.kind:<16} "
                     f"{a.decision or '-':<6} {a.reason or '-':<22} {a.study or '-'}"
                     + (f"  [{_flags(a)}]" if _flags(a) else "") + (f"  {a.detail}" if a.detail else ""))
    return lines


def html_page(patient: str, found: list[Access], integrity: Integrity, *, period: str, log: str) -> str:
    c = counts(found)
    users: dict[str, list[Access]] = {}
    for a in found:
        users.setdefault(a.user, []).append(a)
    per_user = [("", [f"<b>{esc(u)}</b><br><span class='note'>{esc(items[-1].roles)}</span>",
                      long(", ".join(sorted({i.workstation for i in items if i.workstation}))),
                      esc(shown(items[0].time)), esc(shown(items[-1].time)),
                      *(f"{n:,}" for n in (sum(i.decision == "permit" for i in items),
                                           sum(i.decision == "deny" for i in items),
                                           sum(i.break_glass for i in items), sum(i.de_identified for i in items)))])
                for u, items in users.items()]
    rows = [(f"a-{a.seq}" if a.seq is not None else "", [
        f'<span class="t">{esc(shown(a.time))}</span>', f"<b>{esc(a.user)}</b><br><span class='note'>"
        f"{esc(a.roles)}</span>", long(a.workstation), f"{esc(a.action)}<br><span class='note'>{esc(a.kind)}</span>",
        long(a.study), f'<span class="{esc(a.decision)}">{esc(a.decision or "-")}</span> {long(a.reason)}',
        f'<span class="flag">{esc(_flags(a))}</span>', long(a.what), long(a.detail)]) for a in found[:LISTED]]
    body = [meta("Patient", f"<b>{esc(patient)}</b>"), meta("Period", esc(period)), meta("Log", esc(log)),
            status(integrity),
            cards([Card(c["accesses"], "accesses", "accesses"), Card(c["permitted"], "permitted", "permitted"),
                   Card(c["refused"], "refused", "refused", alert=True), Card(c["users"], "users", "users"),
                   Card(c["break-glass"], "break-glass", "break-glass", alert=True),
                   Card(c["de-identified"], "de-identified disclosures", "de-identified"),
                   Card(c["images"], "images sent", "images")]),
            "<h2>Who accessed this patient's data</h2>",
            table(("user", "workstations", "first", "last", "permitted", "refused", "break-glass", "de-identified"),
                  per_user),
            "<h2>Every access</h2>",
            table(("time (UTC)", "user", "workstation", "action", "study", "decision", "flags", "what", "detail"),
                  rows)]
    if len(found) > LISTED:
        body.append(f'<p class="note">{len(found) - LISTED:,} more: decision-log patient {esc(patient)} (text) '
                    "or --json</p>")
    return document(f"Accesses to patient {patient}", body)
