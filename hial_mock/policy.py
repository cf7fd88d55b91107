"""The policy decision point's rules: pure functions of a request and a policy loaded from TOML.

What the policy can say (issue 3):

* action-based access control by role: which DICOM actions a role may perform, and on which patients
  (``any``, ``care`` = only patients in the user's care relationships, ``none`` = nothing identifiable);
  a C-FIND not pinned to one patient is permitted with the obligation ``filter-results``: the PEP
  checks each match (care relationships, and every patient's consent) and drops the others;
* patient consent directives in the spirit of IHE BPPC (ITI TF-1 19): a patient acknowledges a policy
  identified by an OID, for a validity window; the domain's table says what that policy denies (other
  organizations, listed organizations, roles, purposes of use) and whether break-glass may override;
* break-glass: purpose of use ``BTG`` permits what consent would deny, for roles allowed to, and the
  decision says so (``break_glass``) so the agent raises a security alert;
* research (issue 16): a role with ``patients = "research"`` works in one research project
  (``[research_projects.ID]``) whose patients are those who acknowledged its consent policy; each
  permit carries the obligation ``de-identify`` (the project and its PS3.15 E.1-1 profile, shaped as
  ``server_agent.deidview`` reads it). A patient whose consent refuses research is denied, one without
  the project's consent is never permitted alone: a C-FIND about such a patient (or about a pseudonym,
  which the PDP cannot tell apart) is permitted only with ``filter-results``, which the agent never
  takes as a permit for a match;
* default deny: whatever no rule permits is denied.

Every decision carries a reason code, the id of the rule that decided and the policy version.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, ValidationInfo, model_validator

from tomlconf import load as load_file
from tomlconf.schema import AS_FROZENSET, AS_TUPLE, Schema, derived, from_file, problem

ACTIONS = ("C-ECHO", "C-FIND", "C-GET", "C-MOVE", "C-STORE")
PATIENT_SCOPES = ("any", "care", "research", "none")  # from the most to the least identifying
RESEARCH_OPTIONS = ("retain-safe-private", "retain-device-identity", "retain-institution-identity",
                    "retain-patient-characteristics", "retain-longitudinal-modified-dates", "clean-descriptors")
BREAK_GLASS = "BTG"  # HL7 v3 ActReason "break the glass"


Names = Annotated[frozenset[str], AS_FROZENSET]


def _when(value: Any) -> Any:
    """A TOML date, date-time or ISO 8601 string, as an aware date-time (UTC when none is given)."""
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a date or date-time") from None
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        value = dt.datetime(value.year, value.month, value.day)
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value


When = Annotated[dt.datetime | None, BeforeValidator(_when)]


class RoleRule(Schema):
    """``[roles.NAME]``: which DICOM actions a role may perform, and on which patients."""

    name: str = derived("")
    actions: Annotated[frozenset[Literal["C-ECHO", "C-FIND", "C-GET", "C-MOVE", "C-STORE"]], AS_FROZENSET] = frozenset()
    patients: Literal["any", "care", "research", "none"] = "none"  # PATIENT_SCOPES
    break_glass: bool = False
    project: str = ""  # with patients = "research": the [research_projects] it works in


class ResearchProject(Schema):
    """``[research_projects.ID]``: its pseudonymisation scope (default: its id), the consent policy whose
    acknowledgement puts a patient in it, and the de-identification profile its members are shown."""

    id: str = derived("")
    scope: str = ""
    consent_policy: str
    options: Annotated[tuple[Literal["retain-safe-private", "retain-device-identity", "retain-institution-identity",
                                     "retain-patient-characteristics", "retain-longitudinal-modified-dates",
                                     "clean-descriptors"], ...], AS_TUPLE] = ()
    vocabulary: Annotated[tuple[str, ...], AS_TUPLE] = ()  # words Clean Descriptors keeps (upper case)
    allow_burned_in: bool = False  # instances whose pixels may show identity (PS3.15 E.1.1 note 1)

    def obligation(self) -> dict[str, Any]:
        """The ``de-identify`` obligation (docs/deidentification.md)."""
        profile: dict[str, Any] = {"name": "basic", "options": list(self.options)}
        if self.vocabulary:
            profile["vocabulary"] = list(self.vocabulary)
        return {"id": "de-identify", "project": {"id": self.id, "scope": self.scope or self.id},
                "profile": profile, "pixels": {"allow_burned_in": self.allow_burned_in}}


class ConsentPolicy(Schema):
    """A domain-defined privacy policy (BPPC Patient Privacy Policy), identified by its OID."""

    oid: str = derived("")
    title: str = ""
    deny_other_organizations: bool = False
    deny_organizations: Names = frozenset()
    deny_roles: Names = frozenset()
    deny_purposes: Names = frozenset()
    break_glass: bool = True


class Consent(Schema):
    """A patient's acknowledgement of one policy (a BPPC consent document), valid for a window."""

    patient_id: str
    policy: str
    issuer: str = ""
    home_organization: str = ""
    valid_from: When = None
    valid_until: When = None
    document_id: str = ""

    def active(self, at: dt.datetime) -> bool:
        starts = self.valid_from is None or self.valid_from <= at
        return starts and (self.valid_until is None or at < self.valid_until)


class Policy(Schema):
    """The policy file: its version, the roles, care relationships, consent policies and consents."""

    version: str = Field(min_length=1)  # names this policy's version in every decision
    roles: Mapping[str, RoleRule] = Field(default_factory=dict)
    care: Mapping[str, Names] = Field(default_factory=dict, alias="care_relationships")  # user -> patient ids
    consent_policies: Mapping[str, ConsentPolicy] = Field(default_factory=dict)
    consents: Annotated[tuple[Consent, ...], AS_TUPLE] = ()
    research_projects: Mapping[str, ResearchProject] = Field(default_factory=dict)
    source: str = derived("")  # the file it was read from

    @model_validator(mode="after")
    def _derive(self, info: ValidationInfo) -> Policy:
        for oid in self.consent_policies:
            if not all(part.isdigit() for part in oid.split(".")):
                raise problem(("consent_policies", oid), "a policy is identified by an OID (digits and dots)")
        for n, consent in enumerate(self.consents):
            if consent.policy not in self.consent_policies:
                raise problem(("consents", n, "policy"), f"names {consent.policy!r}, which no consent_policies "
                                                         "defines")
        for name, project in self.research_projects.items():
            if project.consent_policy not in self.consent_policies:
                raise problem(("research_projects", name, "consent_policy"), "names no consent_policies entry")
        for name, role in self.roles.items():
            if (role.patients == "research") != bool(role.project) or (
                    role.project and role.project not in self.research_projects):
                raise problem(("roles", name, "project"), 'a [research_projects] name, with patients = "research" '
                                                          "only (and required there)")
        return self._fill(
            research_projects={name: p.model_copy(update={"id": name}) for name, p in self.research_projects.items()},
            roles={name: r.model_copy(update={"name": name}) for name, r in self.roles.items()},
            consent_policies={oid: c.model_copy(update={"oid": oid}) for oid, c in self.consent_policies.items()},
            source=str(info.context["path"]) if from_file(info) else self.source)  # type: ignore[index]


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """One question, already reduced from AuthZEN's subject / action / resource / context."""

    subject: str
    roles: tuple[str, ...]
    organization: str
    action: str
    patient_id: str | None = None
    patient_id_issuer: str = ""
    purpose_of_use: str = "TREAT"
    time: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    decision: bool
    reason: str
    rule_id: str
    policy_version: str
    message: str
    break_glass: bool = False
    consent_document: str = ""
    obligations: tuple[str | dict[str, Any], ...] = ()  # names, or objects with an id (de-identify)

    def context(self) -> dict[str, Any]:
        """The AuthZEN response context (AuthZEN 1.0 section 6.2: free form, ours is documented here)."""
        out: dict[str, Any] = {"reason": self.reason, "rule_id": self.rule_id, "policy_version": self.policy_version,
                               "reason_user": {"en": self.message}}
        obligations = list(self.obligations)
        if self.break_glass:
            out["break_glass"] = True
            obligations.append("security-alert")
        if obligations:
            out["obligations"] = obligations
        if self.consent_document:
            out["consent_document"] = self.consent_document
        return out


def evaluate(policy: Policy, request: Request) -> Decision:
    def decide(ok: bool, reason: str, rule: str, message: str, **extra: Any) -> Decision:
        return Decision(decision=ok, reason=reason, rule_id=rule, policy_version=policy.version, message=message,
                        **extra)

    if request.action not in ACTIONS:
        return decide(False, "unknown_action", "default-deny", f"unknown action {request.action!r}")
    roles = [policy.roles[r] for r in request.roles if r in policy.roles]
    if not roles:
        return decide(False, "no_role", "default-deny", f"user {request.subject} has no role known to the policy")
    allowed = [r for r in roles if request.action in r.actions]
    if not allowed:
        names = ", ".join(r.name for r in roles)
        return decide(False, "action_not_permitted", f"role:{roles[0].name}",
                      f"{request.action} is not permitted for role {names}")
    if request.action == "C-ECHO":
        return decide(True, "permit", f"role:{allowed[0].name}", "verification is permitted")
    # The most permissive role decides: any > care > research > none.
    role = min(allowed, key=lambda r: PATIENT_SCOPES.index(r.patients))
    if role.patients == "research":
        return _research(policy, request, role, policy.research_projects[role.project], decide)
    if role.patients == "none":
        return decide(False, "not_identifiable", f"role:{role.name}",
                      f"role {role.name} may not access identifiable patient data")
    if not request.patient_id and request.action == "C-FIND":
        # A query not pinned to one patient: allowed, on condition that the PEP checks each match
        # (post-filter) and drops those the user may not see: outside the care relationships of a
        # ``care`` role, and, for any role, those whose consent denies it.
        return decide(True, "permit_filtered", f"role:{role.name}",
                      f"{request.action} permitted; each match must be checked", obligations=("filter-results",))
    if role.patients == "care":
        if not request.patient_id:
            return decide(False, "patient_required", f"role:{role.name}",
                          f"role {role.name} must name one patient in a care relationship")
        if request.patient_id not in policy.care.get(request.subject, frozenset()):
            return decide(False, "no_care_relationship", f"care:{request.subject}",
                          f"no care relationship between {request.subject} and this patient")
    for consent in _active(policy, request):
        rule = policy.consent_policies.get(consent.policy)
        if rule is None or not _consent_denies(rule, consent, request, role):
            continue
        if request.purpose_of_use == BREAK_GLASS and role.break_glass and rule.break_glass:
            return decide(True, "break_glass", f"consent:{rule.oid}:break-glass",
                          f"break-glass override of patient consent {rule.oid}", break_glass=True,
                          consent_document=consent.document_id)
        return decide(False, "consent_denied", f"consent:{rule.oid}",
                      f"patient consent {rule.oid} ({rule.title}) denies this access",
                      consent_document=consent.document_id)
    return decide(True, "permit", f"role:{role.name}", f"{request.action} permitted for role {role.name}")


def _research(policy: Policy, request: Request, role: RoleRule, project: ResearchProject,
              decide: Callable[..., Decision]) -> Decision:
    """A research role's request: always de-identified; about a patient only with the project's consent."""
    view = project.obligation()
    consented = False
    for consent in _active(policy, request):
        rule = policy.consent_policies[consent.policy]
        if _consent_denies(rule, consent, request, role):
            return decide(False, "consent_denied", f"consent:{rule.oid}", f"patient consent {rule.oid} ({rule.title})"
                          " denies this access", consent_document=consent.document_id)
        # A consent that names an issuer counts toward a permit only for a request naming that issuer:
        # a match without one may be another issuer's patient of the same ID (toward a deny it counts).
        consented = consented or (consent.policy == project.consent_policy
                                  and consent.issuer in ("", request.patient_id_issuer))
    rule_id = f"research:{project.id}"
    if consented:
        return decide(True, "permit_deidentified", rule_id, f"{request.action} permitted de-identified for project "
                      f"{project.id}", obligations=(view,))
    if request.action == "C-FIND":
        # No patient, or one the PDP cannot place (a pseudonym, or a patient outside the project): each
        # match is decided with its real Patient ID, and only the project's patients are shown.
        return decide(True, "permit_deidentified_filtered", rule_id, f"{request.action} permitted de-identified; "
                      "each match must be checked", obligations=("filter-results", view))
    if not request.patient_id:  # a retrieval by UIDs: each image is decided with its own Patient ID
        return decide(True, "permit_deidentified", rule_id, f"{request.action} permitted de-identified; each image "
                      "is decided", obligations=(view,))
    return decide(False, "no_research_consent", rule_id, f"the patient has not consented to project {project.id}")


def _active(policy: Policy, request: Request) -> list[Consent]:
    """The patient's consents in force for this request (an issuer, when both name one, must agree)."""
    if not request.patient_id:
        return []
    return [c for c in policy.consents if c.patient_id == request.patient_id and c.active(request.time)
            and not (c.issuer and request.patient_id_issuer and c.issuer != request.patient_id_issuer)]


def _consent_denies(rule: ConsentPolicy, consent: Consent, request: Request, role: RoleRule) -> bool:
    if rule.deny_other_organizations and consent.home_organization and \
            request.organization != consent.home_organization:
        return True
    if request.organization in rule.deny_organizations:
        return True
    if role.name in rule.deny_roles or any(r in rule.deny_roles for r in request.roles):
        return True
    return request.purpose_of_use in rule.deny_purposes


# ---- loading -------------------------------------------------------------------------------------


def load_policy(path: Path) -> Policy:
    return load_file(path, Policy)
