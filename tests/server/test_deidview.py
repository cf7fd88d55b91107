"""The ``de-identify`` obligation (issue 16 item 1): read strictly into one frozen research view, and what
a permit carrying it means for a request (no pseudonymisation service, a store, an unreadable one: deny)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from audit.events import Action, Reason
from deid import Option, SafePrivate
from dicomwire.dimse import decode_command, encode_command
from server_agent.authorization import conclude, read_facts
from server_agent.deidview import DeidView, ResearchProject
from server_agent.pdp import Decision

OBLIGATION: dict[str, Any] = {
    "id": "de-identify", "project": {"id": "STUDY-A", "scope": "STUDY-A"},
    "profile": {"name": "basic", "options": ["retain-longitudinal-modified-dates", "retain-patient-characteristics",
                                             "retain-device-identity", "clean-descriptors", "retain-safe-private"],
                "vocabulary": ["CT", "CHEST"],
                "safe_private": [{"group": "0019", "creator": "GEMS_ACQU_01", "element": "10"}]},
}


def answer(*obligations: Any, decision: bool = True) -> Decision:
    return Decision.from_answer({"decision": decision, "context": {"reason": "permit_research", "rule_id": "r",
                                                                   "obligations": list(obligations)}})


def test_the_obligation_becomes_one_frozen_view_with_the_profile_it_names() -> None:
    decision = answer("filter-results", OBLIGATION)
    view = decision.deid
    assert isinstance(view, DeidView) and not decision.obligation_problem
    assert decision.obligations == ("filter-results", "de-identify")
    assert view.project == ResearchProject(id="STUDY-A", scope="STUDY-A")
    assert view.profile.options == {Option.RETAIN_LONGITUDINAL_MODIFIED_DATES, Option.RETAIN_PATIENT_CHARACTERISTICS,
                                    Option.RETAIN_DEVICE_IDENTITY, Option.CLEAN_DESCRIPTORS,
                                    Option.RETAIN_SAFE_PRIVATE}
    assert view.profile.safe_private == {SafePrivate(group=0x19, creator="GEMS_ACQU_01", element=0x10)}
    assert view.profile.vocabulary == {"CT", "CHEST"} and not view.pixels.allow
    assert view.profile_name == ("basic+retain-safe-private+retain-device-identity+retain-patient-characteristics"
                                 "+retain-longitudinal-modified-dates+clean-descriptors")
    assert view.profile.codes()[0] == "113100"
    assert answer(copy.deepcopy(OBLIGATION)).deid == view, "the same obligation, the same (cacheable) value"


def _changed(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(OBLIGATION)
    target = changed
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return changed


BAD = [
    ("an unknown option", ("profile", "options"), ["retain-uids"]),
    ("full dates", ("profile", "options"), ["retain-longitudinal-full-dates"]),
    ("an option twice", ("profile", "options"), ["clean-descriptors", "clean-descriptors"]),
    ("another base profile", ("profile", "name"), "none"),
    ("no profile", ("profile",), KeyError),
    ("no project", ("project",), KeyError),
    ("no scope", ("project", "scope"), KeyError),
    ("a project id that is a path", ("project", "id"), "../STUDY-B"),
    ("an unknown member", ("watermark",), True),
    ("an unknown profile member", ("profile", "retain_everything"), True),
    ("a lower-case word", ("profile", "vocabulary"), ["chest"]),
    ("an even private group", ("profile", "safe_private"), [{"group": "0018", "creator": "X", "element": "10"}]),
    ("pixels allowed by a string", ("pixels",), {"allow_burned_in": "yes"}),
    ("options not a list", ("profile", "options"), "clean-descriptors"),
]


@pytest.mark.parametrize(("name", "path", "value"), BAD, ids=[b[0] for b in BAD])
def test_an_obligation_read_two_ways_or_not_at_all_makes_the_permit_a_deny(name: str, path: tuple[str, ...],
                                                                           value: Any) -> None:
    decision = answer(_changed(path, value))
    assert decision.deid is None and decision.obligation_problem.startswith("de-identify: ")
    conclusion = conclude(find(), decision, pseudonymizer=True)
    assert not conclusion.allowed and conclusion.reason is Reason.OBLIGATION_NOT_UNDERSTOOD


@pytest.mark.parametrize("obligations", [
    ["de-identify"], [OBLIGATION, OBLIGATION], [{"id": "watermark", "text": "x"}], [{"no": "id"}], [17],
])
def test_other_unreadable_obligations_are_denies(obligations: list[Any]) -> None:
    conclusion = conclude(find(), answer(*obligations), pseudonymizer=True)
    assert not conclusion.allowed and conclusion.reason is Reason.OBLIGATION_NOT_UNDERSTOOD


def test_obligations_that_are_not_a_list_are_a_deny() -> None:
    decision = Decision.from_answer({"decision": True, "context": {"obligations": "filter-results"}})
    assert not conclude(find(), decision).allowed


def find() -> Any:
    command = encode_command({0x00000002: "1.2.840.10008.5.1.4.1.2.2.1", 0x00000100: 0x0020, 0x00000110: 1,
                              0x00000700: 0, 0x00000800: 0x0000})
    identifier = b"\x08\x00\x52\x00\x06\x00\x00\x00STUDY "
    return read_facts(decode_command(command), identifier, "1.2.840.10008.1.2", complete=True, action=Action.C_FIND)


def test_a_research_view_is_given_only_with_a_pseudonymisation_service() -> None:
    decision = answer(OBLIGATION)
    given = conclude(find(), decision, pseudonymizer=True)
    assert given.allowed and given.deid == decision.deid
    without = conclude(find(), decision, pseudonymizer=False)
    assert not without.allowed and without.reason is Reason.PSEUDONYMIZER_UNAVAILABLE and without.deid is None
    assert len(f"Not authorized: {without.text}") <= 64, "the reason fits an Error Comment (LO)"


def test_a_denied_request_carries_no_view() -> None:
    conclusion = conclude(find(), answer(OBLIGATION, decision=False), pseudonymizer=True)
    assert not conclusion.allowed and conclusion.deid is None
