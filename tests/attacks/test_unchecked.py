"""Issue 13, case 7: things that pass unchecked. Only what the standard allows reaches the PACS: a
request only on a presentation context that was accepted for the abstract syntax it names (PS3.8
9.3.5, PS3.7 9.1), a response only from the side that may send it, answering an outstanding request."""

from __future__ import annotations

import pytest

from devtools.site import Site

from .ring import OrthancLog, events, user_association, user_token
from .support import (
    CT_IMAGE_STORAGE,
    VERIFICATION,
    Proposal,
    find_rq,
    message,
    store_rsp,
    text,
    uid,
)

pytestmark = pytest.mark.e2e

IDENTIFIER = text(0x00080052, "STUDY") + text(0x00100020, "PAT-1") + uid(0x0020000D, "")
UNKNOWN_ABSTRACT_SYNTAX = "1.2.826.0.1.3680043.10.1447.404"  # no SOP class: Orthanc rejects the context


def test_find_on_a_context_not_accepted_for_it_never_reaches_orthanc(site: Site) -> None:
    """As rad, who may C-FIND PAT-1: only the presentation context makes these requests wrong.

    On 8c27d9f all three were permitted; Orthanc logged 'Bad presentation context ID' twice and ran the
    third.
    """
    token = user_token(site, "rad")
    proposals = (Proposal(id=1, abstract=VERIFICATION), Proposal(id=3, abstract=UNKNOWN_ABSTRACT_SYNTAX))
    seen = OrthancLog(site)
    outcomes = {}
    for calling, context in (("REJECTED@WS1", 3), ("UNPROPOSED@WS1", 5), ("VERIFYCTX@WS1", 1)):
        with user_association(site, token, calling, *proposals) as peer:
            peer.send(message(context, find_rq(1), IDENTIFIER))
            answers, ended = peer.responses()
        outcomes[calling] = ([hex(m.status or 0) for m in answers], ended)
    orthanc = seen.since()
    assert "Bad presentation context" not in orthanc, f"Orthanc received PDVs on contexts it never accepted: {outcomes}"
    assert "Find request from AET VERIFYCTX@WS1" not in orthanc, "Orthanc ran a C-FIND sent on the Verification context"
    for calling in outcomes:
        permits = events(site, event="authorization", calling_ae=calling, decision="permit")
        assert not permits, f"{calling}: the agent permitted a C-FIND on a context not accepted for it"


def test_response_sent_by_the_client_never_reaches_orthanc(site: Site) -> None:
    """On 8c27d9f Orthanc logged 'cannot handle command: 0x8001'."""
    seen = OrthancLog(site)
    with user_association(site, user_token(site, "rad"), "RSPCLIENT@WS1", Proposal(id=1, abstract=VERIFICATION),
                          Proposal(id=3, abstract=CT_IMAGE_STORAGE)) as peer:
        peer.send(message(3, store_rsp(1, "1.2.826.0.1.3680043.10.1447.77.1")))
        peer.read_message(1.0)  # an A-ABORT, or nothing: no response answers a response
    orthanc = seen.since()
    assert "cannot handle command: 0x8001" not in orthanc, "Orthanc received the client's C-STORE-RSP"
