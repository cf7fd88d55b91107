"""The research view a permit may oblige: the ``de-identify`` obligation, read into one frozen value.

AuthZEN 1.0 has no obligations field (section 6.2 leaves the decision's ``context`` free form), so our
PDP puts them in ``context.obligations``: a list whose items are either a name (``"filter-results"``,
``"security-alert"``) or an object with an ``id`` and parameters. ``de-identify`` is the one object we
understand (docs/deidentification.md has the shape and an example)::

    {"id": "de-identify",
     "project": {"id": "STUDY-A", "scope": "STUDY-A"},
     "profile": {"name": "basic", "options": ["retain-longitudinal-modified-dates", "clean-descriptors"],
                 "vocabulary": ["CT", "CHEST"],
                 "safe_private": [{"group": "0019", "creator": "GEMS_ACQU_01", "element": "10"}]},
     "pixels": {"allow_burned_in": false}}

``profile.name`` is PS3.15 Table E.1-1's Basic Application Level Confidentiality Profile (``basic``,
the only base there is); ``options`` name the Annex E.3 options by the names of :data:`OPTIONS`.
``vocabulary`` (the words Clean Descriptors keeps, PS3.15 E.3.5) and ``safe_private`` (what Retain Safe
Private keeps, E.3.10) are the project's lists, optional. ``pixels.allow_burned_in`` lets a project
receive instances whose pixels may show identity (PS3.15 E.1.1 note 1); default no.

Read strictly, as every peer's value is: an unknown member, an unknown option, a value of the wrong
type, two ``de-identify`` obligations: :class:`ObligationError`, and the permit becomes a deny (fail
closed). Nothing here does I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from deid import Option, PixelPolicy, Profile, SafePrivate

DEIDENTIFY = "de-identify"
BASIC = "basic"  # PS3.15 E.1.1: the Basic Application Level Confidentiality Profile (CID 7050 113100)
# PS3.15 E.3 options by the names obligations use (Retain UIDs and Full Dates are never offered: they
# would defeat pseudonymisation; see deid.profile.Option).
OPTIONS: dict[str, Option] = {
    "retain-safe-private": Option.RETAIN_SAFE_PRIVATE,
    "retain-device-identity": Option.RETAIN_DEVICE_IDENTITY,
    "retain-institution-identity": Option.RETAIN_INSTITUTION_IDENTITY,
    "retain-patient-characteristics": Option.RETAIN_PATIENT_CHARACTERISTICS,
    "retain-longitudinal-modified-dates": Option.RETAIN_LONGITUDINAL_MODIFIED_DATES,
    "clean-descriptors": Option.CLEAN_DESCRIPTORS,
}
_NAMES = {option: name for name, option in OPTIONS.items()}
# Bounds on what a PDP answer may make us hold (one decision is cached per request).
MAX_VOCABULARY = 2000
MAX_SAFE_PRIVATE = 256
MAX_NAME = 64  # a project id or scope: the pseudonymisation service's path segment
_PROJECT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_WORD = re.compile(r"[A-Z0-9]{1,64}")
_HEX4 = re.compile(r"[0-9A-Fa-f]{4}")
_HEX2 = re.compile(r"[0-9A-Fa-f]{2}")


class ObligationError(ValueError):
    """A ``de-identify`` obligation we cannot read one way only: the permit is refused (0124H)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ResearchProject:
    """A research project (its id, as the decision log names it) and its pseudonymisation scope
    (what the pseudonymisation service keys pseudonyms by; two projects may share one)."""

    id: str
    scope: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DeidView:
    """What a researcher is shown: ``project``'s pseudonyms, ``profile``'s PS3.15 E.1-1 actions, and
    which instances may pass with their pixels (``pixels``)."""

    project: ResearchProject
    profile: Profile
    pixels: PixelPolicy = field(default_factory=PixelPolicy)

    @property
    def profile_name(self) -> str:
        """The profile as the decision log and audit messages name it: ``basic`` and its options."""
        return "+".join([BASIC, *(_NAMES[o] for o in OPTIONS.values() if o in self.profile.options)])


@dataclass(frozen=True, slots=True, kw_only=True)
class Obligations:
    """A permit's obligations: every name (the log's list), and the research view, if one is obliged."""

    names: tuple[str, ...] = ()
    deid: DeidView | None = None
    problem: str = ""  # why an obligation could not be read: the permit is a deny


def read_obligations(raw: Any) -> Obligations:
    """``context.obligations`` of an AuthZEN decision (absent: none). Never raises: a problem is
    returned, so the decision is still logged with what the PDP said."""
    if raw is None:
        return Obligations()
    if not isinstance(raw, list) or len(raw) > 16:
        return Obligations(names=("?",), problem="obligations must be a list of at most 16 items")
    names: list[str] = []
    views: list[DeidView] = []
    problem = ""
    for item in raw:
        name = item if isinstance(item, str) else item.get("id") if isinstance(item, dict) else None
        if not isinstance(name, str) or not name or len(name) > MAX_NAME:
            names.append("?")
            problem = problem or "an obligation without a name"
            continue
        names.append(name)
        if name == DEIDENTIFY:
            try:
                views.append(deid_view(item))
            except ObligationError as error:
                problem = problem or f"{DEIDENTIFY}: {error}"
        elif isinstance(item, dict) and set(item) != {"id"}:
            problem = problem or f"obligation {name!r} with parameters this agent does not understand"
    if len(views) > 1:
        problem = problem or f"more than one {DEIDENTIFY} obligation"
    return Obligations(names=tuple(names), deid=views[0] if len(views) == 1 and not problem else None,
                       problem=problem)


def deid_view(item: Any) -> DeidView:
    """One ``de-identify`` obligation (see the module's docstring), or :class:`ObligationError`."""
    if not isinstance(item, dict):
        raise ObligationError("the obligation carries no project and profile")
    _members(item, "obligation", required={"id", "project", "profile"}, optional={"pixels"})
    project = item["project"]
    _members(project, "project", required={"id", "scope"})
    ids = [project["id"], project["scope"]]
    if not all(isinstance(v, str) and _PROJECT.fullmatch(v) for v in ids):
        raise ObligationError("project id and scope must be names of 1-64 letters, digits, '.', '_' or '-'")
    pixels = item.get("pixels", {})
    _members(pixels, "pixels", optional={"allow_burned_in"})
    allow = pixels.get("allow_burned_in", False)
    if not isinstance(allow, bool):
        raise ObligationError("pixels.allow_burned_in must be true or false")
    return DeidView(project=ResearchProject(id=ids[0], scope=ids[1]), profile=_profile(item["profile"]),
                    pixels=PixelPolicy(allow=allow))


def _profile(raw: Any) -> Profile:
    _members(raw, "profile", required={"name"}, optional={"options", "vocabulary", "safe_private"})
    if raw["name"] != BASIC:
        raise ObligationError(f"profile name must be {BASIC!r} (PS3.15 E.1.1)")
    options = _strings(raw.get("options", []), "profile.options", len(OPTIONS))
    unknown = [name for name in options if name not in OPTIONS]
    if unknown:
        raise ObligationError(f"unknown option {unknown[0][:40]!r}; known: {', '.join(OPTIONS)}")
    vocabulary = _strings(raw.get("vocabulary", []), "profile.vocabulary", MAX_VOCABULARY)
    if not all(_WORD.fullmatch(word) for word in vocabulary):
        raise ObligationError("profile.vocabulary holds upper-case words of letters and digits")
    entries = raw.get("safe_private", [])
    if not isinstance(entries, list) or len(entries) > MAX_SAFE_PRIVATE:
        raise ObligationError(f"profile.safe_private must be a list of at most {MAX_SAFE_PRIVATE} entries")
    return Profile(options=frozenset(OPTIONS[name] for name in options), vocabulary=frozenset(vocabulary),
                   safe_private=frozenset(_safe_private(entry) for entry in entries))


def _safe_private(entry: Any) -> SafePrivate:
    """PS3.15 E.3.10: a private attribute kept, by its group (odd, hex), creator and element byte (hex)."""
    _members(entry, "safe_private entry", required={"group", "creator", "element"})
    group, creator, element = entry["group"], entry["creator"], entry["element"]
    if not (isinstance(group, str) and _HEX4.fullmatch(group) and int(group, 16) & 1 and int(group, 16) > 8):
        raise ObligationError("safe_private group must be an odd group number above 0008, 4 hex digits")
    if not (isinstance(element, str) and _HEX2.fullmatch(element)):
        raise ObligationError("safe_private element must be the element's low byte, 2 hex digits")
    if not (isinstance(creator, str) and 0 < len(creator) <= 64 and creator.isprintable() and "\\" not in creator):
        raise ObligationError("safe_private creator must be a private creator (LO)")
    return SafePrivate(group=int(group, 16), creator=creator, element=int(element, 16))


def _members(value: Any, name: str, *, required: Iterable[str] = (), optional: Iterable[str] = ()) -> None:
    if not isinstance(value, dict):
        raise ObligationError(f"{name} must be an object")
    needed = set(required)
    missing = needed - set(value)
    unknown = set(value) - needed - set(optional)
    if missing:
        raise ObligationError(f"{name} lacks {', '.join(sorted(missing))}")
    if unknown:
        raise ObligationError(f"{name} has members this agent does not understand: "
                              f"{', '.join(sorted(str(u)[:40] for u in unknown))}")


def _strings(value: Any, name: str, most: int) -> list[str]:
    if not isinstance(value, list) or len(value) > most or not all(isinstance(v, str) for v in value):
        raise ObligationError(f"{name} must be a list of at most {most} strings")
    if len(set(value)) != len(value):
        raise ObligationError(f"{name} names a value twice")
    return list(value)


__all__ = ["BASIC", "DEIDENTIFY", "OPTIONS", "DeidView", "ObligationError", "Obligations", "ResearchProject",
           "deid_view", "read_obligations"]
