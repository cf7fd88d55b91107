"""One association through the server agent: its policy object, holding everything about it.

:class:`ServerPolicy` (the factory the main listeners are given) opens a :class:`ServerAssociation`
per connection. That object authenticates the User Identity (PS3.7 D.3.3.7) or applies node policy,
routes by the called AE title, and decides every request (:mod:`server_agent.authorization`), every
C-FIND match under review (:mod:`server_agent.postfilter`), every C-GET sub-operation and, for the
return listener, every C-MOVE sub-operation of its moves (:mod:`server_agent.moves`). The user, their
token, the moves and retrievals it made, the matches it awaits: attributes of this object, released
by :meth:`ServerAssociation.close`, never keyed by a number a peer chose.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import logging
import ssl
import time
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field

from audit.events import Action, Disclosure, Reason
from dicomwire.commands import Notice
from dicomwire.dimse import CommandField
from dicomwire.identity import add_identity_response, extract_user_identity, strip_user_identity
from dicomwire.policy import EVERY_REQUEST, Asks, ConnectionInfo, Ending
from dicomwire.questions import (
    AcceptQuestion,
    AcceptVerdict,
    AssociationQuestion,
    AssociationVerdict,
    Drop,
    ForwardAccept,
    ForwardAssociation,
    Permit,
    Refuse,
    RejectAssociation,
    RequestQuestion,
    RequestVerdict,
    ResponseQuestion,
    ResponseVerdict,
    Rewrite,
)
from dicomwire.tls import certificate_names

from . import deidpatient
from .authn import AuthenticationFailed, Authenticator, Subject
from .authorization import ACTIONS, Facts, Outcome, PdpQuery, conclude, prepare, read_facts
from .config import Pacs, ServerAgentConfig
from .decisions import Decisions
from .deidfind import ResearchFind
from .deidprefetch import DEADLINE as PREFETCH_DEADLINE
from .deidprefetch import members
from .deidretrieve import (
    DeidRetrieval,
    NotTranslatable,
    StoreReview,
    SubOperation,
    retrieve_response,
    store_response,
    sub_operation,
)
from .deidview import DeidView
from .moves import Move, MoveRegistry
from .pacstext import heard, relayed
from .pdp import Decision, PdpClient, PdpUnavailable
from .postfilter import Batcher, FindReview, decide_match, find_permitted
from .pseudonyms import PseudonymSource, PseudonymsUnavailable
from .records import Recorder
from .refusals import refusal_comment
from .research import ResearchFinds
from .resources import Context
from .routing import pacs_upstream, route, workstation_claim
from .sessions import Binding, Sessions, session_claims
from .shared import MoveRefused, SharedUnavailable

log = logging.getLogger("server_agent")


def comment(text: str, reason: Reason | None = None, pdp_reason: str = "") -> str:
    """The Error Comment of a refusal: its code and the reason, whole words within VR LO's 64 characters."""
    return refusal_comment(text, reason, pdp_reason)


@dataclass(eq=False, slots=True, kw_only=True)
class Retrieval:
    """A permitted C-GET (the review object of its request): its sub-operations come on this association."""

    facts: Facts
    sub_operations: int = 0  # permitted
    deid: DeidRetrieval | None = None  # a research view's: its sub-operations are de-identified


@dataclass(slots=True)
class ServerPolicy:
    """The collaborators every association of the main listeners shares; opens one object each."""

    config: ServerAgentConfig
    authn: Authenticator
    pdp: PdpClient
    moves: MoveRegistry
    decisions: Decisions
    pacs_ssl: Mapping[str, ssl.SSLContext] = field(default_factory=dict)  # by PACS name, for those over TLS
    asks: Asks = EVERY_REQUEST  # deny by default: every request is decided
    sessions: Sessions | None = None  # OIDC sessions ([sessions]); None: token lifetimes only
    pseudonyms: PseudonymSource | None = None  # [pseudonymizer]: the research view's; None: no research view

    def open(self, connection: ConnectionInfo) -> ServerAssociation:
        return ServerAssociation(self, connection)


class ServerAssociation:
    """Everything the server agent knows and decides about one association."""

    def __init__(self, factory: ServerPolicy, connection: ConnectionInfo) -> None:
        self.factory = factory
        self.config = factory.config
        self.connection = connection
        self.record = Recorder(factory.decisions, connection.association_id)
        self.subject: Subject | None = None
        self.context: Context | None = None
        self.pacs: Pacs | None = None
        self.positive_response = False
        self.moves: list[Move] = []  # in the registry while outstanding; removed with this association
        self.retrievals: list[Retrieval | Move] = []  # for the transfer summaries at the end
        self.batcher = Batcher(factory.pdp)
        self.session: Binding | None = None  # its user's OIDC session, when bound to one
        pseudonyms = factory.pseudonyms  # the research view's C-FINDs (issue 16), when there is a service
        self.research = ResearchFinds(self.record, self.batcher, pseudonyms) if pseudonyms is not None else None

    @property
    def who_key(self) -> tuple[str, str]:
        return (self.subject.kind, self.subject.id) if self.subject else ("", "")

    # ---- the association -------------------------------------------------------------------------------
    async def associate(self, question: AssociationQuestion) -> AssociationVerdict:
        started = time.perf_counter()
        rq, connection = question.rq, self.connection
        names = certificate_names(connection.peer_certificate)
        self.record.begin(peer=connection.peer, certificate=names, calling_ae=rq.calling_ae, called_ae=rq.called_ae)

        def reject(reason: Reason, detail: str, code: tuple[int, int, int]) -> RejectAssociation:
            self.record.authentication(reason, detail, started)
            log.warning("association %s from %s refused: %s", connection.association_id, connection.peer, detail)
            return RejectAssociation(reason_text=detail, result=code[0], source=code[1], reason=code[2])

        unavailable = self._unavailable()
        if unavailable is not None:
            return reject(*unavailable, (2, 3, 1))
        pacs = route(self.config, rq.called_ae)
        if pacs is None:
            return reject(Reason.CALLED_AE_UNKNOWN, f"called AE title {rq.called_ae!r} names no PACS here", (1, 1, 7))
        self.record.note(pacs=pacs.name)
        claim = workstation_claim(self.config, rq.calling_ae, names)
        if claim.refusal is not None:
            return reject(claim.refusal, claim.detail, (1, 1, 3))
        if claim.claimed and not claim.workstation:
            self.record.note(claimed_workstation=claim.claimed)
        identity = extract_user_identity(rq)
        if identity is None:
            node = self.config.nodes.get(rq.calling_ae)
            if node is None or (connection.peer and connection.peer[0] not in node.addresses):
                return reject(Reason.IDENTITY_MISSING, "no user identity, and not a registered node at this address",
                              (1, 2, 1))
            subject = Subject(kind="node", id=node.ae_title, username=node.ae_title)
        else:
            self.record.note(identity_type=identity.type)
            try:
                subject = await self.factory.authn.authenticate(identity, names, source=self.record.source)
            except AuthenticationFailed as error:
                # Throttled, or the provider out of reach: try again later (transient); else permanent.
                transient = error.reason in (Reason.THROTTLED, Reason.PROVIDER_UNAVAILABLE,
                                             Reason.INTROSPECTION_FAILED, Reason.SHARED_STATE_UNAVAILABLE)
                return reject(error.reason, error.detail, (2 if transient else 1, 2, 1))
            if subject.kind == "node" and subject.id != rq.calling_ae:
                return reject(Reason.NOT_A_USER, f"a token of node {subject.id} cannot call as {rq.calling_ae!r}",
                              (1, 2, 1))
            sessions = self.factory.sessions
            ended = await self._session_refusal(subject)
            if ended is not None:
                return reject(*ended)
            if sessions is not None:  # lives while its session lives, not only as long as the token
                subject, self.session = sessions.bind(self, subject)
        self.subject, self.pacs = subject, pacs
        self.context = Context(calling_ae=rq.calling_ae, called_ae=rq.called_ae, workstation=claim.workstation,
                               certificate=names, peer=self.record.peer)
        self.positive_response = bool(identity and identity.positive_response_requested)
        self.record.authenticated(subject, claim.workstation, started)
        forwarded = (strip_user_identity(rq) if identity else rq).with_ae_titles(called=pacs.ae_title)
        return ForwardAssociation(target=pacs_upstream(pacs, self.factory.pacs_ssl), rq=forwarded,
                                  review_ac=self.positive_response)

    def _unavailable(self) -> tuple[Reason, str] | None:
        """What this agent cannot act without: its decision log (unless configured to go on), the shared
        state (without it no move, throttle or logout holds). Refused transient: try again later."""
        problem = self.factory.decisions.problem if self.config.refuse_unlogged else None
        if problem is not None:
            return Reason.DECISION_LOG_UNAVAILABLE, f"decision log unavailable ({problem}): refusing to act unlogged"
        shared = self.factory.moves.shared.problem
        if shared is not None:
            return Reason.SHARED_STATE_UNAVAILABLE, f"shared state unavailable ({shared})"
        return None

    async def _session_refusal(self, subject: Subject) -> tuple[Reason, str, tuple[int, int, int]] | None:
        """Why this subject's session may not start an association: ended here or elsewhere."""
        ended = self.factory.sessions.refusal(subject) if self.factory.sessions else None
        if ended is None:
            try:
                ended = await self._ended_elsewhere(subject)
            except SharedUnavailable as error:
                return error.reason, f"shared state unavailable ({error})", (2, 3, 1)
        return (Reason.TOKEN_INACTIVE, ended, (1, 2, 1)) if ended is not None else None

    async def _ended_elsewhere(self, subject: Subject) -> str | None:
        """A logout another worker or instance received (the shared store's ended sessions)."""
        if subject.kind != "user" or not subject.token:
            return None
        claims = session_claims(subject)
        sid, issued = claims.get("sid"), claims.get("iat", 0)
        ended = await self.factory.moves.shared.session_ended(
            sid=sid if isinstance(sid, str) else "", sub=subject.id,
            issued_at=float(issued) if isinstance(issued, int | float) else 0.0)
        return "session ended (logout or revocation)" if ended else None

    def accept(self, question: AcceptQuestion) -> AcceptVerdict:
        if self.positive_response:
            return ForwardAccept(ac=add_identity_response(question.ac))  # PS3.7 D.3.3.7.2
        return ForwardAccept()

    # ---- requests ---------------------------------------------------------------------------------------
    def request(self, question: RequestQuestion) -> RequestVerdict | Awaitable[RequestVerdict]:
        command = question.command
        action = ACTIONS.get(command.command_field)  # type: ignore[call-overload]
        sub_operation_of: Action | None = None
        retrieval: Retrieval | None = None
        if question.side.value == "server":
            # A request from the PACS: on this association only a C-GET's C-STOREs are expected, each
            # decided as the C-GET it belongs to; anything else has no policy here.
            if command.command_field != CommandField.C_STORE_RQ:
                action = None
            else:
                action = sub_operation_of = Action.C_GET
                retrieval = next((r for r in question.retrievals if isinstance(r, Retrieval)), None)
        facts = self.facts(question, action, sub_operation_of)
        if sub_operation_of is not None and retrieval is None:
            return self._refuse(facts, Reason.UNSOLICITED_SUB_OPERATION, "C-STORE without an authorized C-GET")
        if retrieval is not None and retrieval.deid is not None:
            return sub_operation(self, question, facts, retrieval, retrieval.deid)
        return heard(question, self.decide(facts, retrieval))  # its final response is read (pacstext)

    def facts(self, question: RequestQuestion, action: Action | None, sub_operation_of: Action | None,
              move_destination: str = "") -> Facts:
        return read_facts(question.command, question.data_set, question.transfer_syntax,
                          complete=question.data_set_complete, action=action, sub_operation_of=sub_operation_of,
                          move_destination=move_destination)

    def decide(self, facts: Facts, retrieval: Retrieval | Move | None = None,
               sub: SubOperation | None = None) -> RequestVerdict | Awaitable[RequestVerdict]:
        """A request (or a sub-operation of ``retrieval``, ``sub`` if it is de-identified): at once when
        no I/O is needed."""
        started = time.perf_counter()
        subject, context = self.subject, self.context
        if subject is None or context is None:
            return self._refuse(facts, Reason.IDENTITY_MISSING, "no authenticated association")
        ended = self.factory.sessions.check(self.session) if self.factory.sessions else None
        if ended is not None:
            return self._refuse(facts, Reason.TOKEN_INVALID, ended, started)
        problem = self.factory.decisions.problem if self.config.refuse_unlogged else None
        prepared = prepare(subject, context, facts, nodes=dict(self.config.nodes),
                           workstations=dict(self.config.workstations), now=time.time(), log_problem=problem)
        if isinstance(prepared, Outcome):
            self.record.authorization(facts, subject, context, prepared.reason, prepared.allowed, started,
                                      detail=prepared.text)
            if prepared.allowed:
                return self._counted(retrieval, Permit())
            return Refuse(comment=comment(prepared.text, prepared.reason), status=prepared.status)
        if not self.config.identity.introspect and not self._names_patient(facts):
            decision = self.factory.pdp.cached(prepared.request)
            if decision is not None:
                return self._concluded(facts, decision, retrieval, started, sub)
        return self._decide_later(facts, prepared, retrieval, started, sub)

    async def _decide_later(self, facts: Facts, query: PdpQuery, retrieval: Retrieval | Move | None,
                            started: float, sub: SubOperation | None) -> RequestVerdict:
        assert self.subject is not None
        why = None
        if self.session is None or time.time() < self.session.token_expires_at:
            # Revocation by introspection while the token lives; past it, a bound session's end comes
            # by back-channel logout (checked in decide) and the expired token is not asked about.
            why = await self.factory.authn.still_valid(self.subject)
        if why is not None:
            return self._refuse(facts, why.reason, why.text, started)
        decided: Decision | deidpatient.Refusal
        try:
            if self._names_patient(facts):  # perhaps by a pseudonym: translated first (deidpatient)
                assert self.context is not None and self.factory.pseudonyms is not None
                decided = await deidpatient.decide(facts, query.request, subject=self.subject, context=self.context,
                                                   pdp=self.factory.pdp, source=self.factory.pseudonyms)
            else:
                (decided,) = await self.factory.pdp.evaluate([query.request])
        except PdpUnavailable as error:
            log.error("PDP unavailable, request denied: %s", error)
            return self._refuse(facts, Reason.PDP_UNAVAILABLE, "authorization service unavailable", started,
                                detail=str(error))
        if isinstance(decided, deidpatient.Refusal):
            self.record.authorization(facts, self.subject, self.context, decided.reason, False, started,
                                      pdp=decided.decision, detail=decided.detail)
            return Refuse(comment=comment(decided.text, decided.reason))
        decision = decided
        verdict = self._concluded(facts, decision, retrieval, started, sub)
        return await verdict if inspect.isawaitable(verdict) else verdict

    def _names_patient(self, facts: Facts) -> bool:
        """A request decided for one Patient ID that may be a research view's pseudonym."""
        return self.factory.pseudonyms is not None and deidpatient.names_patient(facts)

    def _concluded(self, facts: Facts, decision: Decision, retrieval: Retrieval | Move | None,
                   started: float, sub: SubOperation | None = None) -> RequestVerdict | Awaitable[RequestVerdict]:
        assert self.subject is not None and self.context is not None
        conclusion = conclude(facts, decision, pseudonymizer=self.factory.pseudonyms is not None)
        if retrieval is not None and conclusion.allowed and (sub is not None or conclusion.deid is not None):
            return self._disclosing(facts, decision, conclusion.deid, retrieval, sub, started)
        if conclusion.deid is not None and facts.action is Action.C_FIND:
            # The research view: keys translated back before the PACS sees them; recorded there.
            if self.research is None:  # conclude() refuses a view without a service: never identified
                return self._refuse(facts, Reason.PSEUDONYMIZER_UNAVAILABLE, "research view unavailable", started)
            return self.research.request(facts, decision, conclusion.deid, self.subject, self.context, started)
        self.record.authorization(facts, self.subject, self.context, conclusion.reason, conclusion.allowed, started,
                                  pdp=decision, detail=conclusion.text if conclusion.reason is not Reason.PDP else "")
        if conclusion.security_alert:
            log.warning("BREAK-GLASS: %s %s patient %s (%s)", self.subject.username, facts.name, facts.patient,
                        decision.rule_id)
        if not conclusion.allowed:
            return Refuse(comment=comment(conclusion.text, conclusion.reason, decision.reason))
        if retrieval is not None:
            return self._counted(retrieval, Permit())
        if conclusion.deid is not None and facts.action in (Action.C_GET, Action.C_MOVE):
            return self._deid_retrieval(facts, conclusion.deid)
        if facts.action is Action.C_FIND:
            return find_permitted(self, facts, conclusion.filter_results)
        if facts.action is Action.C_MOVE:
            return self._move_permitted(facts)
        if facts.action is Action.C_GET:
            retrieval = Retrieval(facts=facts)
            self.retrievals.append(retrieval)
            return Permit(review=retrieval)
        return Permit()

    def _counted(self, retrieval: Retrieval | Move | None, verdict: Permit) -> Permit:
        if isinstance(retrieval, Retrieval):
            retrieval.sub_operations += 1
        elif isinstance(retrieval, Move):
            retrieval.relayed += 1
        return verdict

    async def _move_permitted(self, facts: Facts, deid: DeidRetrieval | None = None,
                              rewrite: bytes | None = None) -> RequestVerdict:
        """Outstanding in the shared store before the PACS sees the C-MOVE (its sub-operations may reach
        any worker or instance); refused when it cannot be (fail closed). ``deid``: a research view's
        (its sub-operations are de-identified by this process only: a record that reaches another
        process carries no view, and there the researcher's obligation finds no retrieval to honour it,
        so it is refused); ``rewrite``: the identifier the PACS gets instead of the client's."""
        assert self.context is not None
        move = Move(owner=self, facts=facts, destination=facts.command.move_destination or "",
                    calling_ae=self.context.calling_ae, message_id=facts.command.message_id,
                    expires=time.monotonic() + self.config.move_timeout, deid=deid)
        try:
            await self.factory.moves.add(move)
        except (SharedUnavailable, MoveRefused) as error:
            reason = Reason.SHARED_STATE_UNAVAILABLE if isinstance(error, SharedUnavailable) else Reason.OVERLOADED
            log.error("association %s: permitted C-MOVE refused: %s", self.connection.association_id, error)
            return self._refuse(facts, reason, "the return path cannot be opened now", detail=str(error))
        self.moves.append(move)
        self.retrievals.append(move)
        return Permit(review=move) if rewrite is None else Rewrite(data_set=rewrite, review=move)

    # ---- the research view of a retrieval (server_agent.deidretrieve) ------------------------------------
    async def _deid_retrieval(self, facts: Facts, view: DeidView) -> RequestVerdict:
        """A researcher's C-GET or C-MOVE: its pseudonymous keys translated into the identifier the PACS
        gets, its sub-operations (the review object's) de-identified."""
        assert self.factory.pseudonyms is not None  # conclude() refuses a research view without a service
        deid = DeidRetrieval(view=view, source=self.factory.pseudonyms)
        try:
            translated = await deid.translate(facts.keys, facts.data_set, facts.transfer_syntax)
        except NotTranslatable as error:
            return self._refuse(facts, error.reason, str(error))
        except PseudonymsUnavailable as error:
            return self._refuse(facts, Reason.PSEUDONYMIZER_UNAVAILABLE, "pseudonymisation service unavailable",
                                detail=str(error))
        real = read_facts(facts.command, translated, facts.transfer_syntax, complete=True, action=facts.action)
        if real.malformed:  # our own encoding: never, unless a real value is not one
            return self._refuse(real, Reason.NOT_DEIDENTIFIABLE, "retrieval keys could not be translated",
                                detail=real.malformed)
        if self.pacs is not None and self.context is not None:  # its pseudonyms in one call (deidprefetch)
            pacs, ssl_context, calling = self.pacs, self.factory.pacs_ssl.get(self.pacs.name), self.context.calling_ae
            deid.ask_ahead(lambda: members(pacs, ssl_context, calling, real.resource), PREFETCH_DEADLINE)
        if facts.action is Action.C_MOVE:
            return await self._move_permitted(real, deid, translated)
        retrieval = Retrieval(facts=real, deid=deid)
        self.retrievals.append(retrieval)
        return Rewrite(data_set=translated, review=retrieval)

    def _disclosing(self, facts: Facts, decision: Decision, view: DeidView | None, retrieval: Retrieval | Move,
                    sub: SubOperation | None, started: float) -> RequestVerdict | Awaitable[RequestVerdict]:
        """A permitted sub-operation to disclose de-identified: in its retrieval's view, no other."""
        if sub is None or (view is not None and view != sub.retrieval.view):
            why = ("a research view for an image of an identified retrieval" if sub is None
                   else "another research view than its retrieval's")
            self.record.authorization(facts, self.subject, self.context, Reason.OBLIGATION_NOT_UNDERSTOOD, False,
                                      started, pdp=decision, detail=why)
            return Refuse(comment=comment(why))
        return sub.finish(self, facts, decision, retrieval, started)

    def disclosed(self, facts: Facts, decision: Decision, retrieval: Retrieval | Move, started: float,
                  disclosure: Disclosure) -> None:
        """A sub-operation disclosed de-identified: the permit, with what it showed (issue 16 item 5)."""
        self.record.authorization(facts, self.subject, self.context, Reason.PDP, True, started, pdp=decision,
                                  disclosure=disclosure)
        self._counted(retrieval, Permit())

    def refused(self, facts: Facts, reason: Reason, text: str, started: float | None, detail: str = "") -> Refuse:
        return self._refuse(facts, reason, text, started, detail)

    def _refuse(self, facts: Facts, reason: Reason, text: str, started: float | None = None,
                detail: str = "") -> Refuse:
        if self.subject is not None and self.context is not None:
            self.record.authorization(facts, self.subject, self.context, reason, False, started, detail=detail or text)
        else:
            self.record.authorization(facts, None, None, reason, False, started, detail=detail or text)
        return Refuse(comment=comment(text, reason))

    # ---- responses under review --------------------------------------------------------------------------
    def response(self, question: ResponseQuestion) -> ResponseVerdict | Awaitable[ResponseVerdict]:
        """A response under review; the PACS's Error Comment is relayed as the PACS's (pacstext)."""
        return relayed(question, self._response(question))

    def _response(self, question: ResponseQuestion) -> ResponseVerdict | Awaitable[ResponseVerdict]:
        review = question.review
        if isinstance(review, StoreReview):  # a C-GET's de-identified C-STORE, answered by the researcher's app
            return store_response(question, review)
        if isinstance(review, Move):
            return self._move_responded(review, question)
        if isinstance(review, Retrieval) and review.deid is not None:
            return retrieve_response(question, review.deid)
        if isinstance(review, ResearchFind):
            assert self.research is not None and self.subject is not None and self.context is not None
            if question.final:
                return self.research.final(question, review)
            return self.research.match(question, review, self.subject, self.context) if question.data_set \
                else Drop(reason_text="a pending C-FIND response without its match")
        if not isinstance(review, FindReview) or question.final or not question.data_set:
            return Permit()
        return decide_match(self, question, review)

    async def _move_responded(self, move: Move, question: ResponseQuestion) -> ResponseVerdict:
        """The counts the PACS announced reach every process; the final response ends the move. A store
        that cannot be told is logged: its return path then refuses (it is unreachable) or expires. A
        research view's response shows pseudonyms (deidretrieve.retrieve_response)."""
        try:
            await self.factory.moves.respond(move, question.command, question.final)
        except SharedUnavailable as error:
            log.error("association %s: C-MOVE response not shared: %s", self.connection.association_id, error)
        if move.deid is None:
            return Permit()
        verdict = retrieve_response(question, move.deid)
        return await verdict if inspect.isawaitable(verdict) else verdict

    # ---- what the core did on its own, and the end ---------------------------------------------------------
    def notice(self, notice: Notice) -> None:
        self.record.notice(notice, self.subject, self.context)

    def close(self, ending: Ending) -> None:
        if self.moves:  # gone from the shared store (else its TTL, move_timeout, removes it)
            with contextlib.suppress(RuntimeError):  # no loop: nothing was shared by this object
                asyncio.get_running_loop().create_task(_removed(self.factory.moves, list(self.moves)))
        for retrieval in self.retrievals:
            if retrieval.deid is not None:
                retrieval.deid.close()
        self.batcher.close()
        if self.research is not None:
            self.research.close()
        if self.factory.sessions is not None:
            self.factory.sessions.release(self.session)
        if self.session is not None and self.session.ended:  # the decision log says why it was aborted
            ending = dataclasses.replace(ending, reason=self.session.ended)
        if self.subject is not None:
            self.record.ended(self.subject, self.context, self.pacs, self.retrievals, ending)


async def _removed(moves: MoveRegistry, ended: list[Move]) -> None:
    for move in ended:
        try:
            await moves.remove(move)
        except SharedUnavailable as error:
            log.warning("an ended association's C-MOVE stays in the shared store until it expires: %s", error)


__all__ = ["Retrieval", "ServerAssociation", "ServerPolicy", "comment"]
