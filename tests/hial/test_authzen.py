"""The AuthZEN 1.0 policy decision point over HTTP, as the server agent will call it."""

from __future__ import annotations

import pytest
import requests

from devtools.hial import HialProcess


def pdp_token(hial: HialProcess, client: str = "server-agent", secret: str = "demo-server-agent-secret") -> str:
    response = requests.post(f"{hial.issuer}/token", auth=(client, secret), timeout=10,
                             data={"grant_type": "client_credentials", "scope": "authzen:evaluate"})
    return str(response.json()["access_token"])


def ask(user: str, action: str, patient: str | None = None, purpose: str = "TREAT") -> dict:
    resource = {"type": "patient", "id": patient} if patient else {"type": "study", "id": "*"}
    return {"subject": {"type": "user", "id": user}, "action": {"name": action}, "resource": resource,
            "context": {"purpose_of_use": purpose, "calling_ae": "VIEWER1@WS1", "workstation": "WS1"}}


@pytest.fixture(scope="module")
def token(hial: HialProcess) -> str:
    return pdp_token(hial)


def post(hial: HialProcess, path: str, body: object, token: str | None, **headers: str) -> requests.Response:
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.post(f"{hial.issuer}/access/v1/{path}", json=body, headers={**auth, **headers}, timeout=10)


def test_metadata(hial: HialProcess) -> None:
    meta = requests.get(f"{hial.issuer}/.well-known/authzen-configuration", timeout=10).json()
    assert meta["policy_decision_point"] == hial.issuer
    assert meta["access_evaluation_endpoint"] == f"{hial.issuer}/access/v1/evaluation"
    assert meta["access_evaluations_endpoint"] == f"{hial.issuer}/access/v1/evaluations"


def test_callers_must_authenticate_with_an_allowed_client(hial: HialProcess) -> None:
    assert post(hial, "evaluation", ask("rad", "C-FIND", "P1"), None).status_code == 401
    assert post(hial, "evaluation", ask("rad", "C-FIND", "P1"), "x.y.z").status_code == 401
    other = pdp_token(hial, "test-confidential", "demo-test-secret")
    assert post(hial, "evaluation", ask("rad", "C-FIND", "P1"), other).status_code == 403


@pytest.mark.parametrize(("body", "decision", "reason"), [
    (ask("rad", "C-MOVE", "P1"), True, "permit"),
    (ask("researcher", "C-MOVE", "P1"), False, "no_research_consent"),
    (ask("refdoc", "C-FIND", "PAT-REF-1"), True, "permit"),
    (ask("refdoc", "C-FIND", "P1"), False, "no_care_relationship"),
    (ask("erdoc", "C-MOVE", "PAT-OPTOUT", "BTG"), True, "break_glass"),
    (ask("tech", "C-STORE", "P1"), True, "permit"),
    (ask("ghost", "C-FIND", "P1"), False, "no_role"),  # unknown subject, no roles given
])
def test_single_evaluation(hial: HialProcess, token: str, body: dict, decision: bool, reason: str) -> None:
    response = post(hial, "evaluation", body, token, **{"X-Request-ID": "req-42"})
    assert response.status_code == 200  # a deny is a 200 with decision false
    assert response.headers["X-Request-ID"] == "req-42"
    answer = response.json()
    assert answer["decision"] is decision
    assert answer["context"]["reason"] == reason
    assert answer["context"]["policy_version"] == "demo-2026-11-22" and answer["context"]["rule_id"]
    if reason == "break_glass":
        assert answer["context"]["break_glass"] is True


def test_unknown_subject_uses_verified_token_properties(hial: HialProcess, token: str) -> None:
    body = ask("ext-user-7", "C-FIND", "P1")
    body["subject"]["properties"] = {"roles": ["radiologist"], "organization": "hospital-a"}
    assert post(hial, "evaluation", body, token).json()["decision"] is True
    # ...but a user the HIAL knows keeps the roles the HIAL knows, whatever the caller claims.
    body = ask("researcher", "C-MOVE", "P1")
    body["subject"]["properties"] = {"roles": ["radiologist"]}
    assert post(hial, "evaluation", body, token).json()["decision"] is False


def test_batch_keeps_order_and_defaults(hial: HialProcess, token: str) -> None:
    patients = ["P1", "PAT-REF-1", "P2", "PAT-CONSENT-ORG", "P3"] * 20
    body = {"subject": {"type": "user", "id": "refdoc"}, "action": {"name": "C-FIND"},
            "evaluations": [{"resource": {"type": "patient", "id": p}} for p in patients]}
    answer = post(hial, "evaluations", body, token).json()
    decisions = [e["decision"] for e in answer["evaluations"]]
    reasons = [e["context"]["reason"] for e in answer["evaluations"]]
    expected = {"P1": "no_care_relationship", "PAT-REF-1": "permit", "P2": "no_care_relationship",
                "PAT-CONSENT-ORG": "consent_denied", "P3": "no_care_relationship"}
    assert reasons == [expected[p] for p in patients]
    assert decisions == [expected[p] == "permit" for p in patients]


def test_batch_semantics_and_item_errors(hial: HialProcess, token: str) -> None:
    items = [{"resource": {"type": "patient", "id": p}} for p in ("PAT-REF-1", "P1", "PAT-REF-1")]
    base = {"subject": {"type": "user", "id": "refdoc"}, "action": {"name": "C-MOVE"}, "evaluations": items}
    first_deny = post(hial, "evaluations", {**base, "options": {"evaluations_semantic": "deny_on_first_deny"}},
                      token).json()["evaluations"]
    assert [e["decision"] for e in first_deny] == [True, False]
    first_permit = post(hial, "evaluations", {**base, "options": {"evaluations_semantic": "permit_on_first_permit"}},
                        token).json()["evaluations"]
    assert [e["decision"] for e in first_permit] == [True]
    broken = {**base, "evaluations": [items[0], {"resource": {"type": "patient"}}, items[2]]}
    result = post(hial, "evaluations", broken, token).json()["evaluations"]
    assert [e["decision"] for e in result] == [True, False, True]
    assert result[1]["context"]["error"]["status"] == 400


@pytest.mark.parametrize("body", [
    {}, {"subject": {"type": "user"}, "action": {"name": "C-FIND"}, "resource": {"type": "patient", "id": "P"}},
    {"subject": {"type": "user", "id": "rad"}, "action": {}, "resource": {"type": "patient", "id": "P"}},
    {"subject": {"type": "user", "id": "rad"}, "action": {"name": "C-FIND"}, "resource": "P"},
    [1, 2, 3],
])
def test_malformed_requests_are_400(hial: HialProcess, token: str, body: object) -> None:
    response = post(hial, "evaluation", body, token)
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"
