"""Issue 13, case 6: images nobody asked for. The return path carries only the C-STORE sub-operations
of an outstanding C-MOVE (PS3.4 C.4.2: the SCP performs sub-operations for the instances the
identifier selects): a process that connects to the return listener from the PACS's address, with
the called AE title of the move destination, must not get a made-up image into the clinician's app."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread

from devtools.dicomdata import make_ct_study
from devtools.site import Site

from .ring import HoldingSCP, ct_image, events, implicit_le, user_association, user_token
from .support import (
    CT_IMAGE_STORAGE,
    STUDY_ROOT_MOVE,
    Ended,
    Message,
    Peer,
    Proposal,
    associate_rq,
    describe,
    message,
    move_rq,
    store_rq,
    text,
    uid,
)

pytestmark = pytest.mark.e2e


@pytest.mark.usefixtures("workstation")
def test_image_pushed_to_the_return_path_during_a_move_never_reaches_the_app(
        site: Site, hold_scp: HoldingSCP, tmp_path: Path) -> None:
    """On 8c27d9f the made-up image was stored by the app (C-STORE-RSP 0000H to the fake PACS)."""
    assert site.orthanc is not None
    study = make_ct_study(tmp_path / "moved", slices=2, patient_id="PAT-1", seed=41)
    site.orthanc.upload(study)
    moved = {str(dcmread(path).SOPInstanceUID) for path in study}
    forged = ct_image(tmp_path / "forged", "PAT-1", seed=42)  # the same patient, a study nobody moved
    forged_uid = str(forged.SOPInstanceUID)
    hold_scp.hold, hold_scp.received[:] = set(moved), []
    hold_scp.release.clear()
    hold_scp.held.clear()
    mover = user_association(site, user_token(site, "rad"), "MOVER@WS1", Proposal(id=1, abstract=STUDY_ROOT_MOVE))
    try:
        mover.send(message(1, move_rq(1, "HOLDSCP@WS1"),
                           text(0x00080052, "STUDY") + uid(0x0020000D, str(dcmread(study[0]).StudyInstanceUID))))
        assert hold_scp.held.wait(10), f"rad's C-MOVE never reached the app: {describe(mover.read_message(0.5))}"
        # The move is outstanding: its first image waits at the app. Now the fake "PACS" pushes.
        with Peer.connect(site.ports["return"]) as fake:
            got = fake.associate(associate_rq(called="HOLDSCP@WS1", calling="ORTHANC", proposals=(
                Proposal(id=1, abstract=CT_IMAGE_STORAGE),)))
            pushed: Message | Ended = got if isinstance(got, Ended) else None  # type: ignore[assignment]
            if pushed is None:
                fake.send(message(1, store_rq(1, forged_uid), implicit_le(forged)))
                pushed = fake.read_message()
        hold_scp.release.set()
        answers, ended = mover.responses()
    finally:
        hold_scp.release.set()
        mover.close()
    reached = forged_uid in hold_scp.received
    assert not reached, f"the made-up image reached the app (the push got {describe(pushed)})"
    delivered = moved <= set(hold_scp.received)
    assert delivered, f"the legitimate move did not deliver: {[describe(m) for m in answers[-1:]]} {describe(ended)}"
    permitted = [r for r in events(site, event="authorization", decision="permit")
                 if r.get("resource", {}).get("sop_instance_uid") == forged_uid]
    assert not permitted, f"the made-up image was decided as part of rad's move: {permitted}"
