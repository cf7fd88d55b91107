"""``decision-log alerts``: what a SIEM should hear about, read from the decision log as it grows.

Three alerts, each raised by the record that crosses the line and timed by the records' own clock
(the same log read twice raises the same alerts):

- ``break-glass``: an access the PDP allowed as an emergency override (purpose of use BTG; PS3.15
  A.5.3 110127 Emergency Override); once per user, patient and association.
- ``refusal-burst``: ``burst`` refusals for one user, or from one source (the peer's address for a
  refused association, the workstation for a refused request), within ``burst_window`` seconds. A
  match a wider query withheld (post-filter) is the policy at work, not a refusal of the user.
- ``unusual-volume``: one user permitted access to more than ``volume`` distinct patients within
  ``volume_window`` seconds.

After an alert its counter starts again: a burst of fifty refusals raises ten alerts of five, not
one per refusal. Memory is bounded whatever the log holds: each counter keeps at most its threshold
plus one entries, and at most :data:`MAX_KEYS` users, sources or break-glass keys are tracked (the
least recently seen is forgotten first).

Output: JSON lines, or RFC 5424 syslog messages (MSGID the alert's kind, the facts as STRUCTURED-DATA
under :data:`SD_ID`, a sentence as MSG) for stdout or a UDP/TLS target (:mod:`audit.syslog`).
"""

from __future__ import annotations

import datetime as dt
import socket
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

import orjson

from .events import AuthenticationEvent, AuthorizationEvent, Decision
from .period import instant
from .rows import one_patient
from .stored import Stored
from .syslog import NOTICE, WARNING, plain, rfc5424, structured_data

MAX_KEYS = 10_000
# RFC 5424 7.2.2: an SD-ID of our own is NAME@<private enterprise number>. 32473 is the number RFC 5612
# sets aside for documentation; a site that registers its own gives it with --sd-id.
SD_ID = "decision-log@32473"
APP = "decision-log"


@dataclass(frozen=True, slots=True, kw_only=True)
class Thresholds:
    burst: int = 5
    burst_window: float = 300.0
    volume: int = 50
    volume_window: float = 3600.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Alert:
    kind: str  # break-glass | refusal-burst | unusual-volume
    time: str  # canonical UTC time of the record that raised it
    severity: int  # syslog severity (RFC 5424 6.2.1)
    message: str
    facts: dict[str, Any] = field(default_factory=dict)

    def json(self) -> bytes:
        return orjson.dumps({"alert": self.kind, "time": self.time,
                             "severity": "warning" if self.severity == WARNING else "notice",
                             "message": self.message, **self.facts})

    def syslog(self, *, hostname: str | None = None, sd_id: str = SD_ID) -> bytes:
        when = dt.datetime.fromisoformat(self.time) if self.time else None
        return rfc5424(plain(self.message).encode(), APP, hostname or socket.gethostname(), when, msgid=self.kind,
                       severity=self.severity, structured=structured_data(sd_id, self.facts))


class _Recent(OrderedDict[Any, Any]):
    """A dict that forgets its least recently used keys beyond :data:`MAX_KEYS`."""

    def touch(self, key: Any, default: Any) -> Any:
        if key in self:
            self.move_to_end(key)
        else:
            self[key] = default
            if len(self) > MAX_KEYS:
                self.popitem(last=False)
        return self[key]


class Detector:
    """Feed it stored events in log order; it returns the alerts each one raises."""

    def __init__(self, thresholds: Thresholds | None = None) -> None:
        self.limits = thresholds or Thresholds()
        self._refusals: _Recent = _Recent()  # (scope, name) -> deque of (seconds, seq, reason)
        self._patients: _Recent = _Recent()  # user -> OrderedDict patient -> seconds
        self._overrides: _Recent = _Recent()  # (user, patient, association) seen

    def feed(self, stored: Stored) -> list[Alert]:
        event = stored.event
        if not isinstance(event, AuthenticationEvent | AuthorizationEvent):
            return []
        when = instant(stored.time)
        seconds = dt.datetime.fromisoformat(when).timestamp() if when else None
        alerts: list[Alert] = []
        if isinstance(event, AuthorizationEvent) and event.pdp is not None and event.pdp.break_glass:
            alerts += self._break_glass(stored, event, when)
        if seconds is None:
            return alerts  # no time to count it in a window by
        if event.decision is Decision.DENY and not (isinstance(event, AuthorizationEvent) and event.post_filter):
            alerts += self._refused(stored, event, when, seconds)
        if isinstance(event, AuthorizationEvent) and event.decision is Decision.PERMIT and event.user is not None:
            patient = one_patient(event.resource)
            if patient:
                alerts += self._volume(event.user.username, patient, stored, when, seconds)
        return alerts

    def _break_glass(self, stored: Stored, event: AuthorizationEvent, when: str) -> list[Alert]:
        user = event.user.username if event.user is not None else "-"
        patient = one_patient(event.resource) or str(event.resource.get("patient_id", ""))
        key = (user, patient, event.association)
        if key in self._overrides:
            return []
        self._overrides.touch(key, True)
        return [Alert(kind="break-glass", time=when, severity=WARNING,
                      message=f"break-glass: {user} {event.action.value} patient {patient or '-'} from "
                              f"{event.workstation or event.calling_ae or '-'} ({event.decision.value})",
                      facts={"user": user, "patient": patient, "action": event.action.value,
                             "workstation": event.workstation, "decision": event.decision.value,
                             "association": event.association, "seq": stored.seq or 0})]

    def _refused(self, stored: Stored, event: AuthenticationEvent | AuthorizationEvent, when: str,
                 seconds: float) -> list[Alert]:
        keys = []
        if event.user is not None:
            keys.append(("user", event.user.username))
        if isinstance(event, AuthenticationEvent):
            source = event.peer.rsplit(":", 1)[0] if ":" in event.peer else event.peer
            keys.append(("source", source or event.calling_ae))
        else:
            keys.append(("workstation", event.workstation or event.calling_ae))
        alerts = []
        for scope, name in keys:
            if not name:
                continue
            recent: deque[tuple[float, int, str]] = self._refusals.touch((scope, name), deque(maxlen=self.limits.burst))
            recent.append((seconds, stored.seq or 0, event.reason_code))
            if len(recent) == self.limits.burst and seconds - recent[0][0] <= self.limits.burst_window:
                reasons = sorted({reason for _, _, reason in recent})
                alerts.append(Alert(
                    kind="refusal-burst", time=when, severity=WARNING,
                    message=f"refusal burst: {len(recent)} refusals for {scope} {name} within "
                            f"{seconds - recent[0][0]:.0f} s ({', '.join(reasons)})",
                    facts={scope: name, "count": len(recent), "window_s": int(self.limits.burst_window),
                           "reasons": ",".join(reasons), "first_seq": recent[0][1], "seq": stored.seq or 0}))
                recent.clear()
        return alerts

    def _volume(self, user: str, patient: str, stored: Stored, when: str, seconds: float) -> list[Alert]:
        seen: OrderedDict[str, float] = self._patients.touch(user, OrderedDict())
        seen[patient] = seconds
        seen.move_to_end(patient)
        while seen and seconds - next(iter(seen.values())) > self.limits.volume_window:
            seen.popitem(last=False)
        if len(seen) <= self.limits.volume:
            return []
        count = len(seen)
        seen.clear()
        return [Alert(kind="unusual-volume", time=when, severity=NOTICE,
                      message=f"unusual volume: {user} accessed {count} patients within "
                              f"{self.limits.volume_window:.0f} s (threshold {self.limits.volume})",
                      facts={"user": user, "patients": count, "window_s": int(self.limits.volume_window),
                             "threshold": self.limits.volume, "seq": stored.seq or 0})]
