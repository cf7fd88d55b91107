"""Issue 13, case 2: an id the client chooses, trusted. The Message ID distinguishes a message from the
others outstanding on the association (PS3.7 9.3.1, Annex E); the agent keyed the review of a C-FIND's
matches by it without checking that it was unique."""

from __future__ import annotations

import pytest

from devtools.site import Site

from .ring import REFDOC_MAY_SEE, events, user_association, user_token
from .support import STUDY_ROOT_FIND, VERIFICATION, Proposal, echo_rq, find_rq, message, text, uid

pytestmark = pytest.mark.e2e


def test_find_sharing_an_outstanding_echo_message_id_is_still_filtered(site: Site) -> None:
    """On 8c27d9f refdoc received every patient, unlogged: the echo's final response ended the review of
    Message ID 7."""
    identifier = text(0x00080052, "STUDY") + text(0x00100020, "*") + uid(0x0020000D, "")
    seen: set[str] = set()
    with user_association(site, user_token(site, "refdoc"), "SAMEID@WS1", Proposal(id=1, abstract=VERIFICATION),
                          Proposal(id=3, abstract=STUDY_ROOT_FIND)) as peer:
        # The first round warms the PDP decision cache: in the second the C-FIND is permitted at once,
        # before Orthanc's C-ECHO-RSP comes back, which is the order in which the hole opens.
        for _ in range(2):
            peer.send(message(1, echo_rq(7)) + message(3, find_rq(7), identifier))
            for _ in range(2):  # the echo's final response and the C-FIND's, whichever comes first
                answers, ended = peer.responses()
                seen |= {str(m.dataset().get("PatientID", "")) for m in answers if m.data}
                # Whether the association ends properly is case 5's business; a hang is not an answer.
                assert ended is None or ended.kind != "silence", "no answer to a request within 5 s"
                if ended is not None:
                    break
    assert seen <= REFDOC_MAY_SEE, f"refdoc received the matches of {sorted(seen - REFDOC_MAY_SEE)}"
    logged = {r["resource"].get("patient_id") for r in events(site, event="authorization", calling_ae="SAMEID@WS1",
                                                              decision="permit", post_filter=True)}
    assert seen <= logged, f"matches shown to refdoc without a logged decision: {sorted(seen - logged)}"
