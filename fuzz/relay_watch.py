"""The invariants of fuzz/relay_fuzz.py: what a RelayCore may send, read from both wires as a peer reads
them (PS3.8 9.3, Annex E; PS3.7 9.1, 9.3).

Nothing here trusts the core's own bookkeeping: each peer's input is parsed on its own (:class:`Inbound`,
what the peer sent and the core read), each side's output is framed, decoded and reassembled as its peer
would (:class:`Outbound`), and the harness tells :class:`Watch` which verdicts the policy gave. Every
failure is an AssertionError whose message names the invariant.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

import fuzz.plainwire  # noqa: F401 - registers plainwire: the codec, not instrumented (see that module)

# isort: split
from plainwire.assembly import MessageAssembler, MessageCompleted, MessageStarted
from plainwire.dimse import STATUS_PENDING, CommandField, CommandSet
from plainwire.errors import ProtocolError
from plainwire.pdu import HEADER_LENGTH, PduFramer, PduType, decode_associate, decode_pdu
from plainwire.pdv import PDV_HEADER_LENGTH, pdv_spans
from plainwire.policy import Asks, asked

from dicomwire.association import Side
from fuzz.relay_peers import AVOID_KNOWN_FINDINGS, SECRET

_UNBOUNDED = 1 << 30


@dataclass
class Inbound:
    """What one peer sent that the core read: its P-DATA-TF PDUs, the raw command sets of its responses,
    its requests awaiting a final response, and the Maximum Length it announced."""

    framer: PduFramer = field(default_factory=lambda: PduFramer(_UNBOUNDED, _UNBOUNDED))
    assembler: MessageAssembler = field(default_factory=lambda: MessageAssembler(strict=False))
    broken: bool = False
    p_data: set[bytes] = field(default_factory=set)
    pdv_items: set[bytes] = field(default_factory=set)
    responses: set[bytes] = field(default_factory=set)
    outstanding: list[tuple[int, int, int]] = field(default_factory=list)  # (Message ID, Command Field, context)
    max_length: int | None = None

    def feed(self, data: bytes) -> list[tuple[CommandSet, int]]:
        """The DIMSE messages (command, context) whose command sets ``data`` completes."""
        messages: list[tuple[CommandSet, int]] = []
        if self.broken:
            return messages
        try:
            for frame in self.framer.feed(data):
                self._frame(bytes(frame.data), frame.type, messages)
        except ProtocolError:
            self.broken = True  # the core aborts on it; nothing more it sends answers this peer
        return messages

    def _frame(self, data: bytes, kind: PduType, messages: list[tuple[CommandSet, int]]) -> None:
        if kind in (PduType.ASSOCIATE_RQ, PduType.ASSOCIATE_AC) and self.max_length is None:
            info = decode_associate(data).user_information
            self.max_length = (info.maximum_length if info else None) or 0
        elif kind is PduType.P_DATA_TF:
            self.p_data.add(data)
            spans = pdv_spans(data)
            self.pdv_items.update(data[start - PDV_HEADER_LENGTH : stop] for start, stop, _, _ in spans)
            for start, stop, context_id, control in spans:  # PDV by PDV: a message before a broken one counts
                for event in self.assembler.feed(context_id, control, data[start:stop]):
                    if isinstance(event, MessageStarted):
                        self._started(event.command, event.context_id, messages)

    def _started(self, command: CommandSet, context_id: int, messages: list[tuple[CommandSet, int]]) -> None:
        messages.append((command, context_id))
        if command.is_response:
            self.responses.add(command.raw)
        elif command.command_field != CommandField.C_CANCEL_RQ and command.message_id is not None:
            self.outstanding.append((command.message_id, command.command_field, context_id))


@dataclass
class Outbound:
    """One side's output as its peer reads it."""

    side: Side
    framer: PduFramer = field(default_factory=lambda: PduFramer(_UNBOUNDED, _UNBOUNDED))
    assembler: MessageAssembler = field(default_factory=lambda: MessageAssembler(strict=False))
    closed: bool = False  # a Close was issued for this side
    ended: str = ""  # the A-ABORT or A-ASSOCIATE-RJ after which nothing may follow
    released: bool = False  # an A-RELEASE-RP was sent: only an A-ABORT may follow
    pdus: Counter[PduType] = field(default_factory=Counter)
    requests: list[int] = field(default_factory=list)  # Message IDs of requests that reached it, unanswered
    first_sent: int = 0  # Watch.clock when the command set now arriving began to leave
    injected: MessageAssembler | None = None  # a refusal sent inside another message (a known finding)
    data_set: bytearray = field(default_factory=bytearray)  # the data set of the message arriving now


class Watch:
    """Checks every command a core returns against the invariants of the module docstring of
    fuzz/relay_fuzz.py. ``permit`` and ``rewrite_response`` record what the policy allowed."""

    def __init__(self, asks: Asks, max_pdu_length: int) -> None:
        self.asks = asks
        self.bound = max_pdu_length
        self.inbound = {side: Inbound() for side in Side}
        self.outbound = {side: Outbound(side) for side in Side}
        # (destination, command set) allowed to pass, with the clock of each permit
        self.tokens: defaultdict[tuple[Side, bytes], list[int]] = defaultdict(list)
        self.clock = 0  # counts permits: a command set may leave only after its own
        # (requester, Message ID) whose responses are asked: the reviews given, oldest first (a Selective
        # one wants some of them only)
        self.reviewed: defaultdict[tuple[Side, int], list[object]] = defaultdict(list)
        self.needs: Counter[tuple[Side, bytes]] = Counter()  # responses read while under review, by requester
        self.premature: Counter[tuple[Side, bytes]] = Counter()  # responses to requests not forwarded yet
        self.rewritten: set[bytes] = set()  # response command sets a policy wrote
        # images let through, by (destination, command set): [cut after their Pixel Data, not cut]
        self.images: defaultdict[tuple[Side, bytes], list[int]] = defaultdict(lambda: [0, 0])
        self.server_transport = False

    # -- what the harness tells -----------------------------------------------------------------------
    def permit(self, requester: Side, command: CommandSet, sent: bytes | None, review: object, response: bool) -> None:
        """A verdict the core took lets ``command`` (or ``sent`` instead) go to the other side."""
        destination = requester.other if not response else requester
        self.tokens[(destination, sent or command.raw)].append(self.clock)
        self.clock += 1
        if response and sent is not None:
            self.rewritten.add(sent)
        if review is not None and not response and command.message_id is not None:
            self.reviewed[(requester, command.message_id)].append(review)

    def image(self, destination: Side, command: bytes, cut: bool) -> None:
        """An image (a data set with the peers' secret after its Pixel Data) let through to ``destination``,
        cut after its Pixel Data or not."""
        self.images[(destination, command)][0 if cut else 1] += 1

    def settled(self, requester: Side, command: CommandSet) -> None:
        """A response under review the core will not forward as it came (dropped, or its command set
        rewritten): it needs no permit any more."""
        key = (requester, command.raw)
        if self.needs[key] > 0:
            self.needs[key] -= 1

    def received(self, side: Side, data: bytes) -> None:
        """Bytes the core read from ``side``: a response read while its request is under review needs a
        permit to reach the requester; the final one ends the review (as the core's own bookkeeping does)."""
        for command, _ in self.inbound[side].feed(data):
            mid = command.message_id_responded_to
            if not command.is_response or mid is None:
                continue
            delivered = self.outbound[side].requests
            held = mid not in delivered and any(entry[0] == mid for entry in self.inbound[side.other].outstanding)
            if held and AVOID_KNOWN_FINDINGS:
                # The second finding (test_relay_fuzz_findings.py): an answer to a request this peer never
                # received, which the core takes if that request awaits its verdict. (The peers never answer
                # such a request, but a response still waiting to be read may meet one that came later.)
                self.premature[(side.other, command.raw)] += 1
            elif command.status not in STATUS_PENDING and mid in delivered:
                delivered.remove(mid)
            reviews = self.reviewed.get((side.other, mid))
            if not reviews:
                continue
            wants = getattr(reviews[0], "wants", None)  # a Selective review (of dicomwire, not plainwire)
            if wants is None or wants(command):
                self.needs[(side.other, command.raw)] += 1
            if command.status not in STATUS_PENDING:
                reviews.pop(0)

    def answerable(self, side: Side) -> tuple[list[tuple[int, int, int]], set[int]]:
        """What ``side``'s peer may answer: the requests the core forwarded to it, and the Message IDs it
        must not use, those of the other side's requests the core has not forwarded (yet)."""
        delivered = self.outbound[side].requests
        requests = [entry for entry in self.inbound[side.other].outstanding if entry[0] in delivered]
        return requests, {entry[0] for entry in self.inbound[side.other].outstanding} - set(delivered)

    # -- what the core does -----------------------------------------------------------------------------
    def send(self, side: Side, data: bytes) -> None:
        out = self.outbound[side]
        assert not out.closed, f"sent {len(data)} bytes to the {side.value} after Close for it"
        assert side is Side.CLIENT or self.server_transport, "sent to the server before it was connected"
        try:
            frames = out.framer.feed(data)
        except ProtocolError as error:
            raise AssertionError(f"the PDU stream to the {side.value} is malformed: {error}") from error
        for frame in frames:
            self._pdu(out, bytes(frame.data), frame.type)

    def _pdu(self, out: Outbound, data: bytes, kind: PduType) -> None:
        side = out.side
        assert not out.ended, f"{kind.name} sent to the {side.value} after {out.ended}"
        assert not out.released or kind is PduType.ABORT, f"{kind.name} sent to the {side.value} after A-RELEASE-RP"
        if kind is not PduType.P_DATA_TF:  # a P-DATA-TF is walked by the assembler below
            try:
                decode_pdu(data)
            except ProtocolError as error:
                raise AssertionError(f"malformed {kind.name} sent to the {side.value}: {error}") from error
        if kind is PduType.ASSOCIATE_RQ:
            assert side is Side.SERVER and not out.pdus, "A-ASSOCIATE-RQ sent other than first to the server"
        elif kind in (PduType.ASSOCIATE_AC, PduType.ASSOCIATE_RJ):
            assert side is Side.CLIENT and not out.pdus, f"{kind.name} sent other than first to the client"
        elif kind is not PduType.ABORT:
            assert self.outbound[Side.CLIENT].pdus[PduType.ASSOCIATE_AC], f"{kind.name} to the {side.value} " \
                                                                         "before the association was established"
        out.pdus[kind] += 1
        if kind in (PduType.ABORT, PduType.ASSOCIATE_RJ):
            out.ended = kind.name
        elif kind is PduType.RELEASE_RP:
            out.released = True
        elif kind is PduType.P_DATA_TF:
            self._p_data(out, data)

    def _p_data(self, out: Outbound, data: bytes) -> None:
        body = len(data) - HEADER_LENGTH
        assert body <= self.bound, f"P-DATA-TF of {body} bytes to the {out.side.value}, above the bound {self.bound}"
        announced = self.inbound[out.side].max_length or 0
        limit = announced if 0 < announced <= self.bound else self.bound
        if body > limit:  # forwarded as it came, or one PDV item as it came (the sender broke the limit)
            sent = self.inbound[out.side.other]
            assert data in sent.p_data or data[HEADER_LENGTH:] in sent.pdv_items, \
                f"a P-DATA-TF of {body} bytes made for the {out.side.value}, which announced {announced}"
        for start, stop, context_id, control in pdv_spans(data):
            self._pdv(out, context_id, control, data[start:stop])

    def _pdv(self, out: Outbound, context_id: int, control: int, value: bytes) -> None:
        assembler = out.assembler
        if out.injected is not None:
            assembler = out.injected
        elif assembler.idle:
            out.first_sent = self.clock  # the first bytes of a command set left now
        try:
            events = assembler.feed(context_id, control, value)
        except ProtocolError as error:
            if not (AVOID_KNOWN_FINDINGS and control & 1 and out.injected is None):
                raise AssertionError(f"the DIMSE stream to the {out.side.value} is broken: {error}") from error
            # The third finding (test_relay_fuzz_findings.py): a refusal sent inside another message. Read
            # it apart, so that the run goes on looking for new ones; it must be one the core made.
            out.injected = assembler = MessageAssembler(strict=False)
            events = assembler.feed(context_id, control, value)
        if out.injected is not None and assembler.idle:
            out.injected = None
            started = [e.command for e in events if isinstance(e, MessageStarted)]
            assert started and started[0].is_response and started[0].raw not in \
                self.inbound[out.side.other].responses, f"{started} sent inside another message to the {out.side.value}"
        if not control & 1 and out.injected is None:
            out.data_set += value
        for event in events:
            if isinstance(event, MessageStarted):
                out.data_set.clear()
                self._message(out, event.command, context_id)
            elif isinstance(event, MessageCompleted):
                self._completed(out, event.command)

    def _completed(self, out: Outbound, command: CommandSet) -> None:
        """Invariant 7: an image cut after its Pixel Data arrives without what followed it. (When the
        same command set was also let through uncut, the arrival is matched to either by its content.)"""
        counts = self.images.get((out.side, command.raw))
        if counts is None:
            return
        leaked = SECRET in out.data_set
        if counts[0] and not counts[1]:
            assert not leaked, f"{command.summary()} reached the {out.side.value} with what followed its " \
                               "Pixel Data, though cut there"
        counts[0 if counts[0] and not (leaked and counts[1]) else 1] -= 1
        if counts == [0, 0] or min(counts) < 0:
            del self.images[(out.side, command.raw)]

    def _message(self, out: Outbound, command: CommandSet, context_id: int) -> None:
        side = out.side
        if command.is_request:
            if command.message_id is not None:
                self.outbound[side].requests.append(command.message_id)
            if asked(self.asks, command.command_field):
                self._take(out, command, f"{command.summary()} reached the {side.value} without a permit")
            return
        self._response(out, command, context_id)

    def _response(self, out: Outbound, command: CommandSet, context_id: int) -> None:
        """A response to ``side`` answers one of its outstanding requests (the same Message ID, kind and
        context); one the core made itself is a failure with no data set."""
        side = out.side
        mid = command.message_id_responded_to
        outstanding = self.inbound[side].outstanding
        match = next((entry for entry in outstanding if entry[0] == mid and entry[1] | 0x8000 ==
                      command.command_field and entry[2] == context_id), None)
        assert match is not None, f"{command.summary()} on context {context_id} to the {side.value} answers " \
                                  f"none of its outstanding requests {outstanding}"
        if self.premature[(side, command.raw)] > 0:
            self.premature[(side, command.raw)] -= 1  # the known finding: it does not end the request
            return
        final = command.status not in STATUS_PENDING
        made = command.raw not in self.inbound[side.other].responses and command.raw not in self.rewritten
        if made:
            assert final and command.status != 0 and not command.has_data_set, \
                f"the core made {command.summary()} for the {side.value}: not a refusal"
        elif self.needs[(side, command.raw)] > 0:
            self.needs[(side, command.raw)] -= 1
            self._take(out, command, f"{command.summary()} under review reached the {side.value} without a permit")
        if final:
            outstanding.remove(match)

    def _take(self, out: Outbound, command: CommandSet, why: str) -> None:
        """Use a permit granted before the first bytes of this command set left (none may precede it)."""
        grants = self.tokens[(out.side, command.raw)]
        earlier = [grant for grant in grants if grant < out.first_sent]
        assert earlier, why if not grants else f"{why} (its first fragment left before the permit)"
        grants.remove(earlier[0])

    def close(self, side: Side) -> None:
        self.outbound[side].closed = True

    def step_done(self, closed: bool, connected: dict[Side, bool]) -> None:
        """After each event: whole PDUs only, and a closed core has closed every transport it had. (A command
        set may be left half sent: a message that passes shares a PDU with one awaiting its verdict.)"""
        for side, out in self.outbound.items():
            assert not out.framer.buffered, f"half a PDU ({out.framer.buffered} bytes) left sent to the {side.value}"
            if closed and connected[side]:
                assert out.closed, f"the core closed without closing the {side.value}'s transport"
