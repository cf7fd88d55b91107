"""C-FIND in the research view (issue 16 item 2): the query translated back, every match de-identified.

A C-FIND permitted with a ``de-identify`` obligation (:mod:`server_agent.deidview`) goes to the PACS
as real keys and comes back as pseudonyms:

* **The query** (PS3.4 C.4.1.1.3.1). A researcher may match only on what the view shows unchanged
  (PS3.15 Table E.1-1 keeps it: Modality, Query/Retrieve Level...) and on two kinds of pseudonyms:
  Patient ID (one value, no pattern) and the UIDs the view replaces (single values or a list, PS3.4
  C.2.2.2.2). Every other key with a value (Patient's Name, Birth Date, a date the view shifts, a
  cleaned description, a private tag, a sequence with values) is refused, 0124H with the reason, before
  anything reaches the PACS: its match would say something about the real value. Pseudonyms go back to
  real values in one call to the pseudonymisation service; a value the project never handed out is not
  a pseudonym of this project (a real Patient ID above all) and is refused the same way. The rewritten
  identifier is read again as the PACS will read it, and must name what was translated (one reading).
* **Each match** (PS3.4 C.4.1.1.3.2) is decided with its real Patient ID (every match, pinned query
  or not: the PDP decided the request on pseudonyms it cannot place), and a decision that is not a
  plain permit for that patient (a deny, ``filter-results``, another project's view) drops it: patients
  without the project's consent stay invisible. A permitted match is de-identified per the view's
  profile with pseudonyms asked for in batches (:class:`PseudonymBatcher`: one HTTP call for the
  matches of a few milliseconds), and its disclosure recorded (:class:`audit.events.Disclosure`).

Nothing in the identified view changes: a clinician's C-FIND never comes here.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from pydicom.datadict import keyword_for_tag

from audit.events import Disclosure, Reason
from deid import Needs, Pseudonyms, deidentify_identifier, needs
from deid.profile import Op
from deid.values import dictionary_vr, padded, split_values
from dicomwire.dataset import (
    DEFLATED_EXPLICIT_VR_LE,
    EXPLICIT_VR_BE,
    IMPLICIT_VR_LE,
    ITEM,
    ITEM_DELIMITER,
    LONG_VRS,
    SEQUENCE_DELIMITER,
    UNDEFINED,
    encode_element,
    read_data_set,
    with_element,
    without_element,
)
from dicomwire.sequence_tags import is_sequence

from .authorization import Facts
from .deidview import DeidView
from .keys import ISSUER_OF_PATIENT_ID, PATIENT_ID, DecisionKeys, Matching, identifier_keys
from .pseudonyms import PseudonymSource
from .window import Window

# Keys every query may carry with a value: they say nothing about a patient (PS3.4 C.4.1.2.1, C.6.1.1).
QUERY_CONTROL = frozenset({0x00080005, 0x00080052})  # Specific Character Set, Query/Retrieve Level
_TRANSLATED_OPS = frozenset({Op.UID, Op.UID_OR_ZERO})
BATCH_WINDOW = 0.003  # seconds to gather the pseudonyms of several matches into one call
BATCH_MAX = 64  # = RelayLimits.max_pending_reviews: a full batch goes at once


class ResearchRefusal(Exception):
    """A research query refused before it reaches the PACS; ``text`` is the Error Comment's reason."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


@dataclass(frozen=True, slots=True, kw_only=True)
class Query:
    """What a research query asks in pseudonyms: its Patient ID and the UIDs of each UID key."""

    patient_id: str | None = None
    uids: tuple[tuple[int, str, tuple[str, ...]], ...] = ()  # (tag, VR, pseudonymous values)


@dataclass(eq=False, slots=True, kw_only=True)
class ResearchFind:
    """The review object of a permitted research C-FIND: what its matches are checked against."""

    facts: Facts  # of the request as the researcher sent it (pseudonymous keys)
    view: DeidView
    pinned: str | None  # the real patient a pseudonymous Patient ID was translated to
    strip_patient_id: bool  # we added Patient ID as a return key: removed from each match again
    pending: int = 0  # matches whose verdict is being made
    quiet: asyncio.Event = field(default_factory=asyncio.Event)  # set while none is
    withheld: int = 0  # matches withheld because the view could not be made (not: not permitted)
    why: str = ""  # ... the first reason


def _name(tag: int) -> str:
    return keyword_for_tag(tag) or f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def read_query(identifier: bytes, transfer_syntax: str, view: DeidView) -> Query:
    """The pseudonyms a research identifier matches on, or :class:`ResearchRefusal` (module docstring)."""
    if transfer_syntax == DEFLATED_EXPLICIT_VR_LE:
        raise ResearchRefusal("research view: deflated identifiers not supported")
    read = read_data_set(identifier, transfer_syntax)
    explicit, big = transfer_syntax != IMPLICIT_VR_LE, transfer_syntax == EXPLICIT_VR_BE
    patient_id: str | None = None
    uids: list[tuple[int, str, tuple[str, ...]]] = []
    for element in read.elements:
        value = read.value(element)
        vr = element.vr if element.vr and element.vr != "UN" else dictionary_vr(element.tag)
        if element.tag in QUERY_CONTROL or not value.strip(b" \x00"):
            continue  # a return key (zero length: universal matching) or the query's own control
        if vr == "SQ" or is_sequence(element.tag) or element.undefined_length:
            if _only_return_keys(value, explicit, big):
                continue
            raise ResearchRefusal(f"research view: no matching inside {_name(element.tag)}")
        if element.tag == PATIENT_ID:
            text = value.strip(b" \x00").decode("latin-1")
            if any(c in text for c in "*?\\"):
                raise ResearchRefusal("research view: Patient ID must be one pseudonym")
            patient_id = text
            continue
        op = view.profile.op(element.tag, vr) if element.tag & 0x10000 == 0 else Op.REMOVE
        if vr == "UI" and op in _TRANSLATED_OPS:
            uids.append((element.tag, vr, tuple(v.decode("ascii") for v in split_values(value))))
        elif op is not Op.KEEP:
            raise ResearchRefusal(f"research view: no matching on {_name(element.tag)}")
    return Query(patient_id=patient_id, uids=tuple(uids))


def _only_return_keys(value: bytes, explicit: bool, big: bool) -> bool:
    """A sequence key whose items hold zero-length keys only (return keys, PS3.4 C.2.2.1.3): its
    items and nested sequences are read inline; any element with a value ends the walk with False."""
    order = ">" if big else "<"
    head, pos = struct.Struct(order + "HHI"), 0
    while pos + 8 <= len(value):
        group, number, length = head.unpack_from(value, pos)
        tag = group << 16 | number
        if tag in (ITEM, ITEM_DELIMITER, SEQUENCE_DELIMITER):
            pos += 8  # an item's content follows inline
            continue
        code = value[pos + 4:pos + 6] if explicit else b""
        if explicit and code in LONG_VRS:
            (length,) = struct.unpack_from(order + "I", value, pos + 8)
            pos += 12
        elif explicit:
            (length,) = struct.unpack_from(order + "H", value, pos + 6)
            pos += 8
        else:
            pos += 8
        nested = code == b"SQ" or (not explicit and (is_sequence(tag) or length == UNDEFINED))
        if nested or length == 0:
            continue  # a sequence's items are walked inline; an empty key is a return key
        return False
    return pos == len(value)


async def translate(identifier: bytes, transfer_syntax: str, view: DeidView, query: Query,
                    source: PseudonymSource) -> tuple[bytes, str | None]:
    """The identifier the PACS gets (real Patient ID and UIDs in place of the pseudonyms) and the real
    patient it is pinned to. :class:`ResearchRefusal` for a value that is no pseudonym of the project;
    :class:`server_agent.pseudonyms.PseudonymsUnavailable` when the service cannot say."""
    pseudonymous_uids = [uid for _, _, values in query.uids for uid in values]
    originals = await source.originals(view.project.id, patient_ids=[query.patient_id] if query.patient_id else [],
                                       uids=pseudonymous_uids)
    replacements: dict[int, tuple[str, bytes]] = {}
    real_patient = None
    if query.patient_id is not None:
        real_patient = originals.patient_ids.get(query.patient_id)
        if real_patient is None:
            raise ResearchRefusal(f"research view: Patient ID is no pseudonym of {view.project.id}")
        replacements[PATIENT_ID] = ("LO", padded(real_patient.encode("latin-1"), "LO"))
    for tag, vr, values in query.uids:
        real = [originals.uids.get(uid) for uid in values]
        if any(r is None for r in real):
            raise ResearchRefusal(f"research view: {_name(tag)} is no pseudonym of {view.project.id}")
        replacements[tag] = (vr, padded("\\".join(r for r in real if r).encode("ascii"), "UI"))
    rewritten = _replaced(identifier, transfer_syntax, replacements)
    _same_reading(rewritten, transfer_syntax, real_patient, {tag: values for tag, (_, values) in replacements.items()})
    return rewritten, real_patient


def _replaced(identifier: bytes, transfer_syntax: str, replacements: Mapping[int, tuple[str, bytes]]) -> bytes:
    """The identifier with these top-level values replaced, every other byte as it was."""
    read = read_data_set(identifier, transfer_syntax)
    out, pos = [], 0
    for element in read.elements:
        if element.tag in replacements:
            vr, value = replacements[element.tag]
            out += [read.data[pos:element.start], encode_element(transfer_syntax, element.tag, vr, value)]
            pos = element.end
    out.append(read.data[pos:])
    return b"".join(out)


def _same_reading(rewritten: bytes, transfer_syntax: str, patient: str | None, values: Mapping[int, bytes]) -> None:
    """The PACS must read the rewritten identifier as what the agent decided: one real Patient ID,
    matched as a single value, and each translated UID key as exactly the real UIDs (one reading)."""
    keys: DecisionKeys = identifier_keys(rewritten, transfer_syntax)
    if patient is not None and (keys.patient_id.matching is not Matching.SINGLE or keys.patient_id.value != patient):
        raise ResearchRefusal("research view: the translated Patient ID would match otherwise")
    read = read_data_set(rewritten, transfer_syntax)
    for tag, value in values.items():
        element = read.get(tag)
        if element is None or read.value(element) != value:
            raise ResearchRefusal(f"research view: {_name(tag)} could not be translated")


def asked_patient_id(identifier: bytes, transfer_syntax: str) -> tuple[bytes, bool]:
    """The identifier with Patient ID as a return key (each match is decided by it), and whether it was
    added (then removed from each match again: the researcher sees what was asked, PS3.4 C.4.1.1.3).
    Issuer of Patient ID is asked too: a consent given at one issuer must not admit another issuer's
    patient of the same ID (PS3.3 C.7.1.1); Table E.1-1 removes it from what the researcher sees (X)."""
    added = with_element(identifier, transfer_syntax, PATIENT_ID, "LO")
    return with_element(added, transfer_syntax, ISSUER_OF_PATIENT_ID, "LO"), added is not identifier


def match_acceptable(decision_view: DeidView | None, obligations: Iterable[str], problem: str,
                     view: DeidView) -> tuple[Reason, str] | None:
    """Why a PDP permit for one match is not a permit to show it in ``view`` (None when it is): a permit
    on ``filter-results`` decided no patient, and another view than the request's is not this one."""
    if problem:
        return Reason.OBLIGATION_NOT_UNDERSTOOD, f"obligation unreadable: {problem}"
    if "filter-results" in obligations:
        return Reason.PATIENT_NOT_DECIDED, "the policy did not permit this patient alone"
    if decision_view is not None and decision_view != view:
        return Reason.OBLIGATION_NOT_UNDERSTOOD, "the policy gave this match another research view"
    return None


def deidentified_match(data: bytes, transfer_syntax: str, review: ResearchFind, pseudonyms: Pseudonyms,
                       wanted: Needs) -> tuple[bytes, Disclosure]:
    """The match as the researcher sees it, and its disclosure record naming the pseudonyms it shows
    (``wanted``: this match's needs; ``pseudonyms`` may answer a whole batch). Raises DeidError or
    MalformedDataSet: the match is not shown."""
    view = review.view
    result = deidentify_identifier(data, transfer_syntax, view.profile, pseudonyms)
    shown = without_element(result.data, transfer_syntax, PATIENT_ID) if review.strip_patient_id else result.data
    uids = sorted({pseudonyms.uids[uid] for uid in wanted.uids})
    disclosed = tuple(filter(None, [result.patient_id, *uids]))
    return shown, Disclosure(project=view.project.id, profile=view.profile_name, pseudonyms=disclosed)


def match_needs(data: bytes, transfer_syntax: str, view: DeidView) -> Needs:
    return needs(data, transfer_syntax, view.profile)


class PseudonymBatcher:
    """One association's pseudonym requests for one project, gathered into one call per window."""

    def __init__(self, source: PseudonymSource, project: str, window: float = BATCH_WINDOW,
                 size: int = BATCH_MAX) -> None:
        self.source, self.project = source, project
        self._window: Window[Needs, Pseudonyms] = Window(self._ask, window, size)

    async def get(self, wanted: Needs) -> Pseudonyms:
        """The pseudonyms ``wanted`` asks for (and others asked within the window: a superset)."""
        if not wanted:
            return Pseudonyms()
        return await self._window.ask(wanted)

    async def _ask(self, batch: list[Needs]) -> list[Pseudonyms]:
        """One call for every need of the window; each waiter gets the whole answer."""
        wanted = Needs()
        for needed in batch:
            wanted = wanted | needed
        answer = await self.source.pseudonyms(self.project, wanted)
        return [answer] * len(batch)

    def close(self) -> None:
        self._window.close()


__all__ = ["PseudonymBatcher", "Query", "ResearchFind", "ResearchRefusal", "asked_patient_id", "deidentified_match",
           "match_acceptable", "match_needs", "read_query", "translate"]
