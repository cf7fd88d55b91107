"""Short runs of the wire fuzz harnesses (fuzz/pdu_fuzz.py, fuzz/dimse_fuzz.py, fuzz/relay_fuzz.py) on every
``make test``, like tests/unit/test_fuzz_dataset.py: the harnesses keep working and their invariants hold on
the seeds and on what a few seconds of coverage-guided mutation reaches. Long runs are ``make fuzz``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dicomwire.association import Side
from dicomwire.dimse import CommandField, Tag, decode_command, encode_command
from dicomwire.pdv import COMMAND, COMMAND_WHOLE, Pdv, encode_p_data, fragment_message, iter_pdvs
from dicomwire.policy import EVERY_REQUEST
from fuzz.relay_peers import SECRET, image
from fuzz.relay_watch import Watch
from tests.support.wire import pynetdicom_ac, pynetdicom_message, pynetdicom_rq

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("harness", "runs"), [("pdu", 5000), ("dimse", 5000), ("relay", 1500)])
def test_a_short_fuzz_run_finds_nothing(harness: str, runs: int, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    subprocess.run([sys.executable, str(ROOT / "fuzz" / "make_seeds.py"), str(corpus), harness], check=True,
                   cwd=ROOT, capture_output=True)
    assert len(list(corpus.iterdir())) >= 5, "no seeds"
    run = subprocess.run([sys.executable, str(ROOT / "fuzz" / f"{harness}_fuzz.py"), str(corpus),
                          f"-atheris_runs={runs}", f"-artifact_prefix={tmp_path}/"],
                         cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"Done {runs}" in run.stderr


# The relay harness's invariants must be able to fail: its watch, fed what a broken core would send.

def _watch_with_association() -> tuple[Watch, bytes]:
    watch = Watch(EVERY_REQUEST, 16384)
    rq, ac = pynetdicom_rq(), pynetdicom_ac()
    watch.received(Side.CLIENT, rq)
    watch.server_transport = True
    watch.send(Side.SERVER, rq)
    watch.received(Side.SERVER, ac)
    watch.send(Side.CLIENT, ac)
    echo = b"".join(pynetdicom_message("C_ECHO_RQ", MessageID=1, AffectedSOPClassUID="1.2.840.10008.1.1"))
    watch.received(Side.CLIENT, echo)
    return watch, echo


def test_the_relay_watch_sees_a_request_forwarded_without_a_permit() -> None:
    watch, echo = _watch_with_association()
    with pytest.raises(AssertionError, match="reached the server without a permit"):
        watch.send(Side.SERVER, echo)
    watch, echo = _watch_with_association()
    watch.permit(Side.CLIENT, decode_command(bytes(iter_pdvs(echo)[0].value)), None, review=False, response=False)
    watch.send(Side.SERVER, echo)


def test_the_relay_watch_sees_sends_after_close_and_responses_the_core_made_up() -> None:
    def echo_response(context_id: int, status: int) -> bytes:
        return b"".join(pynetdicom_message("C_ECHO_RSP", context_id=context_id, MessageIDBeingRespondedTo=1,
                                           AffectedSOPClassUID="1.2.840.10008.1.1", Status=status))

    watch, _ = _watch_with_association()
    with pytest.raises(AssertionError, match="answers none of its outstanding requests"):
        watch.send(Side.CLIENT, echo_response(3, 0x0124))  # not the echo's context
    watch, _ = _watch_with_association()
    with pytest.raises(AssertionError, match="not a refusal"):
        watch.send(Side.CLIENT, echo_response(1, 0x0000))  # the server sent none
    watch, _ = _watch_with_association()
    watch.send(Side.CLIENT, echo_response(1, 0x0124))  # a refusal the core made
    watch, _ = _watch_with_association()
    watch.close(Side.CLIENT)
    with pytest.raises(AssertionError, match="after Close"):
        watch.send(Side.CLIENT, echo_response(1, 0x0124))


def test_the_relay_watch_sees_an_image_cut_after_its_pixel_data_arrive_with_what_followed() -> None:
    """Invariant 7: what followed the Pixel Data of an image the policy cut there never arrives."""
    command = encode_command({Tag.COMMAND_FIELD: CommandField.C_STORE_RQ, Tag.MESSAGE_ID: 2, Tag.PRIORITY: 0,
                              Tag.AFFECTED_SOP_CLASS_UID: "1.2.840.10008.5.1.4.1.1.2",
                              Tag.AFFECTED_SOP_INSTANCE_UID: "1.2.3.4", Tag.COMMAND_DATA_SET_TYPE: 1})
    whole = image(0xA5)
    cut = whole[: whole.index(SECRET) - 8]  # up to the end of the Pixel Data element
    for data_set, cut_there, fails in ((whole, True, True), (cut, True, False), (whole, False, False)):
        watch, _ = _watch_with_association()
        watch.permit(Side.CLIENT, decode_command(command), None, review=False, response=False)
        watch.image(Side.SERVER, command, cut=cut_there)
        sent = b"".join(fragment_message(3, command, data_set, 16384))
        if fails:
            with pytest.raises(AssertionError, match="what followed its Pixel Data"):
                watch.send(Side.SERVER, sent)
        else:
            watch.send(Side.SERVER, sent)


def test_the_relay_watch_keeps_a_request_read_before_a_broken_pdv_of_the_same_pdu() -> None:
    """A request whose PDV comes before a broken one in the same P-DATA-TF was read by the core, which may
    answer it (a refusal) before it aborts: the watch must know it too (its first long run's finding was
    the watch's own: it parsed the PDU as a whole and lost the request)."""
    echo = iter_pdvs(b"".join(pynetdicom_message("C_ECHO_RQ", context_id=7, MessageID=2,
                                                 AffectedSOPClassUID="1.2.840.10008.1.1")))[0]
    broken = [Pdv(7, COMMAND, b"\x00\x00"), Pdv(1, COMMAND_WHOLE, b"\x00\x00")]  # another context mid-message
    watch, _ = _watch_with_association()
    watch.received(Side.CLIENT, encode_p_data([echo, *broken]))
    refusal = b"".join(pynetdicom_message("C_ECHO_RSP", context_id=7, MessageIDBeingRespondedTo=2,
                                          AffectedSOPClassUID="1.2.840.10008.1.1", Status=0x0124))
    watch.send(Side.CLIENT, refusal)
