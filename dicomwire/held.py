"""What a gate holds while a decision is made: frames and the fate of each message in them (PS3.8 E.2).

A held frame's PDVs leave, in order, once every message in them has a fate; :func:`kept_pdvs` says what
of a frame goes on (passed PDVs, a rewritten command or data set in place of the original's, or, for a
head replaced, the original's bytes after the head, up to the end of its Pixel Data when it is cut
there: :mod:`dicomwire.pixelend`, the last of them flagged last, PS3.8 E.2).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from .assembly import MessageStarted
from .dialogue import Exchange
from .pdu import Frame
from .pdv import Pdv, fragment
from .pixelend import PixelEnd
from .questions import Refuse, RequestQuestion, ResponseQuestion

DimseQuestion = RequestQuestion | ResponseQuestion


class Fate(enum.Enum):
    __hash__ = object.__hash__

    PASS = "pass"
    GATHER = "gather"  # collecting the data set before asking
    ASKED = "asked"
    REFUSE = "refuse"
    DROP = "drop"
    REWRITE = "rewrite"


@dataclass(slots=True)
class Held:
    """A P-DATA-TF frame whose PDVs are (being) sorted by the fate of their message."""

    frame: Frame
    pdvs: list[Pdv]
    seqs: list[int] = field(default_factory=list)  # message seq of each processed PDV
    ends_idle: bool = False  # the frame ends at a message boundary

    @property
    def processed(self) -> bool:
        return len(self.seqs) == len(self.pdvs)


@dataclass(slots=True)
class Message:
    started: MessageStarted
    fate: Fate
    exchange: Exchange | None = None  # a request's own, or the one a response answers
    final: bool = False  # a response that ends its exchange
    data: bytearray = field(default_factory=bytearray)
    complete: bool = False
    refusal: Refuse | None = None
    question: DimseQuestion | None = None
    new_command: bytes | None = None
    new_data_set: bytes | None = None
    keep_from: int | None = None  # new_data_set replaces this many bytes; the rest streams on
    cut: PixelEnd | None = None  # the rest streams on only to the end of its Pixel Data
    data_offset: int = 0  # bytes of the original data set the rewrite went past
    limit: int | None = None  # how much of the data set to gather (an Extend verdict), if not the default
    command_sent: bool = False
    data_set_sent: bool = False

    @property
    def rewritten(self) -> bool:
        """Every replacement went out and, for a head replaced, every byte of the original head was passed
        (for one cut after its Pixel Data: every byte of the data set, so that the rest is dropped)."""
        replaced = self.new_data_set is None or (self.data_set_sent and (
            self.keep_from is None or self.complete or (self.cut is None and self.data_offset >= self.keep_from)))
        return (self.new_command is None or self.command_sent) and replaced

    @property
    def settled(self) -> bool:
        """Its frames may leave, and nothing more is owed for it."""
        return self.refusal is None and (self.fate is Fate.PASS or (self.fate is Fate.REWRITE and self.rewritten)
                                         or (self.complete and self.fate in (Fate.REFUSE, Fate.DROP)))


def kept_pdvs(held: Held, fates: list[Fate], messages: dict[int, Message], max_length: int) -> list[Pdv]:
    """The PDVs of a held frame that go on: passed ones, and a rewritten message's replacement in
    place of its first command (data set) fragment, its other fragments skipped (or, for a head
    replaced, the original's bytes after the head)."""
    kept: list[Pdv] = []
    for pdv, seq, fate in zip(held.pdvs, held.seqs, fates, strict=True):
        if fate is Fate.PASS:
            kept.append(pdv)
        elif fate is Fate.REWRITE:
            message = messages[seq]
            replacement = message.new_command if pdv.is_command else message.new_data_set
            if replacement is None:
                kept.append(pdv)
            elif pdv.is_command and not message.command_sent:
                kept.extend(fragment(pdv.context_id, replacement, is_command=True,
                                     max_length=max_length))
                message.command_sent = True
            elif not pdv.is_command:
                kept.extend(_replaced(message, pdv, replacement, max_length))
    return kept

def _replaced(message: Message, pdv: Pdv, replacement: bytes, max_length: int) -> list[Pdv]:
    """A data set fragment of a message whose data set (or head) is replaced."""
    out: list[Pdv] = []
    keep_from = message.keep_from
    if not message.data_set_sent:
        out = fragment(pdv.context_id, replacement, is_command=False, max_length=max_length,
                       last=keep_from is None)
        message.data_set_sent = True
    if keep_from is None:
        return out  # the whole data set replaced: the original's fragments are skipped
    start = message.data_offset
    message.data_offset = start + len(pdv.value)
    rest = pdv.value[max(0, keep_from - start):] if message.data_offset > keep_from else b""
    cut = message.cut
    if cut is None:
        if len(rest) == len(pdv.value):
            out.append(pdv)  # as it came
        elif rest or pdv.is_last:  # (an empty last fragment: the data set ended within the head)
            # a fragment we cut is one we make: it fits what the receiver announced (PS3.8 D.3.3.1)
            out.extend(fragment(pdv.context_id, rest, is_command=False, max_length=max_length, last=pdv.is_last))
        return out
    if cut.done:
        return out  # after its Pixel Data: dropped (its end was flagged on the fragment that held it)
    parts = cut.feed(rest) if rest else []
    ends = cut.done or pdv.is_last
    value = parts[0] if len(parts) == 1 else b"".join(parts)
    if value or ends:
        out.extend(fragment(pdv.context_id, value, is_command=False, max_length=max_length, last=ends))
    return out


__all__ = ["Fate", "Held", "Message", "kept_pdvs"]
