"""What the clinician reads: every refusal and every failed login as one sentence and the next step.

The server agent's Error Comment starts with a reason code (:mod:`server_agent.refusals`, within VR
LO's 64 characters, PS3.5 6.2); here each code becomes a whole sentence. A comment without a known
code (another PACS, the relay core's own refusals) is shown as it came, with a general next step.
An A-ASSOCIATE-RJ carries no text at all, only result, source and reason (PS3.8 9.3.4): the server
agent tells an unauthenticated peer no more, on purpose; its codes are mapped here the same way.

Texts here are for people: no tracebacks, no Python names, times in local time.
"""

from __future__ import annotations

import datetime as dt
import errno
import re
from dataclasses import dataclass
from typing import Any

BREAK_GLASS = "ask for break-glass: dicom-agent launch --break-glass REASON -- APP [ARGS]"
HELP_DESK = "call the help desk"
LOG_IN_AGAIN = "your session ended: log in again (start the app again with dicom-agent launch)"

# Wire code -> (what happened, what to do). Every code of server_agent.refusals.CODES has its line.
REFUSALS: dict[str, tuple[str, str]] = {
    "NOT-IN-CARE": ("this patient is not in your care", f"if this is an emergency, {BREAK_GLASS}"),
    "CONSENT": ("the patient's consent does not allow this access",
                f"if this is an emergency, {BREAK_GLASS}; otherwise the patient's home organization can share it"),
    "ROLE": ("your role does not allow this", "if your work needs it, ask your department's access administrator"),
    "PATIENT-REQUIRED": ("your role may look at one patient in your care at a time",
                         "search again with that patient's Patient ID"),
    "SESSION-ENDED": ("your login is no longer valid", LOG_IN_AGAIN),
    "SCOPE": ("your login does not cover this service", "log in again; if it persists, " + HELP_DESK),
    "UNAVAILABLE": ("the access control service is unavailable right now",
                    f"try again in a few minutes; if it persists, {HELP_DESK}"),
    "UNREADABLE": ("the app's request could not be read one way only, so it was not sent",
                   f"{HELP_DESK} and name the app"),
    "UNSUPPORTED": ("this kind of request is not supported through the access control", f"{HELP_DESK}"),
    "NO-PATIENT-ID": ("the images carry no Patient ID that access control could check",
                      "have the Patient ID added to the images, or " + HELP_DESK),
    "DESTINATION": ("images may only be sent to an app on this workstation",
                    "choose one of this workstation's apps as the destination"),
    "CONDITION": ("the policy allows this only on a condition this site cannot meet", HELP_DESK),
    "DENIED": ("access control refused it", f"if you need this access, {HELP_DESK}"),
    "RESEARCH-KEY": ("your research view does not let you search by what identifies a patient (name, real "
                     "Patient ID, birth date, accession number)",
                     "search by the pseudonymous Patient ID or study UID your results show, or by study attributes"),
    "NOT-DEIDENT": ("this image may show the patient's identity in its pixels, so the research view leaves it out",
                    "ask your project's data steward if the project needs such images"),
    # Not ours: the PACS's own Error Comment follows, relayed by the server agent (server_agent.pacstext).
    "PACS": ("the PACS refused it", f"if you need this access, {HELP_DESK}"),
}
_CODE = re.compile(r"([A-Z][A-Z-]{1,15})(?::\s*(.*))?$", re.DOTALL)


@dataclass(frozen=True, slots=True, kw_only=True)
class Refusal:
    """One refusal the workstation agent relayed (or made), in words for the person refused."""

    app: str  # the app's AE title, as it called
    what: str  # "C-FIND", "the connection", ...
    reason: str  # what happened, a sentence fragment
    step: str  # what to do next
    detail: str = ""  # the server's own words, when it gave some

    def line(self) -> str:
        """The terminal line: ``dicom-agent: refused: FINDSCU's C-FIND: ...; what to do``."""
        detail = f" ({self.detail})" if self.detail else ""
        return f"dicom-agent: REFUSED {self.app} {self.what}: {self.reason}{detail}. Next step: {self.step}."


def printable(text: str, limit: int = 200) -> str:
    """A peer's words made safe for a terminal: no control characters (no escape sequences), one line,
    at most ``limit`` characters (VR LO allows 64, but a peer may send more)."""
    return " ".join("".join(c if c.isprintable() else " " for c in text[: limit * 2]).split())[:limit]


def from_comment(app: str, what: str, status: int, comment: str | None, failed: int = 0) -> Refusal:
    """A failure response's Status and Error Comment (PS3.7 C.4) in words; ``failed``: the sub-operations a
    C-GET or C-MOVE reports failed (a partial refusal, often B000H, which apps take as a warning). A comment
    under the code ``PACS`` is the PACS's own (:mod:`server_agent.pacstext`): labelled as such, never ours."""
    text = printable(comment or "")
    match = _CODE.match(text)
    code, words = (match.group(1), (match.group(2) or "").strip()) if match else (None, text)
    if code == "PACS":
        return _from_pacs(app, what, status, words, failed)
    if failed and not (status in _REFUSED or match):
        return Refusal(app=app, what=what, reason=_undelivered(failed), step=f"check which are missing; if you need "
                       f"them, {HELP_DESK}", detail=text)
    if code in REFUSALS:
        reason, step = REFUSALS[code]
        return Refusal(app=app, what=what, reason=reason, step=step, detail=words)
    if status in _REFUSED:
        reason, step = REFUSALS["DENIED"]
    else:
        reason, step = f"it failed with status {status:04X}H", f"try again; if it persists, {HELP_DESK}"
    return Refusal(app=app, what=what, reason=reason, step=step, detail=text)


_REFUSED = (0x0124, 0xA801, 0x0122)  # refused: not authorized / destination unknown / class not supported


def _undelivered(failed: int) -> str:
    return f"{failed} image(s) of it were not delivered (refused by access control or failed at the PACS)"


def _from_pacs(app: str, what: str, status: int, words: str, failed: int) -> Refusal:
    """The PACS's own failure: its words quoted as its (a quote of theirs cannot end ours early)."""
    detail = f'the PACS said: "{words.replace(chr(34), chr(39))}"' if words else ""
    if failed:
        return Refusal(app=app, what=what, reason=_undelivered(failed), step=f"check which are missing; if you "
                       f"need them, {HELP_DESK}", detail=detail)
    if status in _REFUSED:
        reason, step = REFUSALS["PACS"]
    else:
        reason, step = f"the PACS could not do it (status {status:04X}H)", f"try again; if it persists, {HELP_DESK}"
    return Refusal(app=app, what=what, reason=reason, step=step, detail=detail)


def from_reject(app: str, route: str, code: tuple[int, ...]) -> Refusal:
    """An A-ASSOCIATE-RJ from the server agent: result, source, reason (PS3.8 9.3.4, Table 9-21)."""
    result, source, reason = (*code, 0, 0, 0)[:3]
    what = "the connection"
    if source == 1 and reason == 7:
        return Refusal(app=app, what=what, reason=f"the server agent of route {route} knows no such PACS",
                       step="check the called AE title in the app's settings (PACS@ROUTE)")
    if source == 1 and reason == 3:
        return Refusal(app=app, what=what, reason=f"the server agent of route {route} does not recognize this "
                       "workstation", step=HELP_DESK)
    if source == 2 and result == 1:  # the server agent's authentication refusal (identity not accepted)
        return Refusal(app=app, what=what, reason="the server agent did not accept your login", step=LOG_IN_AGAIN)
    if result == 2:
        return Refusal(app=app, what=what, reason=f"the server agent of route {route} cannot take it right now",
                       step=f"try again in a minute; if it persists, {HELP_DESK}")
    return Refusal(app=app, what=what, reason=f"the server agent of route {route} refused it (result {result}, "
                   f"source {source}, reason {reason})", step=HELP_DESK)


def from_abort(app: str, route: str) -> Refusal:
    """An A-ABORT from the server agent's side (PS3.8 9.3.8): the association ended without a word."""
    return Refusal(app=app, what="the connection", reason=f"the server side of route {route} ended it",
                   step=f"if your session ended, log in again; otherwise try again, and if it persists, {HELP_DESK}")


def unreachable(app: str, route: str, where: str, why: str = "") -> Refusal:
    """The workstation agent could not open the route's connection (TCP, or TLS, PS3.15 B.12)."""
    if "CERTIFICATE" in why.upper():
        return Refusal(app=app, what="the connection", reason=f"the server agent of route {route} at {where} "
                       "did not prove who it is (its certificate is not trusted here, or ours is refused); "
                       "nothing was sent", step=HELP_DESK)
    return Refusal(app=app, what="the connection", reason=f"the server agent of route {route} at {where} cannot "
                   "be reached", step=f"check this computer's network connection; if it persists, {HELP_DESK}")


# ---- logins ------------------------------------------------------------------------------------------

_LOCKED = re.compile(r"^(?P<why>.*?):? locked until (?P<until>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)")


def local_time(stamp: str, now: dt.datetime | None = None) -> str:
    """An RFC 3339 UTC time as the clinician's clock shows it: ``14:32`` today, else with the date."""
    moment = dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).astimezone()
    today = (now or dt.datetime.now().astimezone()).date()
    return moment.strftime("%H:%M:%S") if moment.date() == today else moment.strftime("%Y-%m-%d %H:%M:%S")


def login_message(message: str, code: str, issuer: str, config: str) -> str:
    """A failed login (the provider's error, RFC 6749 5.2 / RFC 8628 3.5, or a transport failure) in words."""
    locked = _LOCKED.match(message)
    if locked:
        return (f"Your login is locked for now ({locked.group('why')}). Try again after "
                f"{local_time(locked.group('until'))} (local time), or ask the help desk to unlock it.")
    if "identity provider unreachable" in message:
        if "CERTIFICATE" in message.upper():
            return (f"The identity provider at {issuer} presented a certificate this computer does not trust. "
                    f"Nothing was sent. Check [identity_provider] ca_file in {config}, or {HELP_DESK}.")
        return (f"The identity provider at {issuer} cannot be reached. Check this computer's network connection "
                f"and the issuer address in {config}; if it persists, {HELP_DESK}.")
    if "answer refused" in message:
        return (f"The identity provider at {issuer} gave an answer that cannot be trusted. Check the issuer "
                f"address in {config}, or {HELP_DESK}.")
    if message == "invalid username or password":
        return ("Wrong user name or password. Check them (and Caps Lock) and try again; repeated failures lock "
                "the login for a while.")
    if message == "invalid one-time password":
        return ("The one-time code is wrong or was already used. Wait for the next code in your authenticator "
                "app and try again.")
    if code == "expired_token":
        return "The sign-in code expired before the sign-in was completed. Run the command again and sign in sooner."
    if code == "access_denied":
        return "The sign-in was declined in the browser. Run the command again to sign in."
    if message.startswith("break-glass refused"):
        return f"Break-glass was refused: {message.split(': ', 1)[-1]}. Ask your supervisor or the help desk."
    if message.endswith("expected on standard input"):
        return f"{message[0].upper()}{message[1:]}: give it on the line after the password."
    return f"The login failed: {message}. Try again; if it persists, {HELP_DESK}."


def os_message(error: OSError, config: Any) -> str:
    """A system error met by ``launch``/``login`` (a port taken, a file not readable), in words."""
    if error.errno == errno.EADDRINUSE:
        host, port = config.listen
        return (f"the agent's address {host}:{port} is taken by another program (is `dicom-agent serve` running? "
                "then start the app without launch); otherwise close that program, or call the help desk")
    where = f" ({error.filename})" if error.filename else ""
    return f"{error.strerror or error}{where}: check that it exists and is yours, or call the help desk"


__all__ = ["REFUSALS", "Refusal", "from_abort", "from_comment", "from_reject", "local_time", "login_message",
           "os_message", "unreachable"]
