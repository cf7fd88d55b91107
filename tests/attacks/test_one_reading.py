"""Issue 13, case 1: a request read two ways. The agent decides on one reading of a data set and
Orthanc acts on another: a duplicated (0010,0020), in or out of tag order (PS3.5 7.1: elements in
ascending tag order, each at most once), in a C-FIND identifier or in the head of a C-STORE."""

from __future__ import annotations

from pathlib import Path

import pytest

from devtools.site import Site

from .ring import REFDOC_MAY_SEE, ct_image, events, implicit_le, user_association, user_token
from .support import (
    CT_IMAGE_STORAGE,
    PENDING,
    STUDY_ROOT_FIND,
    Ended,
    Message,
    Proposal,
    find_rq,
    message,
    store_rq,
    text,
    uid,
)

pytestmark = pytest.mark.e2e

QUERY_LEVEL, PATIENT_ID, STUDY_UID = 0x00080052, 0x00100020, 0x0020000D


def find_as_refdoc(site: Site, calling: str, identifier: bytes) -> tuple[set[str], list[Message], Ended | None]:
    """One C-FIND as refdoc (a referring physician who may see PAT-REF-1 only): the Patient IDs of the
    matches he received, every response, and how the association ended if it did."""
    with user_association(site, user_token(site, "refdoc"), calling, Proposal(id=1, abstract=STUDY_ROOT_FIND)) as peer:
        peer.send(message(1, find_rq(1), identifier))
        answers, ended = peer.responses()
    seen = {str(m.dataset().get("PatientID", "")) for m in answers if m.data}
    return seen, answers, ended


def assert_refused_as_malformed(site: Site, calling: str, answers: list[Message], ended: Ended | None) -> None:
    """The request is answered with a failure status (or the association aborted), never Success, and
    the decision log holds a refusal for it and no permit."""
    final = answers[-1].status if answers and answers[-1].status not in PENDING else None
    assert (final is not None and final != 0x0000) or (ended is not None and ended.kind == "abort"), (
        f"a data set read two ways was answered {final if final is None else hex(final)} / {ended}, not refused")
    decided = events(site, calling_ae=calling)
    permits = [r for r in decided if r.get("decision") == "permit" and r.get("event") == "authorization"]
    assert not permits, f"the agent permitted what it read as {[r['resource'] for r in permits]}"
    assert any(r.get("decision") == "deny" for r in decided), "no refusal in the decision log"


def test_find_with_patient_id_twice_wildcard_first_sees_no_other_patient(site: Site) -> None:
    identifier = (text(QUERY_LEVEL, "STUDY") + text(PATIENT_ID, "*") + text(PATIENT_ID, "PAT-REF-1")
                  + uid(STUDY_UID, ""))
    seen, answers, ended = find_as_refdoc(site, "DUPFIND@WS1", identifier)
    assert seen <= REFDOC_MAY_SEE, f"refdoc received the matches of {sorted(seen - REFDOC_MAY_SEE)}"
    assert_refused_as_malformed(site, "DUPFIND@WS1", answers, ended)


def test_find_with_patient_id_repeated_after_a_higher_tag_sees_no_other_patient(site: Site) -> None:
    identifier = (text(QUERY_LEVEL, "STUDY") + text(PATIENT_ID, "*") + uid(STUDY_UID, "")
                  + text(PATIENT_ID, "PAT-REF-1"))
    seen, answers, ended = find_as_refdoc(site, "ORDERFIND@WS1", identifier)
    assert seen <= REFDOC_MAY_SEE, f"refdoc received the matches of {sorted(seen - REFDOC_MAY_SEE)}"
    assert_refused_as_malformed(site, "ORDERFIND@WS1", answers, ended)


def test_store_with_two_patient_ids_files_nothing_under_a_forbidden_patient(site: Site, tmp_path: Path) -> None:
    """tech may store for any patient but PAT-OPTOUT, whose consent (opt out) denies hospital-a: the
    first Patient ID names PAT-OPTOUT, the second a patient tech may store for."""
    assert site.orthanc is not None
    image = ct_image(tmp_path, "PAT-OPTOUT", seed=31)
    instance = str(image.SOPInstanceUID)
    first = text(PATIENT_ID, "PAT-OPTOUT")
    encoded = implicit_le(image)
    at = encoded.index(first) + len(first)
    forged = encoded[:at] + text(PATIENT_ID, "PAT-STORE-1") + encoded[at:]
    with user_association(site, user_token(site, "tech"), "DUPSTORE@WS1",
                          Proposal(id=1, abstract=CT_IMAGE_STORAGE)) as peer:
        peer.send(message(1, store_rq(1, instance), forged))
        answers, ended = peer.responses()
    stored = site.orthanc.rest("/tools/lookup", instance.encode())
    assert isinstance(stored, list)
    filed = [site.orthanc.rest(f"{entry['Path']}/simplified-tags") for entry in stored]
    assert not filed, f"Orthanc stored the image, under {[tags.get('PatientID') for tags in filed]}"  # type: ignore[attr-defined]
    assert_refused_as_malformed(site, "DUPSTORE@WS1", answers, ended)
