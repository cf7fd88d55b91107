"""The policy decision point's rules, as a table: role x consent x purpose x organization."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from hial_mock.config import load_users
from hial_mock.errors import ConfigError
from hial_mock.policy import Request, evaluate, load_policy

DEMO = Path(__file__).resolve().parents[2] / "configs" / "demo"
POLICY = load_policy(DEMO / "policy.toml")
USERS = load_users(DEMO / "users.toml")
NOW = dt.datetime(2026, 11, 22, 12, tzinfo=dt.UTC)


def ask(user: str, action: str, patient: str | None = None, purpose: str = "TREAT",
        when: dt.datetime = NOW, organization: str | None = None):  # type: ignore[no-untyped-def]
    u = USERS[user]
    return evaluate(POLICY, Request(subject=user, roles=u.roles, organization=organization or u.organization,
                                    action=action, patient_id=patient, purpose_of_use=purpose, time=when))


TABLE = [
    # user, action, patient, purpose, decision, reason, rule
    ("rad", "C-FIND", "PAT-1", "TREAT", True, "permit", "role:radiologist"),
    # An unpinned query: permitted on the obligation to check every match (consents apply to any role).
    ("rad", "C-FIND", None, "TREAT", True, "permit_filtered", "role:radiologist"),
    ("rad", "C-MOVE", "PAT-1", "TREAT", True, "permit", "role:radiologist"),
    ("rad", "C-GET", "PAT-1", "TREAT", True, "permit", "role:radiologist"),
    ("rad", "C-STORE", "PAT-1", "TREAT", False, "action_not_permitted", "role:radiologist"),
    ("tech", "C-STORE", "PAT-1", "TREAT", True, "permit", "role:technologist"),
    ("tech", "C-FIND", "PAT-1", "TREAT", False, "action_not_permitted", "role:technologist"),
    ("tech", "C-ECHO", None, "TREAT", True, "permit", "role:technologist"),
    ("refdoc", "C-FIND", "PAT-REF-1", "TREAT", True, "permit", "role:referring_physician"),
    ("refdoc", "C-MOVE", "PAT-REF-1", "TREAT", True, "permit", "role:referring_physician"),
    ("refdoc", "C-FIND", "PAT-1", "TREAT", False, "no_care_relationship", "care:refdoc"),
    ("refdoc", "C-FIND", None, "TREAT", True, "permit_filtered", "role:referring_physician"),
    ("refdoc", "C-MOVE", None, "TREAT", False, "patient_required", "role:referring_physician"),
    # Research (issue 16): STUDY-A's patients de-identified; any other C-FIND only with every match checked.
    ("researcher", "C-FIND", "PAT-RES-1", "TREAT", True, "permit_deidentified", "research:STUDY-A"),
    ("researcher", "C-MOVE", "PAT-RES-2", "TREAT", True, "permit_deidentified", "research:STUDY-A"),
    ("researcher", "C-FIND", "PAT-1", "TREAT", True, "permit_deidentified_filtered", "research:STUDY-A"),
    ("researcher", "C-FIND", None, "TREAT", True, "permit_deidentified_filtered", "research:STUDY-A"),
    ("researcher", "C-MOVE", None, "TREAT", True, "permit_deidentified", "research:STUDY-A"),
    ("researcher", "C-MOVE", "PAT-1", "TREAT", False, "no_research_consent", "research:STUDY-A"),
    ("researcher", "C-FIND", "PAT-NORES", "TREAT", False, "consent_denied", "consent:1.3.6.1.4.1.21367.2026.1.2"),
    ("researcher", "C-MOVE", "PAT-NORES", "TREAT", False, "consent_denied", "consent:1.3.6.1.4.1.21367.2026.1.2"),
    ("researcher", "C-STORE", "PAT-RES-1", "TREAT", False, "action_not_permitted", "role:researcher"),
    ("researcher", "C-ECHO", None, "TREAT", True, "permit", "role:researcher"),
    ("nobody", "C-ECHO", None, "TREAT", False, "no_role", "default-deny"),
    ("nobody", "C-FIND", "PAT-1", "TREAT", False, "no_role", "default-deny"),
    ("rad", "N-DELETE", "PAT-1", "TREAT", False, "unknown_action", "default-deny"),
    # Consent: share only within the home organization (hospital-a).
    ("rad", "C-FIND", "PAT-CONSENT-ORG", "TREAT", True, "permit", "role:radiologist"),
    ("refdoc", "C-FIND", "PAT-CONSENT-ORG", "TREAT", False, "consent_denied", "consent:1.3.6.1.4.1.21367.2026.1.1"),
    # refdoc may not break the glass (role without break_glass), so BTG changes nothing.
    ("refdoc", "C-FIND", "PAT-CONSENT-ORG", "BTG", False, "consent_denied", "consent:1.3.6.1.4.1.21367.2026.1.1"),
    # Opt-out: nobody, except break-glass by a role allowed to.
    ("rad", "C-MOVE", "PAT-OPTOUT", "TREAT", False, "consent_denied", "consent:1.3.6.1.4.1.21367.2026.1.3"),
    ("rad", "C-MOVE", "PAT-OPTOUT", "BTG", False, "consent_denied", "consent:1.3.6.1.4.1.21367.2026.1.3"),
    ("erdoc", "C-MOVE", "PAT-OPTOUT", "TREAT", False, "consent_denied", "consent:1.3.6.1.4.1.21367.2026.1.3"),
    ("erdoc", "C-MOVE", "PAT-OPTOUT", "BTG", True, "break_glass", "consent:1.3.6.1.4.1.21367.2026.1.3:break-glass"),
    # An opt-out whose validity window ended no longer applies.
    ("rad", "C-FIND", "PAT-EXPIRED", "TREAT", True, "permit", "role:radiologist"),
]


@pytest.mark.parametrize(("user", "action", "patient", "purpose", "decision", "reason", "rule"), TABLE,
                         ids=[f"{r[0]}-{r[1]}-{r[2]}-{r[3]}" for r in TABLE])
def test_policy_table(user: str, action: str, patient: str | None, purpose: str, decision: bool, reason: str,
                      rule: str) -> None:
    result = ask(user, action, patient, purpose)
    assert (result.decision, result.reason, result.rule_id) == (decision, reason, rule)
    assert result.policy_version == "demo-2026-11-22"
    assert result.break_glass == (reason == "break_glass")
    # A query not pinned to one patient is permitted only on the condition that every match is checked.
    assert ("filter-results" in result.obligations) == reason.endswith("_filtered")
    # Every research permit, and only those, is de-identified, in the project's view.
    views = [o for o in result.obligations if isinstance(o, dict)]
    assert len(views) == (1 if reason.startswith("permit_deidentified") else 0)
    if views:
        assert views[0]["id"] == "de-identify" and views[0]["project"] == {"id": "STUDY-A", "scope": "STUDY-A"}
        assert views[0]["profile"]["name"] == "basic" and views[0]["pixels"] == {"allow_burned_in": False}
    context = result.context()
    assert context["rule_id"] == rule and context["policy_version"] == "demo-2026-11-22"
    if result.break_glass:
        assert context["break_glass"] is True and "security-alert" in context["obligations"]


def test_consent_window_edges() -> None:
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert ask("rad", "C-FIND", "PAT-OPTOUT", when=start - dt.timedelta(seconds=1)).decision is True
    assert ask("rad", "C-FIND", "PAT-OPTOUT", when=start).decision is False


def test_research_purpose_denied_by_consent_even_for_a_radiologist() -> None:
    policy = load_policy(DEMO / "policy.toml")
    # PAT-RESEARCH acknowledges "no access for research": add the consent to a copy of the policy.
    from dataclasses import replace

    from hial_mock.policy import Consent

    with_consent = policy.replace(consents=(*policy.consents, Consent(patient_id="PAT-R",
                                                                      policy="1.3.6.1.4.1.21367.2026.1.2")))
    request = Request(subject="rad", roles=("radiologist",), organization="hospital-a", action="C-FIND",
                      patient_id="PAT-R", purpose_of_use="HRESCH", time=NOW)
    assert evaluate(with_consent, request).reason == "consent_denied"
    assert evaluate(with_consent, replace(request, purpose_of_use="TREAT")).decision is True
    # break_glass = false on that policy: even an emergency physician cannot override it.
    er = replace(request, subject="erdoc", roles=("emergency_physician",), purpose_of_use="HRESCH")
    assert evaluate(with_consent, er).decision is False


@pytest.mark.parametrize(("text", "key"), [
    ('version = "x"\n[roles.r]\nactions = ["C-FOO"]\n', "roles.r.actions"),
    ('version = "x"\n[roles.r]\npatients = "some"\n', "roles.r.patients"),
    ('[roles.r]\nactions = []\n', "version"),
    ('version = "x"\n[[consents]]\npatient_id = "P"\npolicy = "1.2.3"\n', "consents[0].policy"),
    ('version = "x"\n[consent_policies."not-an-oid"]\n', "consent_policies.not-an-oid"),
    ('version = "x"\n[consent_policies."1.2.x"]\n', 'consent_policies."1.2.x"'),  # a key with dots is quoted
    ('version = "x"\n[roles.r]\nactions = ["C-ECHO"]\nbreak_glass = 1\n', "roles.r.break_glass"),
    ('version = "x"\n[[consents]]\npatient_id = "P"\npolicy = "1.2"\nvalid_from = "soon"\n', "consents[0].valid_from"),
    ('version = "x"\nsurprise = 1\n', "surprise"),
    ('version = "x"\n[roles.r]\npatients = "research"\n', "roles.r.project"),
    ('version = "x"\n[roles.r]\npatients = "any"\nproject = "P"\n', "roles.r.project"),
    ('version = "x"\n[research_projects.P]\nconsent_policy = "1.2"\n', "research_projects.P.consent_policy"),
    ('version = "x"\n[research_projects.P]\nconsent_policy = "1.2"\noptions = ["retain-uids"]\n',
     "research_projects.P.options"),
    ('version = "x"\n[roles.r\n', "(syntax)"),
])
def test_bad_policy_names_file_and_key(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as raised:
        load_policy(path)
    assert raised.value.key == key and raised.value.path == str(path)
    assert str(path) in str(raised.value)


def test_a_research_consent_at_one_issuer_admits_only_that_issuers_patient(tmp_path: Path) -> None:
    """A consent recorded at issuer HOSPITAL-A permits research on PAT-RES-1 of HOSPITAL-A only: a match of
    another issuer, or one that does not say its issuer (the PACS may hold the ID under several), is not
    the consented patient (attacker review of issue 16, F7)."""
    consent = 'patient_id = "PAT-RES-1"\n'
    text = (DEMO / "policy.toml").read_text().replace(consent, consent + 'issuer = "HOSPITAL-A"\n')
    (tmp_path / "policy.toml").write_text(text)
    policy = load_policy(tmp_path / "policy.toml")

    def research(issuer: str) -> str:
        u = USERS["researcher"]
        return evaluate(policy, Request(subject="researcher", roles=u.roles, organization=u.organization,
                                        action="C-GET", patient_id="PAT-RES-1", patient_id_issuer=issuer,
                                        purpose_of_use="HRESCH", time=NOW)).reason

    assert research("HOSPITAL-A") == "permit_deidentified"
    assert research("CLINIC-B") == "no_research_consent"
    assert research("") == "no_research_consent"
