"""The Error Comment of a refusal: a reason code, then the start of the reason, whole words only.

Error Comment (0000,0902) is VR LO: at most 64 characters (PS3.5 6.2, PS3.7 C.4). A reason such as
``patient consent 1.3.6.1.4.1.21367.2026.1.1 (Share only within my home organization) denies this
access`` does not fit; cut anywhere it reads wrong (``... (Shar``). So the comment starts with a
short code from the closed vocabulary below, which the workstation agent's wrapper maps to a whole
sentence for the clinician (:mod:`agent.messages`), followed by as much of the reason as fits, cut
at a word boundary (:func:`dicomwire.dimse.error_comment`). An app that shows the comment shows a
short, whole text; the wrapper shows the full sentence and what to do.

The codes are a contract between the two agents, like HTTP status codes: a code is never reused
for another meaning; ``tests/agent/test_messages.py`` checks every code here has its sentence there.

The PACS's own Error Comments are free text from a peer: one reading ``SESSION-ENDED: call x4444``
would be worded by the wrapper as this agent's refusal. So every Error Comment of a PACS's final
response is relayed under the code :data:`PACS` (:func:`relayed_comment`, :mod:`server_agent.pacstext`):
the PACS's words can never parse as one of our codes, and the wrapper labels them as the PACS's.
"""

from __future__ import annotations

from audit.events import Reason
from dicomwire.dimse import MAX_ERROR_COMMENT, error_comment

# Wire codes: upper-case letters and hyphens, at most 16 characters (their own grammar in the
# wrapper: ``^[A-Z][A-Z-]{1,15}: ``).
NOT_IN_CARE = "NOT-IN-CARE"
CONSENT = "CONSENT"
ROLE = "ROLE"
PATIENT_REQUIRED = "PATIENT-REQUIRED"
SESSION_ENDED = "SESSION-ENDED"
SCOPE = "SCOPE"
UNAVAILABLE = "UNAVAILABLE"
UNREADABLE = "UNREADABLE"
UNSUPPORTED = "UNSUPPORTED"
NO_PATIENT_ID = "NO-PATIENT-ID"
DESTINATION = "DESTINATION"
CONDITION = "CONDITION"
DENIED = "DENIED"
RESEARCH_KEY = "RESEARCH-KEY"  # a research view's query matched on what identifies a patient
NOT_DEIDENTIFIABLE = "NOT-DEIDENT"  # an image the research view cannot be made of (identity in its pixels)
PACS = "PACS"  # no refusal of ours: what follows is the PACS's own Error Comment, relayed

CODES = frozenset({NOT_IN_CARE, CONSENT, ROLE, PATIENT_REQUIRED, SESSION_ENDED, SCOPE, UNAVAILABLE, UNREADABLE,
                   UNSUPPORTED, NO_PATIENT_ID, DESTINATION, CONDITION, DENIED, RESEARCH_KEY, NOT_DEIDENTIFIABLE,
                   PACS})

# The PDP's own reason codes (hial_mock/policy.py; an AuthZEN PDP's ``context.reason``).
_PDP = {
    "no_care_relationship": NOT_IN_CARE,
    "consent_denied": CONSENT,
    "no_role": ROLE,
    "action_not_permitted": ROLE,
    "not_identifiable": ROLE,
    "patient_required": PATIENT_REQUIRED,
    "unknown_action": UNSUPPORTED,
}

# The agent's own reasons (audit.events.Reason) for refusing a request.
_AGENT = {
    Reason.TOKEN_INVALID: SESSION_ENDED,
    Reason.TOKEN_INACTIVE: SESSION_ENDED,
    Reason.TOKEN_REJECTED: SESSION_ENDED,
    Reason.IDENTITY_MISSING: SESSION_ENDED,
    Reason.INSUFFICIENT_SCOPE: SCOPE,
    Reason.NODE_ACTION_NOT_PERMITTED: ROLE,
    Reason.PDP_UNAVAILABLE: UNAVAILABLE,
    Reason.PROVIDER_UNAVAILABLE: UNAVAILABLE,
    Reason.INTROSPECTION_FAILED: UNAVAILABLE,
    Reason.DECISION_LOG_UNAVAILABLE: UNAVAILABLE,
    Reason.DECISION_TIMEOUT: UNAVAILABLE,
    Reason.POLICY_ERROR: UNAVAILABLE,
    Reason.OVERLOADED: UNAVAILABLE,
    Reason.MALFORMED: UNREADABLE,
    Reason.UNSUPPORTED_SERVICE: UNSUPPORTED,
    Reason.PATIENT_UNKNOWN: NO_PATIENT_ID,
    Reason.NO_PATIENT_ID_TO_CHECK: NO_PATIENT_ID,
    Reason.MOVE_DESTINATION_NOT_ALLOWED: DESTINATION,
    Reason.OBLIGATION_NOT_UNDERSTOOD: CONDITION,
    Reason.SHARED_STATE_UNAVAILABLE: UNAVAILABLE,
    Reason.PSEUDONYMIZER_UNAVAILABLE: UNAVAILABLE,
    Reason.IDENTIFYING_KEY: RESEARCH_KEY,
    Reason.NOT_DEIDENTIFIABLE: NOT_DEIDENTIFIABLE,
}


def refusal_code(reason: Reason | None, pdp_reason: str = "") -> str:
    """The wire code for a refusal: the PDP's reason when the PDP decided, else the agent's own."""
    if reason is Reason.PDP:
        return _PDP.get(pdp_reason, DENIED)
    return _AGENT.get(reason, DENIED) if reason is not None else DENIED


def refusal_comment(text: str, reason: Reason | None = None, pdp_reason: str = "") -> str:
    """``CODE: reason`` within VR LO's 64 characters (PS3.5 6.2): a reason too long is cut at a word
    boundary and ends in ``...``, so that nobody takes its start for the whole."""
    return coded(refusal_code(reason, pdp_reason), text)


def relayed_comment(text: str) -> str:
    """A PACS's Error Comment as relayed to the workstation: ``PACS: its words`` (PS3.7 C.4), cut as
    :func:`refusal_comment` cuts, so that no PACS text reads as one of our codes."""
    return coded(PACS, text)


def coded(code: str, text: str) -> str:
    """``code: text`` as an Error Comment: printable ASCII, no backslash, at most 64 characters."""
    whole = error_comment(f"{code}: {text}" if text else code)
    clean = " ".join("".join(c if " " <= c <= "~" and c != "\\" else " " for c in text).split())
    if not clean or len(whole) >= len(code) + 2 + len(clean):
        return whole  # it fits
    room = MAX_ERROR_COMMENT - len(code) - len(": ...")
    head = clean[: room + 1]
    cut = head.rsplit(" ", 1)[0] if " " in head else clean[:room]
    return f"{code}: {cut.rstrip(' ,;:(')}..."


__all__ = ["CODES", "PACS", "coded", "refusal_code", "refusal_comment", "relayed_comment"]
