"""Issue 13, case 5: exceptions escaping the core. Whatever a peer sends, the agent answers with the
standard answer (a refusal status, PS3.7 C.5; an A-ABORT, PS3.8 9.3.8; an A-ASSOCIATE-RJ, 9.3.4)
within seconds, and its slot is free for the next association."""

from __future__ import annotations

import pytest

from devtools.site import Site

from .ring import user_association, user_token
from .support import (
    C_FIND_RQ,
    C_STORE_RQ,
    CT_IMAGE_STORAGE,
    PENDING,
    STUDY_ROOT_FIND,
    VERIFICATION,
    Ended,
    Message,
    Peer,
    Proposal,
    associate_rq,
    echo_rq,
    find_rq,
    jwt_identity,
    message,
    store_rq,
    text,
    tls_client,
)

pytestmark = pytest.mark.e2e

ANSWER_WITHIN = 5.0  # seconds: an agent that answers takes milliseconds; silence this long is a hang
IDENTIFIER = text(0x00080052, "STUDY") + text(0x00100020, "PAT-1")


def answer_kind(got: Message | Ended, request_field: int) -> str:
    """``refused`` for a failure response to the request (never Success or Pending), ``abort`` for an
    A-ABORT; anything else (silence, a connection closed without A-ABORT) is named as it came."""
    if isinstance(got, Message):
        refused = got.field == request_field | 0x8000 and got.status not in (0x0000, *PENDING)
        return "refused" if refused else f"command 0x{got.field or 0:04x} status {got.status}"
    return got.kind


def assert_next_association_works(site: Site, token: str) -> None:
    with user_association(site, token, "AFTER@WS1", Proposal(id=1, abstract=VERIFICATION)) as peer:
        peer.send(message(1, echo_rq(1)))
        echo = peer.read_message()
        assert isinstance(echo, Message) and echo.status == 0x0000, f"the next association's C-ECHO: {echo}"


def test_refused_requests_with_a_non_ascii_uid_get_an_answer(site: Site) -> None:
    """Requests the user's role may not make, so that the agent must build a refusal naming the UID:
    tech's C-FIND (the issue's case), and rad's C-STORE with the byte in its SOP Instance UID.

    On 8c27d9f both hung (UnicodeEncodeError building the refusal), holding their slots.
    """
    cases = {
        "tech C-FIND, SOP Class ...2.2.\\xe9": ("tech", STUDY_ROOT_FIND, C_FIND_RQ,
                                               find_rq(1, STUDY_ROOT_FIND.encode()[:-1] + b"\xe9"), IDENTIFIER),
        "rad C-STORE, SOP Instance ...5\\xe9": ("rad", CT_IMAGE_STORAGE, C_STORE_RQ,
                                               store_rq(1, "1.2.826.0.1.3680043.10.1447.5\xe9"),
                                               text(0x00100020, "PAT-1")),
    }
    outcomes = {}
    for name, (user, abstract, field, command, data) in cases.items():
        token = user_token(site, user)
        with user_association(site, token, "NONASCII@WS1", Proposal(id=1, abstract=abstract)) as peer:
            peer.send(message(1, command, data))
            outcomes[name] = answer_kind(peer.read_message(ANSWER_WITHIN), field)
        assert_next_association_works(site, token)
    assert set(outcomes.values()) <= {"refused", "abort"}, f"instead of a refusal or an A-ABORT within 5 s: {outcomes}"


def test_maximum_length_too_small_for_a_pdv_gets_an_abort_not_a_hang(site: Site) -> None:
    """PS3.8 D.1: Maximum Length 0 means no limit; 1 to 6 cannot carry one PDV (its header is 6 bytes).

    On 8c27d9f length 1 hung and length 6 closed TLS without A-ABORT (ValueError in fragment_message).
    """
    token = user_token(site, "tech")
    outcomes = {}
    for length in (1, 6):
        with Peer.connect(site.ports["server"], tls=tls_client(site.pki)) as peer:
            rq = associate_rq(called="ORTHANC@GW1", calling="MAXLEN@WS1", proposals=(
                Proposal(id=1, abstract=STUDY_ROOT_FIND),), identity=jwt_identity(token), max_length=length)
            accepted = peer.associate(rq)
            if isinstance(accepted, Ended):
                outcomes[length] = accepted.kind  # rejected (or aborted) at association time
                continue
            peer.send(message(1, find_rq(1), IDENTIFIER))  # tech may not C-FIND: the agent must refuse
            outcomes[length] = answer_kind(peer.read_message(ANSWER_WITHIN), C_FIND_RQ)
    assert set(outcomes.values()) <= {"reject", "abort"}, (
        f"by Maximum Length, instead of an A-ASSOCIATE-RJ or A-ABORT: {outcomes}")
    assert_next_association_works(site, token)
