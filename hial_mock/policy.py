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
* default deny: whatever no rule permits is denied.

Every decision carries a reason code, the id of the rule that decided and the policy version.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tomlconf import ConfigError, read

ACTIONS = ("C-ECHO", "C-FIND", "C-GET", "C-MOVE", "C-STORE")
PATIENT_SCOPES = ("any", "care", "none")
BREAK_GLASS = "BTG"  # HL7 v3 ActReason "break the glass"


@dataclass(frozen=True, slots=True, kw_only=True)
class RoleRule:
    name: str
    actions: frozenset[str]
    patients: str  # one of PATIENT_SCOPES
    break_glass: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsentPolicy:
    """A domain-defined privacy policy (BPPC Patient Privacy Policy), identified by its OID."""

    oid: str
    title: str = ""
    deny_other_organizations: bool = False
    deny_organizations: frozenset[str] = frozenset()
    deny_roles: frozenset[str] = frozenset()
    deny_purposes: frozenset[str] = frozenset()
    break_glass: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class Consent:
    """A patient's acknowledgement of one policy (a BPPC consent document), valid for a window."""

    patient_id: str
    policy: str
    issuer: str = ""
    home_organization: str = ""
    valid_from: dt.datetime | None = None
    valid_until: dt.datetime | None = None
    document_id: str = ""

    def active(self, at: dt.datetime) -> bool:
        starts = self.valid_from is None or self.valid_from <= at
        return starts and (self.valid_until is None or at < self.valid_until)


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    version: str
    roles: Mapping[str, RoleRule]
    care: Mapping[str, frozenset[str]]
    consent_policies: Mapping[str, ConsentPolicy]
    consents: tuple[Consent, ...]
    source: str = ""


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
    obligations: tuple[str, ...] = ()

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
    # The most permissive role decides: any > care > none.
    role = min(allowed, key=lambda r: PATIENT_SCOPES.index(r.patients))
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
    if request.patient_id:
        for consent in policy.consents:
            if consent.patient_id != request.patient_id or not consent.active(request.time):
                continue
            if consent.issuer and request.patient_id_issuer and consent.issuer != request.patient_id_issuer:
                continue
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


def _when(value: Any, path: Path, key: str) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
    if isinstance(value, str):
        try:
            return _when(dt.datetime.fromisoformat(value), path, key)
        except ValueError:
            pass
    raise ConfigError(path, key, f"{value!r} is not a date or date-time")


def load_policy(path: Path) -> Policy:
    data = read(path)
    known = {"version", "roles", "care_relationships", "consent_policies", "consents"}
    for key in data:
        if key not in known:
            raise ConfigError(path, key, f"unknown key (known: {', '.join(sorted(known))})")
    version = data.get("version")
    if not isinstance(version, str) or not version:
        raise ConfigError(path, "version", "is required: a string that names this policy's version")
    roles = _roles(data.get("roles", {}), path)
    care: dict[str, frozenset[str]] = {}
    for user, patients in data.get("care_relationships", {}).items():
        if not isinstance(patients, list) or not all(isinstance(p, str) for p in patients):
            raise ConfigError(path, f"care_relationships.{user}", "must be a list of patient ids")
        care[user] = frozenset(patients)
    rules = _consent_policies(data.get("consent_policies", {}), path)
    return Policy(version=version, roles=roles, care=care, consent_policies=rules,
                  consents=_consents(data.get("consents", []), rules, path), source=str(path))


def _roles(tables: dict[str, Any], path: Path) -> dict[str, RoleRule]:
    roles: dict[str, RoleRule] = {}
    for name, table in tables.items():
        key = f"roles.{name}"
        if not isinstance(table, dict):
            raise ConfigError(path, key, "must be a table")
        for sub in table:
            if sub not in ("actions", "patients", "break_glass"):
                raise ConfigError(path, f"{key}.{sub}", "unknown key (known: actions, patients, break_glass)")
        actions = table.get("actions", [])
        if not isinstance(actions, list) or any(a not in ACTIONS for a in actions):
            raise ConfigError(path, f"{key}.actions", f"must be a list of {', '.join(ACTIONS)}")
        patients = table.get("patients", "none")
        if patients not in PATIENT_SCOPES:
            raise ConfigError(path, f"{key}.patients", f"must be one of {', '.join(PATIENT_SCOPES)}")
        break_glass = table.get("break_glass", False)
        if not isinstance(break_glass, bool):
            raise ConfigError(path, f"{key}.break_glass", "must be true or false")
        roles[name] = RoleRule(name=name, actions=frozenset(actions), patients=patients, break_glass=break_glass)
    return roles


def _consent_policies(tables: dict[str, Any], path: Path) -> dict[str, ConsentPolicy]:
    rules: dict[str, ConsentPolicy] = {}
    bool_keys = ("deny_other_organizations", "break_glass")
    list_keys = ("deny_organizations", "deny_roles", "deny_purposes")
    for oid, table in tables.items():
        key = f'consent_policies."{oid}"'
        if not all(part.isdigit() for part in oid.split(".")):
            raise ConfigError(path, key, "a policy is identified by an OID (digits and dots)")
        for sub, value in table.items():
            if sub in bool_keys and not isinstance(value, bool):
                raise ConfigError(path, f"{key}.{sub}", "must be true or false")
            if sub in list_keys and (not isinstance(value, list) or not all(isinstance(v, str) for v in value)):
                raise ConfigError(path, f"{key}.{sub}", "must be a list of strings")
            if sub not in (*bool_keys, *list_keys, "title"):
                raise ConfigError(path, f"{key}.{sub}", "unknown key")
        rules[oid] = ConsentPolicy(
            oid=oid, title=str(table.get("title", "")),
            deny_other_organizations=table.get("deny_other_organizations", False),
            deny_organizations=frozenset(table.get("deny_organizations", [])),
            deny_roles=frozenset(table.get("deny_roles", [])),
            deny_purposes=frozenset(table.get("deny_purposes", [])),
            break_glass=table.get("break_glass", True),
        )
    return rules


def _consents(tables: list[dict[str, Any]], rules: dict[str, ConsentPolicy], path: Path) -> tuple[Consent, ...]:
    consents = []
    for n, table in enumerate(tables):
        key = f"consents[{n}]"
        for required in ("patient_id", "policy"):
            if not isinstance(table.get(required), str):
                raise ConfigError(path, f"{key}.{required}", "is required (a string)")
        if table["policy"] not in rules:
            raise ConfigError(path, f"{key}.policy", f"names {table['policy']!r}, which no consent_policies defines")
        for sub in table:
            if sub not in ("patient_id", "policy", "issuer", "home_organization", "valid_from", "valid_until",
                           "document_id"):
                raise ConfigError(path, f"{key}.{sub}", "unknown key")
        consents.append(Consent(
            patient_id=table["patient_id"], policy=table["policy"], issuer=str(table.get("issuer", "")),
            home_organization=str(table.get("home_organization", "")),
            valid_from=_when(table.get("valid_from"), path, f"{key}.valid_from"),
            valid_until=_when(table.get("valid_until"), path, f"{key}.valid_until"),
            document_id=str(table.get("document_id", "")),
        ))
    return tuple(consents)
