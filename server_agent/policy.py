"""The server agent's answers to the relay core's questions: authentication, routing, authorization.

Every association: route by the called AE title (``PACS@GW``, or the default PACS), authenticate its
User Identity (or apply node policy to a device without one), present the self-describing calling
AE title to the PACS, never forward the identity. Every request: the token must still be valid, the
OAuth scopes must allow the action, then the policy decision point decides; a deny never reaches the
PACS (status 0124H with the reason). C-FIND not pinned to one patient is forwarded and each match is
decided in batches (post-filter); C-STORE is decided from the head of its data set; a C-MOVE goes
only to the requester's own workstation and opens the return path for its sub-operations; C-GET
sub-operations are decided like their request. Each decision becomes a decision event.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dicomwire.aio import ConnectionInfo, Upstream
from dicomwire.dimse import STATUS_PENDING, CommandField, Tag
from dicomwire.errors import RejectReason, RejectResult, RejectSource
from dicomwire.identity import add_identity_response, extract_user_identity, strip_user_identity
from dicomwire.relay import (
    AcceptQuestion,
    AssociationQuestion,
    DimseQuestion,
    Drop,
    ForwardAccept,
    ForwardAssociation,
    Permit,
    Question,
    Refuse,
    RejectAssociation,
    Rewrite,
    Verdict,
)

from .authn import AuthenticationFailed, Authenticator, Subject
from .config import Pacs, ServerAgentConfig
from .decisions import Decisions
from .pdp import Decision, PdpClient, PdpUnavailable
from .resources import (
    ACTION_NAMES,
    PATIENT_ID,
    Context,
    authzen_request,
    pinned_patient,
    read_keys,
    scope_allows,
    with_return_key,
    without_element,
)

log = logging.getLogger("server_agent")

BATCH_WINDOW = 0.003  # seconds to gather post-filter questions into one PDP call
BATCH_MAX = 64  # = RelayLimits.max_pending_reviews: a full batch goes at once


def certificate_names(cert: dict[str, Any] | None) -> list[str]:
    if not cert:
        return []
    names = [value for rdn in cert.get("subject", ()) for key, value in rdn if key == "commonName"]
    return names + [value for kind, value in cert.get("subjectAltName", ()) if kind == "DNS"]


@dataclass
class _Pending:
    """A request prepared for the PDP: what to ask, and what to log with the answer."""

    started: float
    event: dict[str, Any]
    action: str
    command: Any
    keys: dict[str, str]
    subop: bool
    request: dict[str, Any] = field(default_factory=dict)
    patient: str | None = None
    identifier: bytes = b""
    transfer_syntax: str | None = None


@dataclass
class AssociationState:
    subject: Subject
    context: Context
    pacs: Pacs
    positive_response: bool
    gets: set[int] = field(default_factory=set)  # message ids of permitted C-GETs
    transfers: list[dict[str, Any]] = field(default_factory=list)  # permitted C-MOVE/C-GET, for the summary
    get_sub_operations: int = 0
    batch: list[tuple[dict[str, Any], asyncio.Future[Decision]]] = field(default_factory=list)
    # C-FINDs whose Patient ID return key we added to check each match: removed from the matches again
    strip_patient_id: set[int] = field(default_factory=set)


class MoveRegistry:
    """C-MOVE destinations with an authorized move outstanding (the return path opens only for them).

    In one process: several server agents behind a load balancer need the PACS to send each move's
    sub-operations back through the agent that authorized it (one return port per agent).
    """

    def __init__(self) -> None:
        self._moves: dict[str, dict[int, float]] = {}
        self._counts: dict[int, dict[str, int]] = {}  # association -> destination -> sub-operations
        self._origins: dict[int, tuple[str, set[int]]] = {}  # association -> its calling AE, its moves' IDs

    def allow(self, destination: str, association_id: int, until: float, calling_ae: str = "",
              message_id: int | None = None) -> None:
        self._moves.setdefault(destination, {})[association_id] = until
        origin = self._origins.setdefault(association_id, (calling_ae, set()))
        if message_id is not None:
            origin[1].add(message_id)

    def origins(self, destination: str, originator_ae: str | None, originator_id: int | None) -> list[int]:
        """The associations whose C-MOVE a sub-operation for ``destination`` may belong to, by the Move
        Originator AE Title and Message ID the PACS puts in it (PS3.7 9.1.1.1)."""
        if not self.active(destination):
            return []
        return [association for association in self._moves.get(destination, {})
                if (not originator_ae or self._origins.get(association, ("", set()))[0] == originator_ae)
                and (originator_id is None or originator_id in self._origins.get(association, ("", set()))[1])]

    def active(self, destination: str) -> bool:
        now = time.monotonic()
        holders = self._moves.get(destination, {})
        for key in [k for k, until in holders.items() if until < now]:
            del holders[key]
        return bool(holders)

    def record_sub_operation(self, destination: str, association_id: int) -> None:
        counts = self._counts.setdefault(association_id, {})
        counts[destination] = counts.get(destination, 0) + 1

    def end(self, association_id: int) -> dict[str, int]:
        """Close the association's moves; the sub-operations relayed for each destination."""
        for holders in self._moves.values():
            holders.pop(association_id, None)
        self._origins.pop(association_id, None)
        return self._counts.pop(association_id, {})


def _comment(text: str) -> str:
    return ("Not authorized: " + text)[:64] if text else "Not authorized"


class ServerPolicy:
    def __init__(self, config: ServerAgentConfig, authn: Authenticator, pdp: PdpClient, moves: MoveRegistry,
                 decisions: Decisions, pacs_ssl: Mapping[str, ssl.SSLContext] | None = None) -> None:
        self.config = config
        self.authn = authn
        self.pdp = pdp
        self.moves = moves
        self.decisions = decisions
        self.pacs_ssl = dict(pacs_ssl or {})  # by PACS name, for those reached over TLS
        self.states: dict[int, AssociationState] = {}
        self._tasks: set[asyncio.Future[None]] = set()

    # ---- association -------------------------------------------------------------------------------------
    def decide_now(self, question: Question, connection: ConnectionInfo | None = None) -> Verdict | None:
        """The verdicts that need no I/O, answered without a task (the driver tries this first)."""
        if connection is None or isinstance(question, AssociationQuestion):
            return None
        state = self.states.get(connection.association_id)
        if isinstance(question, AcceptQuestion):
            if state is not None and state.positive_response:
                return ForwardAccept(ac=add_identity_response(question.ac))  # PS3.7 D.3.3.7.2
            return ForwardAccept()
        assert isinstance(question, DimseQuestion)
        if state is None or question.command.is_response:
            return None
        return self._request_now(state, question, connection.association_id)

    async def decide(self, question: Question, connection: ConnectionInfo) -> Verdict:
        if isinstance(question, AssociationQuestion):
            return await self._associate(question, connection)
        state = self.states.get(connection.association_id)
        if isinstance(question, AcceptQuestion):
            verdict = self.decide_now(question, connection)
            assert verdict is not None
            return verdict
        assert isinstance(question, DimseQuestion)
        if state is None:
            return Refuse(comment="Not authorized: no authenticated association")
        if question.command.is_response:
            return await self._review(state, question, connection.association_id)
        return await self._request(state, question, connection.association_id)

    def association_ended(self, connection: ConnectionInfo) -> None:
        state = self.states.pop(connection.association_id, None)
        relayed = self.moves.end(connection.association_id)
        if state is not None:
            for transfer in state.transfers:  # one summary per retrieval (issue 6)
                count = (relayed.get(transfer.get("move_destination", ""), 0) if transfer["action"] == "C-MOVE"
                         else state.get_sub_operations)
                self.decisions.write("transfer-summary", association=connection.association_id,
                                     user=state.subject.describe(), workstation=state.context.workstation,
                                     pacs=state.pacs.name, sub_operations=count, **transfer)
            self.decisions.write("association-end", association=connection.association_id,
                                 user=state.subject.describe(), calling_ae=state.context.calling_ae)

    async def decide_move_sub_operation(self, question: DimseQuestion, destination: str) -> Verdict:
        """A C-STORE the PACS sends on the return path, decided as the C-MOVE it belongs to: for the
        user who made it, with this image's Patient ID and study. The move's request may have named
        the study alone (PS3.4 C.4.2.1.4), which no consent directive can be checked against."""
        command = question.command
        originator_ae, originator_id = command.get(Tag.MOVE_ORIGINATOR_AE_TITLE), command.get(
            Tag.MOVE_ORIGINATOR_MESSAGE_ID)
        candidates = [(a, self.states[a]) for a in self.moves.origins(
            destination, originator_ae if isinstance(originator_ae, str) else None,
            originator_id if isinstance(originator_id, int) else None) if a in self.states]
        # Several matching moves (a viewer moving studies in parallel, each association with message
        # ID 1) are one as long as one user made them all; otherwise nothing says whose image it is.
        if not candidates or any((s.subject.kind, s.subject.id) != (candidates[0][1].subject.kind,
                                                                    candidates[0][1].subject.id)
                                 for _, s in candidates):
            self.decisions.write("authorization", action="C-MOVE", sub_operation_of="C-MOVE",
                                 message_id=command.message_id, move_destination=destination, decision="deny",
                                 reason="no_matching_move" if not candidates else "ambiguous_move")
            return Refuse(comment=_comment("no single C-MOVE this image belongs to"))
        association, state = candidates[0]
        verdict = self._request_now(state, question, association, move_sub_operation=destination)
        if verdict is None:
            verdict = await self._request(state, question, association, move_sub_operation=destination)
        if isinstance(verdict, Permit):
            self.moves.record_sub_operation(destination, association)
        return verdict

    def _route(self, called: str) -> Pacs | None:
        name, at, _ = called.partition("@")
        if name in self.config.pacs:
            return self.config.pacs[name]
        if not at and self.config.default_pacs:
            return self.config.pacs[self.config.default_pacs]
        return None

    async def _associate(self, question: AssociationQuestion, connection: ConnectionInfo) -> Verdict:
        started = time.perf_counter()
        rq = question.rq
        names = certificate_names(connection.peer_certificate)
        peer = f"{connection.peer[0]}:{connection.peer[1]}" if connection.peer else ""
        event: dict[str, Any] = {"association": connection.association_id, "peer": peer, "certificate": names,
                                 "calling_ae": rq.calling_ae, "called_ae": rq.called_ae}

        def reject(reason: str, code: tuple[int, int, int]) -> RejectAssociation:
            self.decisions.write("authentication", **event, decision="deny", reason=reason,
                                 latency_ms=round((time.perf_counter() - started) * 1000, 3))
            log.warning("association %d from %s refused: %s", connection.association_id, peer, reason)
            return RejectAssociation(reason_text=reason, result=code[0], source=code[1], reason=code[2])

        if self.config.refuse_unlogged and not self.decisions.healthy:
            return reject(f"decision log unavailable ({self.decisions.problem}): refusing to act unlogged",
                          (RejectResult.TRANSIENT, RejectSource.SERVICE_PROVIDER_PRESENTATION,
                           RejectReason.TEMPORARY_CONGESTION))
        pacs = self._route(rq.called_ae)
        if pacs is None:
            return reject(f"called AE title {rq.called_ae!r} names no PACS here",
                          (RejectResult.PERMANENT, RejectSource.SERVICE_USER, RejectReason.CALLED_AE_NOT_RECOGNIZED))
        event["pacs"] = pacs.name
        # The workstation named in the calling AE title (APP@WS) is where the C-MOVE return path goes
        # and what the decision log and the PDP see: a workstation agent's client certificate must
        # prove it (its name is the one this agent checks when it connects back to that workstation).
        # Without a certificate (the plain listener) the claim proves nothing: no workstation.
        workstation = claimed = rq.calling_ae.partition("@")[2]
        if claimed:
            registered = self.config.workstations.get(claimed)
            expected = (registered.server_name if registered else claimed).lower()
            if not names:
                workstation = ""
                event["claimed_workstation"] = claimed
            elif expected not in {name.lower() for name in names}:
                return reject(f"calling AE title {rq.calling_ae!r} names workstation {claimed!r}, which the client "
                              f"certificate {names} does not prove", (RejectResult.PERMANENT, RejectSource.SERVICE_USER,
                                                                      RejectReason.CALLING_AE_NOT_RECOGNIZED))
        identity = extract_user_identity(rq)
        auth_failed = (RejectResult.PERMANENT, RejectSource.SERVICE_PROVIDER_ACSE, RejectReason.NO_REASON)
        if identity is None:
            node = self.config.nodes.get(rq.calling_ae)
            if node is None or (connection.peer and connection.peer[0] not in node.addresses):
                return reject("no user identity, and not a registered node at this address", auth_failed)
            subject = Subject(kind="node", id=node.ae_title, username=node.ae_title)
        else:
            event["identity_type"] = identity.type
            try:
                subject = await self.authn.authenticate(identity, names)
            except AuthenticationFailed as error:
                return reject(str(error), auth_failed)
        context = Context(calling_ae=rq.calling_ae, called_ae=rq.called_ae, workstation=workstation,
                          certificate=names, peer=peer)
        positive = bool(identity and identity.positive_response_requested)
        self.states[connection.association_id] = AssociationState(subject, context, pacs, positive)
        self.decisions.write("authentication", **event, decision="permit", user=subject.describe(),
                             reason="authenticated" if subject.kind == "user" else "node policy",
                             latency_ms=round((time.perf_counter() - started) * 1000, 3))
        forwarded = (strip_user_identity(rq) if identity else rq).with_ae_titles(called=pacs.ae_title)
        pacs_ssl = self.pacs_ssl.get(pacs.name)
        target = Upstream(host=pacs.host, port=pacs.port, ssl=pacs_ssl,
                          server_hostname=pacs.tls.server_name if pacs_ssl is not None and pacs.tls else None)
        return ForwardAssociation(target=target, rq=forwarded,
                                  review_ac=positive)

    # ---- requests ----------------------------------------------------------------------------------------------
    def _prepare(self, state: AssociationState, question: DimseQuestion, association: int,
                 move_sub_operation: str | None = None) -> Verdict | _Pending:
        """Everything about a request that needs no I/O: a verdict, or the question for the PDP.

        ``move_sub_operation``: the destination of a C-STORE the PACS sends on the return path for a
        C-MOVE this association made, decided as that retrieval (``association``: the C-MOVE's).
        """
        started = time.perf_counter()
        command = question.command
        action = ACTION_NAMES.get(command.command_field)  # type: ignore[call-overload]
        keys = read_keys(question.data_set, question.transfer_syntax) if question.data_set else {}
        # A request from the PACS: on this association only C-GET's C-STOREs are expected.
        subop = question.side.value == "server" or move_sub_operation is not None
        if subop:
            # A C-STORE is decided as the retrieval it belongs to; any other request from the PACS
            # side has no policy here and is refused below.
            action = (("C-MOVE" if move_sub_operation is not None else "C-GET")
                      if command.command_field == CommandField.C_STORE_RQ else None)
        event: dict[str, Any] = {"association": association, "message_id": command.message_id,
                                 "action": action or command.name, "user": state.subject.describe(),
                                 "calling_ae": state.context.calling_ae, "workstation": state.context.workstation,
                                 "pacs": state.pacs.name, "resource": keys}
        if action is not None and subop:
            event["sub_operation_of"] = action
        if command.move_destination or move_sub_operation:
            event["move_destination"] = command.move_destination or move_sub_operation
        pending = _Pending(started, event, action or "", command, keys, subop, identifier=question.data_set,
                           transfer_syntax=question.transfer_syntax)

        def refuse(reason: str, text: str) -> Refuse:
            self._event("authorization", event, started, "deny", reason)
            return Refuse(comment=_comment(text))

        if action is None:
            return refuse("unsupported_service", f"{command.name} is not supported here")
        if self.config.refuse_unlogged and not self.decisions.healthy:
            return refuse("decision_log_unavailable", "decision log unavailable")
        if state.subject.kind == "user" and time.time() >= state.subject.expires_at:
            return refuse("token_invalid", "the user's token has expired")
        patient = pinned_patient(keys)
        if action == "C-GET" and subop and not state.gets:
            return refuse("unsolicited_sub_operation", "C-STORE without an authorized C-GET")
        if command.command_field == CommandField.C_STORE_RQ and patient is None:  # a store or a sub-operation
            return refuse("patient_unknown", "no Patient ID in the head of the data set")
        if state.subject.kind == "node":
            node = self.config.nodes[state.subject.id]
            if action not in node.actions:
                return refuse("node_action_not_permitted", f"node {node.ae_title} may not {action}")
            self._event("authorization", event, started, "permit", "node_policy", rule_id=f"node:{node.ae_title}")
            return Permit()
        if not scope_allows(state.subject, action, patient):
            return refuse("insufficient_scope", f"token scopes do not allow {action}")
        if action == "C-MOVE" and not subop:  # the sub-operations' destination was checked with the move
            destination = command.move_destination or ""
            name, _, workstation = destination.partition("@")
            if not name or workstation != state.context.workstation or workstation not in self.config.workstations:
                return refuse("move_destination_not_allowed",
                              f"move destination {destination!r} is not the requester's workstation")
        pending.request = authzen_request(state.subject, action, command, keys, state.context)
        pending.patient = patient
        return pending

    def _conclude(self, state: AssociationState, pending: _Pending, decision: Decision, association: int) -> Verdict:
        action, command = pending.action, pending.command
        self._event("authorization", pending.event, pending.started, "permit" if decision.allowed else "deny",
                    decision.reason, rule_id=decision.rule_id, policy_version=decision.policy_version,
                    cached=decision.cached, break_glass=decision.break_glass)
        if decision.break_glass:
            log.warning("BREAK-GLASS: %s %s patient %s (%s)", state.subject.username, action, pending.patient,
                        decision.rule_id)
        if not decision.allowed:
            return Refuse(comment=_comment(decision.message or decision.reason))
        if action == "C-MOVE" and not pending.subop:
            self.moves.allow(command.move_destination or "", association, time.monotonic() +
                             self.config.move_timeout, state.context.calling_ae, command.message_id)
        if action == "C-GET" and not pending.subop and command.message_id is not None:
            state.gets.add(command.message_id)
        if action in ("C-MOVE", "C-GET") and not pending.subop:
            state.transfers.append({"action": action, "message_id": command.message_id, "resource": pending.keys,
                                    **({"move_destination": command.move_destination} if action == "C-MOVE" else {})})
        if pending.subop and action == "C-GET":
            state.get_sub_operations += 1
        if action != "C-FIND" or pending.patient is not None:
            return Permit()
        # A query not pinned to one patient: every match is checked before the user sees it, by its
        # Patient ID. If the query did not ask for it, ask the PACS for it too, and remove it from
        # the matches again so that the user sees what was asked (PS3.4 C.4.1.1.3).
        if "patient_id" not in pending.keys and command.message_id is not None:
            try:
                asked = with_return_key(pending.identifier, pending.transfer_syntax, PATIENT_ID, "LO")
            except ValueError as error:
                log.warning("association %d: C-FIND identifier unreadable (%s): refused", association, error)
                return Refuse(comment=_comment("query identifier could not be read"))
            state.strip_patient_id.add(command.message_id)
            return Rewrite(data_set=asked, review_responses=True)
        return Permit(review_responses=True)

    def _request_now(self, state: AssociationState, question: DimseQuestion, association: int,
                     move_sub_operation: str | None = None) -> Verdict | None:
        """The request's verdict without waiting, when no I/O is needed (warm cache, no introspection)."""
        prepared = self._prepare(state, question, association, move_sub_operation)
        if not isinstance(prepared, _Pending):
            return prepared
        if self.config.identity.introspect:
            return None
        decision = self.pdp.cached(prepared.request)
        return None if decision is None else self._conclude(state, prepared, decision, association)

    async def _request(self, state: AssociationState, question: DimseQuestion, association: int,
                       move_sub_operation: str | None = None) -> Verdict:
        prepared = self._prepare(state, question, association, move_sub_operation)
        if not isinstance(prepared, _Pending):
            return prepared
        why = await self.authn.still_valid(state.subject)  # revocation, when introspection is on
        if why is not None:
            self._event("authorization", prepared.event, prepared.started, "deny", "token_invalid")
            return Refuse(comment=_comment(why))
        try:
            (decision,) = await self.pdp.evaluate([prepared.request])
        except PdpUnavailable as error:
            log.error("PDP unavailable, request denied: %s", error)
            self._event("authorization", prepared.event, prepared.started, "deny", "pdp_unavailable",
                        detail=str(error))
            return Refuse(comment=_comment("authorization service unavailable"))
        return self._conclude(state, prepared, decision, association)

    # ---- C-FIND post-filter, in batches --------------------------------------------------------------------
    async def _review(self, state: AssociationState, question: DimseQuestion, association: int) -> Verdict:
        command = question.command
        if command.status not in STATUS_PENDING or command.command_field != CommandField.C_FIND_RSP:
            state.strip_patient_id.discard(command.message_id_responded_to or 0)  # the final response
            return Permit()
        keys = read_keys(question.data_set, question.transfer_syntax)
        patient = pinned_patient(keys)
        event: dict[str, Any] = {"association": association, "message_id": command.message_id_responded_to,
                                 "action": "C-FIND", "user": state.subject.describe(), "pacs": state.pacs.name,
                                 "resource": keys, "post_filter": True}
        started = time.perf_counter()
        if patient is None:
            self._event("authorization", event, started, "deny", "no_patient_id_to_check")
            return Drop(reason_text="match without a Patient ID cannot be checked")
        request = authzen_request(state.subject, "C-FIND", command, keys, state.context)
        future: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        state.batch.append((request, future))
        if len(state.batch) == 1:
            # Gather the matches that arrive within a few milliseconds into one AuthZEN batch (the core
            # keeps reading while up to RelayLimits.max_pending_reviews matches await their decision).
            asyncio.get_running_loop().call_later(BATCH_WINDOW, self._spawn_flush, state)
        elif len(state.batch) >= BATCH_MAX:
            self._spawn_flush(state)
        try:
            decision = await future
        except PdpUnavailable as error:
            self._event("authorization", event, started, "deny", "pdp_unavailable", detail=str(error))
            return Drop(reason_text="authorization service unavailable")
        self._event("authorization", event, started, "permit" if decision.allowed else "deny", decision.reason,
                    rule_id=decision.rule_id, policy_version=decision.policy_version, cached=decision.cached)
        if not decision.allowed:
            return Drop(reason_text=decision.reason)
        if command.message_id_responded_to in state.strip_patient_id:
            try:
                return Rewrite(data_set=without_element(question.data_set, question.transfer_syntax, PATIENT_ID))
            except ValueError:  # the match was allowed; only a key the user did not ask for stays in it
                return Permit()
        return Permit()

    def _spawn_flush(self, state: AssociationState) -> None:
        task = asyncio.ensure_future(self._flush(state))
        self._tasks.add(task)  # asyncio keeps only a weak reference to running tasks
        task.add_done_callback(self._tasks.discard)

    async def _flush(self, state: AssociationState) -> None:
        batch, state.batch = state.batch, []
        if not batch:
            return
        try:
            decisions = await self.pdp.evaluate([request for request, _ in batch])
        except PdpUnavailable as error:
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        for (_, future), decision in zip(batch, decisions, strict=True):
            if not future.done():
                future.set_result(decision)

    def _event(self, kind: str, event: dict[str, Any], started: float, decision: str, reason: str,
               **extra: Any) -> None:
        self.decisions.write(kind, **event, decision=decision, reason=reason,
                             latency_ms=round((time.perf_counter() - started) * 1000, 3), **extra)


def pacs_addresses(pacs: Iterable[Pacs]) -> set[str]:
    """The addresses the PACS open return associations from: each configured host as written and,
    for a name, every address it resolves to now (a return association arrives from an address,
    never a name). Resolved once, at start: a PACS that moves needs a restart."""
    addresses: set[str] = set()
    for entry in pacs:
        addresses.add(entry.host)
        try:
            infos = socket.getaddrinfo(entry.host, None, type=socket.SOCK_STREAM)
        except OSError as error:
            log.warning("PACS %s: host %r does not resolve (%s); return associations are accepted only from "
                        "that literal address", entry.name, entry.host, error)
            continue
        addresses.update(str(info[4][0]) for info in infos)
    return addresses


class ReturnPolicy:
    """The return listener: C-STORE sub-operations of an authorized C-MOVE, from the PACS to the
    workstation agent of the destination, over TLS. Anything else is refused."""

    def __init__(self, config: ServerAgentConfig, moves: MoveRegistry, decisions: Decisions,
                 client_ssl: Any, requests: ServerPolicy) -> None:
        self.config = config
        self.moves = moves
        self.decisions = decisions
        self.requests = requests  # decides each sub-operation as the C-MOVE it belongs to
        self.client_ssl = client_ssl
        self.pacs_hosts = pacs_addresses(config.pacs.values())
        self.destinations: dict[int, str] = {}  # return association -> the move destination it serves

    def association_ended(self, connection: ConnectionInfo) -> None:
        self.destinations.pop(connection.association_id, None)

    async def decide(self, question: Question, connection: ConnectionInfo) -> Verdict:
        if isinstance(question, AcceptQuestion):
            return ForwardAccept()
        if isinstance(question, DimseQuestion):
            command = question.command
            if command.command_field != CommandField.C_STORE_RQ or question.side.value != "client":
                # Only the PACS's C-STORE sub-operations travel here; anything else is refused.
                self.decisions.write("sub-operation", association=connection.association_id, action=command.name,
                                     message_id=command.message_id, decision="deny", reason="unsupported_service")
                return Refuse(comment=_comment(f"{command.name} not accepted on the return path"))
            destination = self.destinations.get(connection.association_id, "")
            return await self.requests.decide_move_sub_operation(question, destination)
        assert isinstance(question, AssociationQuestion)
        rq = question.rq
        peer = connection.peer[0] if connection.peer else ""
        event = {"association": connection.association_id, "peer": peer, "calling_ae": rq.calling_ae,
                 "called_ae": rq.called_ae, "path": "return"}
        if peer not in self.pacs_hosts:
            self.decisions.write("authentication", **event, decision="deny", reason="not a configured PACS")
            return RejectAssociation(reason_text=f"{peer} is not a configured PACS", result=1, source=1, reason=3)
        workstation = self.config.workstations.get(rq.called_ae.partition("@")[2])
        if workstation is None or not self.moves.active(rq.called_ae):
            self.decisions.write("authentication", **event, decision="deny",
                                 reason="no authorized C-MOVE outstanding for this destination")
            return RejectAssociation(reason_text=f"unsolicited C-STORE to {rq.called_ae!r}", result=1, source=1,
                                     reason=7)
        self.decisions.write("authentication", **event, decision="permit", reason="authorized move outstanding",
                             workstation=workstation.name)
        self.destinations[connection.association_id] = rq.called_ae
        return ForwardAssociation(target=Upstream(host=workstation.host, port=workstation.port, ssl=self.client_ssl,
                                                  server_hostname=workstation.server_name))
