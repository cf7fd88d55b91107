"""A 200 MB instance of a de-identified retrieval through the relay core: its header is replaced, its
Pixel Data streams through unchanged, and the relay never holds more than a header's worth of it
(issue 16 item 3: "never buffered whole"), measured with tracemalloc."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import struct
import tracemalloc
from collections.abc import Iterator
from typing import Any

from audit.events import Action
from deid import Needs, Pseudonyms, deidentify_header, needs
from devtools.dicomdata import decode_data_set, encode_data_set, identified_header
from dicomwire.association import Side, State
from dicomwire.commands import Ask, OpenUpstream, Send
from dicomwire.limits import RelayLimits
from dicomwire.pdv import Pdv, encode_p_data, iter_pdvs
from dicomwire.questions import DimseQuestion, Refuse
from dicomwire.relay import RelayCore
from pseudonymizer.client import Originals
from server_agent.authorization import read_facts
from server_agent.deidretrieve import DeidRetrieval, SubOperation, more_of_header
from tests.deid.support import answer, leaks
from tests.server.test_deidretrieve import VIEW
from tests.support.playbook import transparent
from tests.unit.test_dimse import _pynetdicom_command
from tests.unit.test_relay_core import AC, CT, RQ

IVLE = "1.2.840.10008.1.2"
PIXELS = 200 * 1024 * 1024
PDU = 16384
CHUNK = PDU - 6  # a data fragment's value in a 16 KiB PDU (PS3.8 9.3.5: PDV length, context, control)


class Source:
    async def pseudonyms(self, project: str, wanted: Needs) -> Pseudonyms:
        return answer(wanted, project)

    async def originals(self, project: str, **_: Any) -> Originals:
        return Originals()


class Owner:
    def decide(self, *_: Any) -> Any:
        raise AssertionError("not asked here")

    def disclosed(self, *_: Any) -> None:
        pass

    def refused(self, *_: Any, **__: Any) -> Refuse:
        return Refuse(comment="refused")


def research_decide(retrieval: DeidRetrieval, asked: list[int]) -> Any:
    """The server agent's steps for a sub-operation (deidretrieve.sub_operation) with the PDP's permit
    given: Extend until the header is whole, then the rewrite."""
    def decide(question: Any) -> Any:
        if not isinstance(question, DimseQuestion) or not question.command.is_request:
            return transparent(question)
        asked.append(len(question.data_set))
        more = more_of_header(question)
        if more is not None:
            return more
        sub = SubOperation.of(question, retrieval)
        assert isinstance(sub, SubOperation), sub
        facts = read_facts(question.command, question.data_set, question.transfer_syntax,
                           complete=question.data_set_complete, action=Action.C_GET, sub_operation_of=Action.C_GET)
        return asyncio.run(_run(sub.finish(Owner(), facts, None, None, 0.0)))  # type: ignore[arg-type]
    return decide


async def _run(verdict: Any) -> Any:
    return await verdict if inspect.isawaitable(verdict) else verdict


def pixel_chunks() -> Iterator[bytes]:
    pattern = bytes(range(256)) * (CHUNK // 256 + 1)
    for start in range(0, PIXELS, CHUNK):
        yield pattern[: min(CHUNK, PIXELS - start)]


def instance_pdus(header: bytes) -> Iterator[bytes]:
    """The C-STORE-RQ as a PACS sends it: command, header, then Pixel Data in 16 KiB PDUs, made as
    they are read (the test holds no more of it than the relay does)."""
    command = _pynetdicom_command("C_STORE_RQ", MessageID=11, AffectedSOPClassUID=CT, Priority=0,
                                  AffectedSOPInstanceUID="1.2.826.0.1.3680043.10.1447.77.1.1.1", CommandDataSetType=1)
    yield encode_p_data([Pdv(3, 0x03, command)])
    element = struct.pack("<HHI", 0x7FE0, 0x0010, PIXELS)  # (7FE0,0010) in Implicit VR LE: OW
    first = header + element
    for start in range(0, len(first), 512):  # small fragments: the first question holds part of the header
        yield encode_p_data([Pdv(3, 0x00, first[start:start + 512])])
    chunks = list(range(0, PIXELS, CHUNK))
    for n, chunk in enumerate(pixel_chunks()):
        yield encode_p_data([Pdv(3, 0x02 if n == len(chunks) - 1 else 0x00, chunk)])


class Sink:
    """What leaves toward the receiver, read PDV by PDV: the data set's first bytes kept, all hashed."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.head = bytearray()
        self.digest = hashlib.sha256()
        self.length = 0
        self.last = False

    def feed(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= 6:
            length = int.from_bytes(self.buffer[2:6], "big")
            if len(self.buffer) < 6 + length:
                return
            pdu = bytes(self.buffer[: 6 + length])
            del self.buffer[: 6 + length]
            if pdu[0] != 0x04:
                continue
            for pdv in iter_pdvs(pdu):
                if pdv.is_command:
                    continue
                value = bytes(pdv.value)
                if len(self.head) < 64 * 1024:
                    self.head += value[: 64 * 1024 - len(self.head)]
                self.digest.update(value)
                self.length += len(value)
                self.last = pdv.is_last


def test_a_200_mb_instance_is_rewritten_with_bounded_memory() -> None:
    header = encode_data_set(identified_header(pixels=False), IVLE)
    retrieval = DeidRetrieval(view=VIEW, source=Source())
    asked: list[int] = []
    decide = research_decide(retrieval, asked)
    core = RelayCore(RelayLimits(store_head_length=1024), asks=None)  # a header longer than the head: Extend
    sink = Sink()

    def run(commands: list[Any]) -> None:
        for command in commands:
            if isinstance(command, Send) and command.side is Side.SERVER:
                sink.feed(bytes(command.data))
            elif isinstance(command, Ask):
                run(core.answer(command.question, decide(command.question)))
            elif isinstance(command, OpenUpstream):
                run(core.upstream_connected())

    run(core.start())
    run(core.data_received(Side.CLIENT, RQ))
    run(core.data_received(Side.SERVER, AC))
    assert core.state is State.ESTABLISHED
    sink.buffer.clear()
    sink.head.clear()
    tracemalloc.start()
    try:
        for pdu in instance_pdus(header):
            run(core.data_received(Side.CLIENT, pdu))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(asked) == 2 and asked[0] < len(header) <= asked[1]  # held once more, the header whole
    new = deidentify_header(header, IVLE, VIEW.profile, answer(needs(header, IVLE, VIEW.profile), "STUDY-A")).data
    shown = decode_data_set(new, IVLE)
    assert shown.PatientIdentityRemoved == "YES" and leaks(identified_header(), new, shown) == []
    expected = hashlib.sha256(new + struct.pack("<HHI", 0x7FE0, 0x0010, PIXELS))
    for chunk in pixel_chunks():
        expected.update(chunk)
    assert bytes(sink.head).startswith(new) and sink.last and sink.length == len(new) + 8 + PIXELS
    assert sink.digest.hexdigest() == expected.hexdigest()  # the new header, then every pixel byte as sent
    assert peak < 4 * 1024 * 1024, f"the relay held {peak / 2**20:.1f} MiB of a {PIXELS >> 20} MiB instance"

