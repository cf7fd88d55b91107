"""The C-MOVE return listener: the PACS's C-STORE sub-operations, relayed to the workstation agent.

The PACS resolves a move destination ``APP@WS`` to this listener (its modality list names it). An
association is accepted only from a configured PACS (by its TLS client certificate with ``[return]
tls``, PS3.15 B.12; else by its source address) and only while a move the agent permitted for
that destination is outstanding; it is relayed over TLS to the workstation agent of ``WS``. Each
C-STORE must belong to one of those moves (:mod:`server_agent.moves`) and is decided as that move, for
the user who made it; any other request is refused (deny by default).

The moves are looked up in the shared store, so the PACS may reach any worker or instance: a move
permitted by this process is decided by its association (as ever); one permitted elsewhere by a
:class:`~server_agent.association.ServerAssociation` of ``deciders`` standing for the move's user
(the PDP asked the same question, recorded under this association). Without the shared store the
association is refused (A-ASSOCIATE-RJ transient) and so is each store (fail closed).

A move made in a research view has each C-STORE de-identified in transit (:mod:`server_agent.deidretrieve`),
by the process that permitted it (another process finds no view to honour the researcher's obligation
with, and refuses), and the workstation's C-STORE-RSP carries the real SOP Instance UID back to the PACS.
"""

from __future__ import annotations

import inspect
import logging
import ssl
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field

from audit.events import Action, Reason
from dicomwire.commands import Notice
from dicomwire.dimse import CommandField
from dicomwire.policy import EVERY_REQUEST, Asks, ConnectionInfo, Forwarding
from dicomwire.questions import (
    AssociationQuestion,
    AssociationVerdict,
    ForwardAssociation,
    Permit,
    Refuse,
    RejectAssociation,
    RequestQuestion,
    RequestVerdict,
    ResponseQuestion,
    ResponseVerdict,
)
from dicomwire.tls import certificate_names
from dicomwire.upstream import Upstream

from .association import Retrieval, ServerPolicy, comment
from .authorization import Facts, read_facts
from .config import ServerAgentConfig
from .decisions import Decisions
from .deidretrieve import StoreReview, header_wanted, store_response, sub_operation
from .moves import Move, MoveRegistry, originator, subject_of
from .records import Recorder
from .routing import pacs_addresses, return_source
from .shared import MoveRecord, SharedUnavailable

log = logging.getLogger("server_agent")


@dataclass(slots=True)
class ReturnPolicy:
    config: ServerAgentConfig
    moves: MoveRegistry
    decisions: Decisions
    client_ssl: ssl.SSLContext | None  # to the workstation agents
    pacs_hosts: set[str] = field(default_factory=set)
    asks: Asks = EVERY_REQUEST
    deciders: ServerPolicy | None = None  # decides sub-operations of moves other processes permitted

    def __post_init__(self) -> None:
        self.pacs_hosts = self.pacs_hosts or pacs_addresses(self.config.pacs.values())

    def open(self, connection: ConnectionInfo) -> ReturnAssociation:
        return ReturnAssociation(self, connection)


class ReturnAssociation(Forwarding):
    def __init__(self, factory: ReturnPolicy, connection: ConnectionInfo) -> None:
        self.factory = factory
        self.connection = connection
        self.record = Recorder(factory.decisions, connection.association_id)
        self.destination = ""

    async def associate(self, question: AssociationQuestion) -> AssociationVerdict:
        started = time.perf_counter()
        rq, config = question.rq, self.factory.config
        peer, names = self.connection.peer, certificate_names(self.connection.peer_certificate)
        self.record.begin(peer=peer, certificate=names, calling_ae=rq.calling_ae, called_ae=rq.called_ae)
        pacs, why = return_source(config, peer, names, self.factory.pacs_hosts)
        if pacs is None:
            self.record.authentication(Reason.NOT_A_PACS, why, started, path="return")
            return RejectAssociation(reason_text="not a configured PACS", result=1, source=1, reason=3)
        if pacs:
            self.record.note(pacs=pacs)
        workstation = config.workstations.get(rq.called_ae.partition("@")[2])
        try:
            active = workstation is not None and await self.factory.moves.active(rq.called_ae)
        except SharedUnavailable as error:
            self.record.authentication(error.reason, f"shared state unavailable ({error})", started, path="return")
            return RejectAssociation(reason_text="shared state unavailable", result=2, source=3, reason=1)
        if workstation is None or not active:
            self.record.authentication(Reason.NO_MOVE_OUTSTANDING, f"no authorized C-MOVE outstanding for "
                                       f"{rq.called_ae!r}", started, path="return")
            return RejectAssociation(reason_text=f"unsolicited C-STORE to {rq.called_ae!r}", result=1, source=1,
                                     reason=7)
        self.destination = rq.called_ae
        self.record.note(workstation=workstation.name)
        self.record.write_permit(Reason.MOVE_OUTSTANDING, started, path="return")
        return ForwardAssociation(target=Upstream(host=workstation.host, port=workstation.port,
                                                  ssl=self.factory.client_ssl, server_hostname=workstation.server_name))

    def request(self, question: RequestQuestion) -> RequestVerdict | Awaitable[RequestVerdict]:
        command = question.command
        store = command.command_field == CommandField.C_STORE_RQ
        facts = read_facts(command, question.data_set if store else b"", question.transfer_syntax,
                           complete=question.data_set_complete, action=Action.C_MOVE if store else None,
                           sub_operation_of=Action.C_MOVE, move_destination=self.destination)
        if facts.action is None or question.side.value != "client":
            # Only the PACS's C-STORE sub-operations travel here; anything else is refused.
            self.record.authorization(facts, None, None, Reason.UNSUPPORTED_SERVICE, False, None)
            return Refuse(comment=comment(f"{command.name} not accepted on the return path",
                                          Reason.UNSUPPORTED_SERVICE))
        if facts.malformed:  # the image cannot be matched to a move: refused as its move would refuse it
            self.record.authorization(facts, None, None, Reason.MALFORMED, False, None, detail=facts.malformed)
            return Refuse(comment=comment("data set could not be read one way only", Reason.MALFORMED),
                          status=facts.status)
        ae, message_id = originator(command)
        if self.factory.moves.researching(self.destination, ae, message_id):
            wanted = header_wanted(question)
            if wanted is not None:
                return wanted
        return self._matched(question, facts, ae, message_id)

    async def _matched(self, question: RequestQuestion, facts: Facts, ae: str | None,
                       message_id: int | None) -> RequestVerdict:
        try:
            move, reason = await self.factory.moves.match(self.destination, ae, message_id, facts.resource)
        except SharedUnavailable as error:
            self.record.authorization(facts, None, None, error.reason, False, None, detail=str(error))
            return Refuse(comment=comment("shared state unavailable", error.reason))
        if move is None:
            self.record.authorization(facts, None, None, reason, False, None)
            return Refuse(comment=comment("no C-MOVE this image belongs to", reason))
        if isinstance(move, Move) and move.deid is not None:
            verdict = sub_operation(move.owner, question, facts, move, move.deid)
        else:
            verdict = move.owner.decide(facts, move) if isinstance(move, Move) else self._elsewhere(facts, move)
        return await verdict if inspect.isawaitable(verdict) else verdict

    def _elsewhere(self, facts: Facts, move: MoveRecord) -> RequestVerdict | Awaitable[RequestVerdict]:
        """A sub-operation of a move another process permitted: decided for that move's user."""
        who = subject_of(move)
        if self.factory.deciders is None or who is None:
            self.record.authorization(facts, None, None, Reason.NO_MATCHING_MOVE, False, None,
                                      detail="the move was permitted by another process and names no user here")
            return Refuse(comment=comment("no C-MOVE this image belongs to", Reason.NO_MATCHING_MOVE))
        stand_in = self.factory.deciders.open(self.connection)
        stand_in.subject, stand_in.context = who
        return stand_in.decide(facts, Retrieval(facts=facts))

    def response(self, question: ResponseQuestion) -> ResponseVerdict:
        if isinstance(question.review, StoreReview):
            return store_response(question, question.review)
        return Permit()

    def notice(self, notice: Notice) -> None:
        self.record.notice(notice, None, None)


__all__ = ["ReturnAssociation", "ReturnPolicy"]
