"""The research view of a C-GET or a C-MOVE (issue 16 item 3): keys translated back, sub-operations
de-identified in transit, responses that echo UIDs made pseudonymous.

A researcher names what to retrieve by the pseudonyms a de-identified C-FIND showed. Once the PDP
permits the request with a ``de-identify`` obligation (:mod:`server_agent.deidview`), the identifier is
translated: every key the PACS retrieves by (PS3.4 C.4.2.2.1, C.4.3.2.1: the Query/Retrieve Level and
the unique keys, Patient ID and Study, Series, SOP Instance UIDs) must be a pseudonym the project
handed out, and the identifier sent to the PACS is built anew from their real values and nothing
else, so that it means to the PACS exactly what the agent decided (:func:`translate`).

Each C-STORE sub-operation of such a retrieval (a C-GET's on the client's association, a C-MOVE's on
the return association) is held until its header is whole (``Extend``: up to
``RelayLimits.max_header_length``), refused when its pixels may show identity (Burned In Annotation,
PS3.15 E.1.1 note 1; :mod:`deid.pixels`), then decided as its retrieval is (the PDP, with its real
Patient ID); permitted, its header is replaced by the de-identified one (PS3.15 E.1-1; Patient Identity
Removed YES, the De-identification Method Code Sequence, :mod:`deid.header`) and its Pixel Data
streams on unchanged, never held whole (``Rewrite(keep_from=)``). The command's Affected SOP Instance
UID (PS3.7 9.1.1.1) becomes the same pseudonym as the data set's, and the receiver's C-STORE-RSP gets
the real one back on its way to the PACS. The pseudonyms a retrieval needs are asked for at most once
each (:class:`DeidRetrieval` remembers them: a study's Patient ID, Study and Series UIDs are asked for
with its first instance only). A C-GET-RSP or C-MOVE-RSP keeps only what the researcher may see: its
Failed SOP Instance UID List (0008,0058) as pseudonyms, no Error Comment (the PACS's free text).

Nothing after a data set's Pixel Data element reaches the researcher: the rewrite is cut there
(``Rewrite(cut_after_pixel_data=True)``, :mod:`dicomwire.pixelend`: native pixels end with their
defined length, encapsulated ones with their Sequence Delimitation Item, PS3.5 A.4), whether the data
set was held whole or streams. What may follow (Digital Signatures (FFFA,FFFA), a private group,
Data Set Trailing Padding (FFFC,FFFC), a retired (7FE0,0020)) is dropped. That is the profile's own
rule: PS3.15 Table E.1-1 (2026c, :mod:`deid.table`) removes Digital Signatures Sequence and Data Set
Trailing Padding (action X), and E.1.1 removes private attributes unless Retain Safe Private keeps
them (E.3.10: the safe ones the project names, which a header carries); the header's de-identifier
(:mod:`deid.header`) never sees these elements, so the relay drops them rather than pass them unread.

Every sub-operation disclosed is written to the decision log with the disclosure (project, profile,
the pseudonyms shown) beside the real Patient ID of its resource, so that the patient's accounting of
disclosures lists research use (issue 16 item 5).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from audit.events import Disclosure, Reason
from deid import (
    Deidentified,
    DeidError,
    Header,
    MissingPseudonym,
    Needs,
    PatientPseudonym,
    Pseudonyms,
    deidentify_read,
    header_end,
    needs_of,
    pixel_risk_of,
    read_header,
)
from dicomwire.dataset import (
    DEFLATED_EXPLICIT_VR_LE,
    DataSet,
    MalformedDataSet,
    encode_element,
    read_data_set,
)
from dicomwire.dimse import CommandSet, Tag, command_values, encode_command
from dicomwire.errors import EncodeError
from dicomwire.limits import RelayLimits
from dicomwire.questions import (
    Extend,
    Permit,
    Refuse,
    RequestQuestion,
    RequestVerdict,
    ResponseQuestion,
    ResponseVerdict,
    Rewrite,
)

from .deidresponse import failed_list_value, whole_response, without_comment
from .deidview import DeidView
from .keys import (
    PATIENT_ID,
    QUERY_RETRIEVE_LEVEL,
    SERIES_INSTANCE_UID,
    SOP_INSTANCE_UID,
    SPECIFIC_CHARACTER_SET,
    STUDY_INSTANCE_UID,
    DecisionKeys,
    Key,
    Matching,
    retrieve_keys,
)
from .pseudonyms import PseudonymSource, PseudonymsUnavailable

if TYPE_CHECKING:
    from .authorization import Facts
    from .pdp import Decision

log = logging.getLogger("server_agent.deid")

FAILED_SOP_INSTANCES = 0x00080058  # Failed SOP Instance UID List (PS3.4 C.4.2.1.4.2, C.4.3.1.3.2)
# Pseudonyms one retrieval remembers (real value -> pseudonym): a study of 10,000 instances with a few
# UIDs each; past it the retrieval asks again instead of growing.
MAX_REMEMBERED = 50_000
MAX_HEADER = RelayLimits().max_header_length  # the relay refuses an Extend beyond it
GROWTH = 4  # each Extend asks for this many times what was held: a 4 MiB header in four rounds
# The keys a retrieval is translated by (PS3.4 C.4.2.2.1): (DecisionKeys attribute, tag, VR, pseudonym kind).
_KEYS = (("sop_instance_uid", SOP_INSTANCE_UID, "UI"), ("patient_id", PATIENT_ID, "LO"),
         ("study_instance_uid", STUDY_INSTANCE_UID, "UI"), ("series_instance_uid", SERIES_INSTANCE_UID, "UI"))
_LEVEL_KEY = {"PATIENT": "patient_id", "STUDY": "study_instance_uid", "SERIES": "series_instance_uid",
              "IMAGE": "sop_instance_uid"}
_TRANSLATED = frozenset({QUERY_RETRIEVE_LEVEL, SPECIFIC_CHARACTER_SET, *(tag for _, tag, _ in _KEYS)})


class NotTranslatable(ValueError):
    """A researcher's retrieval that cannot be translated one way only: refused (0124H), ``reason`` in
    the decision log (a key that names no pseudonym of the project is an identifying key)."""

    def __init__(self, text: str, reason: Reason = Reason.NOT_DEIDENTIFIABLE) -> None:
        super().__init__(text)
        self.reason = reason


class Owner(Protocol):
    """The association that made the retrieval: it decides each sub-operation and records it."""

    def decide(self, facts: Facts, retrieval: Any = None,
               sub: SubOperation | None = None) -> RequestVerdict | Awaitable[RequestVerdict]: ...

    def disclosed(self, facts: Facts, decision: Decision, retrieval: Any, started: float,
                  disclosure: Disclosure) -> None: ...

    def refused(self, facts: Facts, reason: Reason, text: str, started: float | None, detail: str = "") -> Refuse: ...


# ---- the request ----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class Translated:
    """The identifier for the PACS (real keys only) and the pseudonyms the researcher named."""

    identifier: bytes
    named: tuple[str, ...]


def pseudonymous_keys(keys: DecisionKeys) -> tuple[list[str], list[str]]:
    """The Patient IDs and UIDs a researcher's retrieval names, or :class:`NotTranslatable`: the
    level's unique key must name something (single values; UIDs may be a list, PS3.4 C.2.2.2.2), the
    keys above it are single values or absent."""
    level = keys.level.value
    if level not in _LEVEL_KEY:
        raise NotTranslatable("a de-identified retrieval needs a Query/Retrieve Level of PATIENT, STUDY, "
                              "SERIES or IMAGE")
    patient_ids: list[str] = []
    uids: list[str] = []
    for name, _, vr in _KEYS:
        key: Key = getattr(keys, name)
        if key.matching is Matching.UNIVERSAL:
            if name == _LEVEL_KEY[level]:
                raise NotTranslatable(f"the {level} level's unique key is missing")
            continue
        if key.matching is Matching.SINGLE:
            values = [key.value]
        elif key.matching is Matching.UID_LIST and vr == "UI":
            values = list(key.values)
        else:
            raise NotTranslatable("only pseudonyms, as single values, name a de-identified retrieval")
        (patient_ids if vr == "LO" else uids).extend(values)
    return patient_ids, uids


def translate(identifier: bytes, transfer_syntax: str, originals_ids: dict[str, str],
              originals_uids: dict[str, str]) -> Translated:
    """The identifier the PACS gets: Query/Retrieve Level and the unique keys with their real values, in
    tag order and the identifier's own transfer syntax, nothing else. Any other element with a value
    is refused (a key the PACS might read and the agent did not translate); one without is dropped."""
    if transfer_syntax == DEFLATED_EXPLICIT_VR_LE:
        raise NotTranslatable("a deflated identifier is not translated")
    read = read_data_set(identifier, transfer_syntax)
    keys = retrieve_keys(identifier, transfer_syntax)
    extra = [e for e in read.elements if e.tag not in _TRANSLATED and e.end > e.value_start]
    if extra:
        tag = extra[0].tag
        raise NotTranslatable(f"({tag >> 16:04X},{tag & 0xFFFF:04X}) is no key of a de-identified retrieval")
    patient_ids, uids = pseudonymous_keys(keys)
    named = tuple(patient_ids + uids)
    elements: list[tuple[int, str, bytes]] = [(QUERY_RETRIEVE_LEVEL, "CS", _pad(keys.level.value.encode(), "CS"))]
    for name, tag, vr in _KEYS:
        key = getattr(keys, name)
        if key.matching is Matching.UNIVERSAL:
            continue
        table = originals_ids if vr == "LO" else originals_uids
        values = [key.value] if key.matching is Matching.SINGLE else list(key.values)
        real = [table.get(value) for value in values]
        if any(value is None for value in real):
            raise NotTranslatable("a key names no pseudonym of this project", Reason.IDENTIFYING_KEY)
        raw = "\\".join(v for v in real if v is not None).encode("latin-1")
        if not raw.isascii():  # no Specific Character Set goes with it: the PACS would read it another way
            raise NotTranslatable("a real Patient ID outside the default character repertoire")
        elements.append((tag, vr, _pad(raw, vr)))
    return Translated(identifier=b"".join(encode_element(transfer_syntax, tag, vr, value)
                                          for tag, vr, value in sorted(elements)), named=named)


def _pad(value: bytes, vr: str) -> bytes:
    return value + (b"\x00" if vr == "UI" else b" ") if len(value) & 1 else value


# ---- the retrieval ----------------------------------------------------------------------------------------
@dataclass(eq=False, slots=True, kw_only=True)
class DeidRetrieval:
    """One de-identified C-GET or C-MOVE: its view, the pseudonyms it has used, what it refused."""

    view: DeidView
    source: PseudonymSource
    uids: dict[str, str] = field(default_factory=dict)
    patients: dict[str, PatientPseudonym] = field(default_factory=dict)
    lookups: int = 0  # calls to the pseudonymisation service
    ahead: asyncio.Task[None] | None = None  # the pseudonyms asked ahead of the sub-operations, while asked
    disclosed: int = 0
    refused: int = 0

    async def translate(self, keys: DecisionKeys, identifier: bytes, transfer_syntax: str) -> bytes:
        """The researcher's identifier with real keys (:func:`translate`), the pseudonyms it named asked
        back from the service in one call, and remembered for the sub-operations."""
        patient_ids, uids = pseudonymous_keys(keys)
        found = await self.source.originals(self.view.project.id, patient_ids=patient_ids, uids=uids)
        self.lookups += 1
        translated = translate(identifier, transfer_syntax, dict(found.patient_ids), dict(found.uids))
        self.uids.update({real: shown for shown, real in found.uids.items() if real})
        return translated.identifier

    def ask_ahead(self, find: Callable[[], Needs | None], timeout: float) -> None:
        """Start :meth:`prefetch` beside the retrieval: the PACS starts sending while it runs, and the
        images that come before it is done ask for themselves."""
        self.ahead = asyncio.get_running_loop().create_task(self.prefetch(find, timeout))
        self.ahead.add_done_callback(lambda _: setattr(self, "ahead", None))

    def close(self) -> None:
        if self.ahead is not None:
            self.ahead.cancel()

    async def prefetch(self, find: Callable[[], Needs | None], timeout: float) -> None:
        """Ask the service at once for what ``find`` (blocking: :func:`server_agent.deidprefetch.members`,
        run in a thread) says the retrieval will bring. An optimisation: any failure leaves the
        sub-operations to ask for themselves, and is only logged."""
        started = time.perf_counter()
        try:
            wanted = await asyncio.wait_for(asyncio.to_thread(find), timeout)
            found = time.perf_counter()
            if wanted:
                await self.pseudonyms(wanted)
            log.info("research view: %d values asked ahead (PACS %.0f ms, service %.0f ms)",
                     len(wanted.uids) + len(wanted.patient_ids) if wanted else 0, (found - started) * 1000,
                     (time.perf_counter() - found) * 1000)
        except (TimeoutError, OSError, RuntimeError, ValueError, PseudonymsUnavailable) as error:
            log.info("research view: no pseudonyms ahead of the retrieval (%s); asked per instance", error)

    def cached(self) -> Pseudonyms:
        """Every pseudonym this retrieval holds (a view, not a copy)."""
        return Pseudonyms(patients=self.patients, uids=self.uids)

    async def pseudonyms(self, wanted: Needs) -> Pseudonyms:
        """Those of ``wanted``, asking the service (one call) only for what this retrieval has not had."""
        missing = Needs(patient_ids=frozenset(wanted.patient_ids - self.patients.keys()),
                        uids=frozenset(wanted.uids - self.uids.keys()))
        if missing:
            answer = await self.source.pseudonyms(self.view.project.id, missing)
            self.lookups += 1
            shown = Pseudonyms(patients={p: (answer.patients.get(p) or self.patients[p]) for p in wanted.patient_ids},
                               uids={u: (answer.uids.get(u) or self.uids[u]) for u in wanted.uids})
            if len(self.uids) + len(self.patients) + len(answer.uids) > MAX_REMEMBERED:  # (after the answer
                self.uids.clear()  # is made of what was remembered: the bound must not lose what it needs)
                self.patients.clear()
            self.uids.update(answer.uids)
            self.patients.update(answer.patients)
            return shown
        return Pseudonyms(patients={p: self.patients[p] for p in wanted.patient_ids},
                          uids={u: self.uids[u] for u in wanted.uids})


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreReview:
    """A de-identified C-STORE sub-operation: its response goes back to the PACS with the real UID."""

    real: str
    shown: str


def sub_operation(owner: Owner, question: RequestQuestion, facts: Facts, transfer: Any,
                  retrieval: DeidRetrieval) -> RequestVerdict | Awaitable[RequestVerdict]:
    """A C-STORE sub-operation of a de-identified retrieval (``transfer``: its Retrieval or Move): its
    whole header first, refused if its pixels may identify, then decided as its retrieval is."""
    if facts.malformed:
        return owner.decide(facts, transfer)  # refused there, as any malformed data set is
    sub = SubOperation.of(question, retrieval)
    if isinstance(sub, Extend):
        return sub
    if isinstance(sub, str):
        retrieval.refused += 1
        return owner.refused(facts, Reason.NOT_DEIDENTIFIABLE, "instance not disclosed de-identified", None, sub)
    return owner.decide(facts, transfer, sub)


def more_of_header(question: RequestQuestion) -> Extend | None:
    """``Extend`` while the held head does not reach the end of the header (the first element of group
    7FE0, PS3.5 7.1); None once it does, or when the head cannot be read (decided, then refused)."""
    try:
        end = header_end(question.data_set, question.transfer_syntax, complete=question.data_set_complete)
    except (DeidError, MalformedDataSet):
        return None
    return _extend(question) if end is None else None


def header_wanted(question: RequestQuestion) -> Extend | None:
    """``Extend`` while a sub-operation's header is not whole yet (else None, and errors are left to
    :meth:`SubOperation.of`)."""
    try:
        end = header_end(question.data_set, question.transfer_syntax, complete=question.data_set_complete)
    except (DeidError, MalformedDataSet):
        return None
    return _extend(question) if end is None else None


def _extend(question: RequestQuestion) -> Extend:
    return Extend(length=min(MAX_HEADER, max(len(question.data_set) * GROWTH, 64 * 1024)))


@dataclass(frozen=True, slots=True, kw_only=True)
class SubOperation:
    """A C-STORE sub-operation of a de-identified retrieval, its header whole: what :meth:`finish` turns
    into its rewrite once the PDP permitted it."""

    retrieval: DeidRetrieval
    command: CommandSet
    header: Header  # read once: the pixel check, the pseudonyms it needs and the rewrite all use it
    transfer_syntax: str

    @property
    def end(self) -> int:
        return self.header.end

    @classmethod
    def of(cls, question: RequestQuestion, retrieval: DeidRetrieval) -> SubOperation | Extend | str:
        """The sub-operation; ``Extend`` while its header is not whole; or why it is refused before
        anyone is asked (pixels that may identify, a data set that cannot be de-identified in transit)."""
        ts = question.transfer_syntax
        try:
            header = read_header(question.data_set, ts, complete=question.data_set_complete)
            if header is None:
                return _extend(question)
            risk = pixel_risk_of(header.read, retrieval.view.pixels)
        except (DeidError, MalformedDataSet) as error:
            return str(error)[:200]
        if risk is not None:
            return f"pixels may identify the patient: {risk}"
        if not question.command.affected_sop_instance_uid:
            return "a C-STORE without an Affected SOP Instance UID"
        return cls(retrieval=retrieval, command=question.command, header=header, transfer_syntax=ts)

    def finish(self, owner: Owner, facts: Facts, decision: Decision, transfer: Any,
               started: float) -> RequestVerdict | Awaitable[RequestVerdict]:
        """The permitted sub-operation's rewrite, its disclosure recorded by ``owner`` (or its refusal): at
        once when the retrieval holds every pseudonym it needs (asked ahead, or for an earlier image),
        else after one call to the service for what is missing."""
        real = self.command.affected_sop_instance_uid or ""
        pseudonyms = self.retrieval.cached()
        try:
            new = deidentify_read(self.header, self.retrieval.view.profile, pseudonyms)
        except MissingPseudonym:
            return self._asked(owner, facts, decision, transfer, started)
        except (DeidError, MalformedDataSet) as error:
            return self._not_deidentifiable(owner, facts, started, error)
        if real not in pseudonyms.uids:
            return self._asked(owner, facts, decision, transfer, started)
        return self._rewrite(owner, facts, decision, transfer, started, pseudonyms, new)

    async def _asked(self, owner: Owner, facts: Facts, decision: Decision, transfer: Any,
                     started: float) -> RequestVerdict:
        retrieval, profile = self.retrieval, self.retrieval.view.profile
        real = self.command.affected_sop_instance_uid or ""
        try:
            pseudonyms = await retrieval.pseudonyms(needs_of(self.header, profile) | Needs(uids=frozenset({real})))
            new = deidentify_read(self.header, profile, pseudonyms)
        except PseudonymsUnavailable as error:
            retrieval.refused += 1
            return owner.refused(facts, Reason.PSEUDONYMIZER_UNAVAILABLE, "pseudonymisation service unavailable",
                                 started, str(error))
        except (DeidError, MalformedDataSet) as error:
            return self._not_deidentifiable(owner, facts, started, error)
        return self._rewrite(owner, facts, decision, transfer, started, pseudonyms, new)

    def _rewrite(self, owner: Owner, facts: Facts, decision: Decision, transfer: Any, started: float,
                 pseudonyms: Pseudonyms, new: Deidentified) -> RequestVerdict:
        real = self.command.affected_sop_instance_uid or ""
        shown = pseudonyms.uids[real]
        try:
            command = encode_command({**command_values(self.command), Tag.AFFECTED_SOP_INSTANCE_UID: shown})
        except EncodeError as error:
            return self._not_deidentifiable(owner, facts, started, error)
        self.retrieval.disclosed += 1
        owner.disclosed(facts, decision, transfer, started,
                        disclosure(self.retrieval.view, pseudonyms, new.patient_id, facts, shown))
        return Rewrite(command=command, data_set=new.data, keep_from=self.end, cut_after_pixel_data=True,
                       review=StoreReview(real=real, shown=shown))

    def _not_deidentifiable(self, owner: Owner, facts: Facts, started: float, error: Exception) -> Refuse:
        self.retrieval.refused += 1
        return owner.refused(facts, Reason.NOT_DEIDENTIFIABLE, "instance cannot be de-identified", started,
                             str(error)[:200])


def disclosure(view: DeidView, pseudonyms: Pseudonyms, patient: str | None, facts: Facts, shown: str) -> Disclosure:
    """What one instance disclosed: the pseudonymous Patient ID, then its Study, Series and SOP Instance
    UIDs as shown (the record's resource keeps the real ones)."""
    resource = facts.resource
    named = [patient or ""] + [pseudonyms.uids.get(resource.get(key, ""), "")
                               for key in ("study_instance_uid", "series_instance_uid")] + [shown]
    return Disclosure(project=view.project.id, profile=view.profile_name, pseudonyms=tuple(v for v in named if v))


# ---- responses ------------------------------------------------------------------------------------------
def store_response(question: ResponseQuestion, review: StoreReview) -> ResponseVerdict:
    """The receiver's C-STORE-RSP, on its way to the PACS: the real Affected SOP Instance UID back
    (PS3.7 9.1.1.1: the response names the instance the request did)."""
    command = question.command
    if command.affected_sop_instance_uid != review.shown:
        return Permit()
    try:
        return Rewrite(command=encode_command({**command_values(command), Tag.AFFECTED_SOP_INSTANCE_UID: review.real}))
    except EncodeError:
        return Permit()


def retrieve_response(question: ResponseQuestion, retrieval: DeidRetrieval) -> ResponseVerdict | Awaitable[
        ResponseVerdict]:
    """A C-GET-RSP or C-MOVE-RSP of a de-identified retrieval: without the PACS's Error Comment, and
    its data set (PS3.4 C.4.2.1.4.2, C.4.3.1.3.2: only the Failed SOP Instance UID List) with pseudonyms
    (:mod:`server_agent.deidresponse`: held whole, as many as fit)."""
    more = whole_response(question)
    if more is not None:
        return more
    command = question.command
    new_command = without_comment(command)
    if not command.has_data_set:
        return Rewrite(command=new_command) if new_command is not None else Permit()
    return _failed_list(question, retrieval, new_command)


async def _failed_list(question: ResponseQuestion, retrieval: DeidRetrieval,
                       new_command: bytes | None) -> ResponseVerdict:
    """The list as pseudonyms that fit (:func:`failed_list_value`); none at all when the service cannot
    make them (never a real UID): the counts still say how many failed."""
    ts = question.transfer_syntax
    uids: list[str] = []
    try:
        read: DataSet = read_data_set(question.data_set, ts)
        element = read.get(FAILED_SOP_INSTANCES)
        raw = read.value(element).rstrip(b"\x00 ").decode("ascii") if element is not None else ""
        uids = [uid.strip("\x00 ") for uid in raw.split("\\") if uid.strip("\x00 ")]
        shown = (await retrieval.pseudonyms(Needs(uids=frozenset(uids)))).uids if uids else {}
        uids = [shown[uid] for uid in uids]
    except (MalformedDataSet, UnicodeDecodeError, PseudonymsUnavailable):
        uids = []  # what cannot be made pseudonymous is not shown: the counts still say how many failed
    value = failed_list_value(uids, ts)
    return Rewrite(command=new_command, data_set=encode_element(ts, FAILED_SOP_INSTANCES, "UI", value))


__all__ = ["DeidRetrieval", "NotTranslatable", "StoreReview", "SubOperation", "Translated", "disclosure",
           "more_of_header", "pseudonymous_keys", "retrieve_response", "store_response", "sub_operation",
           "translate"]
