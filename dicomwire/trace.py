"""Tracing as structured facts: the core says what it saw, the CLI decides how to print it.

The core emits a fact only when tracing is on (it costs nothing otherwise). :func:`format_fact` is
the one rendering, one line per PDU and per DIMSE message, like a DICOM-aware tcpdump::

    #4 C>S P-DATA-TF 100 bytes [ctx=1 cmd last 88]
    #4 C>S DIMSE C-FIND-RQ id=1 sop=1.2.840.10008.5.1.4.1.2.2.1 ctx=1 dataset=54

Facts never carry data set content (no patient data in a trace), only lengths and command fields.
"""

from __future__ import annotations

from dataclasses import dataclass

from .association import Side
from .dimse import CommandSet
from .errors import ProtocolError
from .items import ItemType
from .pdu import PDU_NAMES, PduType, decode_associate
from .pdv import pdv_spans

Buffer = bytes | bytearray | memoryview


@dataclass(frozen=True, slots=True)
class PduFact:
    """A PDU that went from ``side`` towards the other (``synthesised``: made by the relay itself)."""

    side: Side
    pdu_type: PduType
    data: Buffer
    rewritten: bool = False
    synthesised: bool = False


@dataclass(frozen=True, slots=True)
class MessageFact:
    """A DIMSE message's command from ``side`` (``data_set_length`` None: no data set)."""

    side: Side
    command: CommandSet
    context_id: int
    data_set_length: int | None
    synthesised: bool = False


Fact = PduFact | MessageFact


def format_fact(fact: Fact) -> str:
    """``C>S <what>``: the arrow says which way the bytes went."""
    if isinstance(fact, MessageFact):
        text = f"DIMSE {fact.command.summary()} ctx={fact.context_id}"
        text += f" dataset={'-' if fact.data_set_length is None else fact.data_set_length}"
    else:
        text = f"{PDU_NAMES[fact.pdu_type]} {len(fact.data)} bytes{_pdu_detail(fact.pdu_type, fact.data)}"
        text += " (rewritten)" if fact.rewritten else ""
    return f"{fact.side.arrow} {text}{' (synthesised)' if fact.synthesised else ''}"


def _pdu_detail(pdu_type: PduType, data: Buffer) -> str:
    try:
        if pdu_type in (PduType.ASSOCIATE_RQ, PduType.ASSOCIATE_AC):
            pdu = decode_associate(data)
            info = pdu.user_information
            identity = info.find(ItemType.USER_IDENTITY_RQ if pdu_type == PduType.ASSOCIATE_RQ
                                 else ItemType.USER_IDENTITY_AC) if info else None
            contexts = pdu.presentation_contexts
            accepted = sum(1 for pc in contexts if pc.result in (None, 0))
            text = (f" called={pdu.called_ae!r} calling={pdu.calling_ae!r} contexts={accepted}/{len(contexts)} "
                    f"max_pdu={info.maximum_length if info else None}")
            if identity is not None:
                text += f" user-identity=0x{identity.type:02x}"  # never its value
                if pdu_type == PduType.ASSOCIATE_RQ and identity.value:
                    text += f" type={identity.value[0]}"
            return text
        view = memoryview(data)
        if pdu_type == PduType.ASSOCIATE_RJ:
            return f" ({view[7]}, {view[8]}, {view[9]})"
        if pdu_type == PduType.ABORT:
            return f" (source {view[8]}, reason {view[9]})"
        if pdu_type == PduType.P_DATA_TF:
            return " " + " ".join(f"[ctx={ctx} {'cmd' if control & 1 else 'data'}{' last' if control & 2 else ''} "
                                  f"{stop - start}]" for start, stop, ctx, control in pdv_spans(data))
    except (ProtocolError, IndexError) as error:
        return f" (malformed: {error})"
    return ""


__all__ = ["Fact", "MessageFact", "PduFact", "format_fact"]
