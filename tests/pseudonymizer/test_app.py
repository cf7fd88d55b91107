"""The service in process (Flask's test client), tokens signed here: who may do what, what is kept and logged."""

from __future__ import annotations

import datetime
import json
import stat
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from deid import Needs
from pseudonymizer import derive
from pseudonymizer.accesslog import AccessLog
from pseudonymizer.app import Pseudonymizer
from pseudonymizer.config import Access, Limits, Project, Server, ServiceConfig
from pseudonymizer.tokens import IdentitySettings, Verifier

ISSUER = "http://127.0.0.1:8800"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


class FakeKeys:
    def key(self, kid: str) -> Any:
        assert kid == "k1"
        return KEY.public_key()


def token(*, sub: str = "server-agent-pseudonyms", client_id: str = "server-agent-pseudonyms",
          scope: str = "pseudonyms:translate", roles: list[str] | None = None, audience: str = "pseudonymizer",
          typ: str = "at+jwt", username: str | None = None) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {"iss": ISSUER, "sub": sub, "aud": audience, "client_id": client_id, "scope": scope,
                              "iat": now, "exp": now + 300, "jti": str(now)}
    if roles is not None:
        claims["roles"] = roles
    if username:
        claims["preferred_username"] = username
    return jwt.encode(claims, KEY, algorithm="RS256", headers={"kid": "k1", "typ": typ})


TRUSTEE = dict(sub="trustee", client_id="pseudonymizer-cli", scope="pseudonyms:reidentify",
               roles=["pseudonym_trustee"], username="trustee")


def config(state: Path) -> ServiceConfig:
    return ServiceConfig(
        path=state / "x.toml", server=Server(port=0, state_dir=state),
        identity=IdentitySettings(issuer=ISSUER, audience="pseudonymizer"),
        access=Access(translate_clients=frozenset({"server-agent-pseudonyms"}),
                      reidentify_roles=frozenset({"pseudonym_trustee"})),
        projects={"STUDY-A": Project(prefix="SA"), "STUDY-A2": Project(scope="STUDY-A", prefix="SA"),
                  "STUDY-B": Project(prefix="SB"),
                  "STUDY-C": Project(prefix="SC", reidentify_roles=frozenset({"study_c_trustee"}))},
        limits=Limits(max_values=50, max_entries=40))


@pytest.fixture
def service(tmp_path: Path) -> Any:
    made = Pseudonymizer(config(tmp_path), verifier=Verifier(config(tmp_path).identity, FakeKeys()))
    yield made
    made.close()


def post(service: Pseudonymizer, path: str, body: Any, bearer: str | None) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    response = service.app.test_client().post(path, data=json.dumps(body), headers=headers,
                                              content_type="application/json")
    return response.status_code, response.get_json()


def log(service: Pseudonymizer) -> list[dict[str, Any]]:
    return [json.loads(line) for line in service.config.server.access_log_path.read_text().splitlines()]


def test_pseudonyms_are_derived_recorded_and_translated_back(service: Pseudonymizer) -> None:
    status, answer = post(service, "/v1/projects/STUDY-A/pseudonyms",
                          {"patient_ids": ["PAT-4711"], "uids": ["1.2.3.4", "1.2.3.5"]}, token())
    assert status == 200
    key = (service.config.server.state_dir / "keys" / "STUDY-A.key").read_bytes()
    expected = derive.patient(key, "PAT-4711", "SA")
    assert answer["patients"]["PAT-4711"] == {"patient_id": expected.patient_id, "patient_name": expected.patient_name,
                                              "date_offset_days": expected.date_offset_days}
    assert -365 <= answer["patients"]["PAT-4711"]["date_offset_days"] <= -1
    new_uid = answer["uids"]["1.2.3.4"]
    status, back = post(service, "/v1/projects/STUDY-A/originals",
                        {"patient_ids": [answer["patients"]["PAT-4711"]["patient_id"], "SA-UNKNOWN"],
                         "uids": [new_uid]}, token())
    assert status == 200
    assert back == {"patient_ids": {answer["patients"]["PAT-4711"]["patient_id"]: "PAT-4711", "SA-UNKNOWN": None},
                    "uids": {new_uid: "1.2.3.4"}}
    status, other = post(service, "/v1/projects/STUDY-B/originals", {"uids": [new_uid]}, token())
    assert other["uids"] == {new_uid: None}  # another project never translates this project's pseudonyms


def test_keys_are_made_once_per_scope_private_and_never_shown(service: Pseudonymizer) -> None:
    for project in ("STUDY-A", "STUDY-A2", "STUDY-B"):
        post(service, f"/v1/projects/{project}/pseudonyms", {"patient_ids": ["PAT-4711"]}, token())
    keys = service.config.server.state_dir / "keys"
    assert sorted(p.name for p in keys.iterdir()) == ["STUDY-A.key", "STUDY-B.key"]  # STUDY-A2 shares a scope
    for path in keys.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(path.read_bytes()) == 32
        assert path.read_bytes().hex() not in service.config.server.access_log_path.read_text()
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700


def test_same_scope_same_pseudonyms_other_scope_others(service: Pseudonymizer) -> None:
    answers = {p: post(service, f"/v1/projects/{p}/pseudonyms", {"patient_ids": ["PAT-4711"], "uids": ["1.2.3"]},
                       token())[1] for p in ("STUDY-A", "STUDY-A2", "STUDY-B")}
    assert answers["STUDY-A"] == answers["STUDY-A2"]
    assert answers["STUDY-A"]["uids"]["1.2.3"] != answers["STUDY-B"]["uids"]["1.2.3"]
    assert answers["STUDY-B"]["patients"]["PAT-4711"]["patient_id"].startswith("SB-")


def test_the_same_a_day_later_and_after_a_restart(tmp_path: Path) -> None:
    clock = [datetime.datetime(2026, 12, 1, 9, 0, tzinfo=datetime.UTC)]
    answers = []
    for _ in range(2):
        made = Pseudonymizer(config(tmp_path), verifier=Verifier(config(tmp_path).identity, FakeKeys()))
        made.log = AccessLog(made.config.server.access_log_path, clock=lambda: clock[0])
        answers.append(post(made, "/v1/projects/STUDY-A/pseudonyms", {"patient_ids": ["PAT-4711"],
                                                                      "uids": ["1.2.3"]}, token())[1])
        made.close()
        clock[0] += datetime.timedelta(days=1)
    assert answers[0] == answers[1]
    times = [record["time"][:10] for record in log(made)]
    assert times == ["2026-12-01", "2026-12-02"]


@pytest.mark.parametrize(("who", "status"), [
    (None, 401),
    (dict(audience="dicom-server-agent"), 401),  # a token made for another service
    (dict(typ="JWT"), 401),  # an ID token or anything else that is not an access token
    (dict(scope="openid"), 403),
    (dict(sub="other-client", client_id="other-client"), 403),  # not a configured translate client
    (dict(sub="researcher", client_id="server-agent-pseudonyms", roles=["researcher"]), 403),  # a user's token
    (TRUSTEE, 403),  # a trustee re-identifies, one value at a time: never batches
])
def test_translation_is_for_the_server_agents_own_token_only(service: Pseudonymizer, who: dict[str, Any] | None,
                                                             status: int) -> None:
    bearer = token(**who) if who is not None else None
    for action in ("pseudonyms", "originals"):
        got, answer = post(service, f"/v1/projects/STUDY-A/{action}", {"patient_ids": ["PAT-4711"]}, bearer)
        assert got == status and "PAT-4711" not in json.dumps(answer)
    assert [r["status"] for r in log(service)] == [status, status]  # refusals are logged too


def test_reidentification_is_a_trustees_audited_action(service: Pseudonymizer) -> None:
    _, answer = post(service, "/v1/projects/STUDY-A/pseudonyms", {"patient_ids": ["PAT-4711"]}, token())
    pseudonym = answer["patients"]["PAT-4711"]["patient_id"]
    body = {"patient_id": pseudonym, "reason": "incidental finding, ethics 2026-17"}
    researcher = dict(sub="researcher", client_id="pseudonymizer-cli", scope="pseudonyms:reidentify",
                      roles=["researcher"], username="researcher")
    assert post(service, "/v1/projects/STUDY-A/reidentify", body, token(**researcher))[0] == 403
    assert post(service, "/v1/projects/STUDY-A/reidentify", body, token())[0] == 403  # the server agent
    assert post(service, "/v1/projects/STUDY-A/reidentify", {"patient_id": pseudonym}, token(**TRUSTEE))[0] == 400
    assert post(service, "/v1/projects/STUDY-B/reidentify", body, token(**TRUSTEE))[0] == 404
    assert post(service, "/v1/projects/STUDY-A/reidentify", body, token(**TRUSTEE)) == (200, {"patient_id": "PAT-4711"})
    records = log(service)
    assert [(r["action"], r["status"], (r["who"] or {}).get("username")) for r in records[1:]] == [
        ("reidentify", 403, "researcher"), ("reidentify", 403, ""), ("reidentify", 400, "trustee"),
        ("reidentify", 404, "trustee"), ("reidentify", 200, "trustee")]
    assert records[-1]["pseudonym"] == pseudonym and records[-1]["reason"] == body["reason"]
    assert "PAT-4711" not in service.config.server.access_log_path.read_text()  # no real value in the log


@pytest.mark.parametrize("body", [
    [], {"patient_ids": "PAT"}, {"patient_ids": [1]}, {"patient_ids": ["A\\B"]}, {"uids": ["1.2\x00"]},
    {"uids": ["1" * 65]}, {"extra": []}, {"uids": [str(n) for n in range(51)]},
])
def test_malformed_bodies_are_refused_whole(service: Pseudonymizer, body: Any) -> None:
    status, answer = post(service, "/v1/projects/STUDY-A/pseudonyms", body, token())
    assert status == 400 and answer["error"] == "invalid_request"


def test_duplicate_members_are_refused(service: Pseudonymizer) -> None:
    response = service.app.test_client().post(
        "/v1/projects/STUDY-A/originals", data='{"uids": [], "uids": ["1.2"]}', content_type="application/json",
        headers={"Authorization": f"Bearer {token()}"})
    assert response.status_code == 400


def test_the_reverse_mapping_is_bounded_and_a_full_one_hands_out_nothing(service: Pseudonymizer) -> None:
    status, _ = post(service, "/v1/projects/STUDY-A/pseudonyms", {"uids": [f"1.2.{n}" for n in range(40)]}, token())
    assert status == 200
    status, answer = post(service, "/v1/projects/STUDY-A/pseudonyms", {"uids": ["1.2.99"]}, token())
    assert status == 507 and "uids" not in answer
    assert post(service, "/v1/projects/STUDY-A/pseudonyms", {"uids": ["1.2.7"]}, token())[0] == 200  # known: fine
    assert post(service, "/v1/projects/STUDY-B/pseudonyms", {"uids": ["1.2.99"]}, token())[0] == 200  # per scope


def test_an_unknown_project_is_not_found(service: Pseudonymizer) -> None:
    assert post(service, "/v1/projects/NOPE/pseudonyms", {"uids": ["1.2"]}, token())[0] == 404


def test_derivations_are_keyed_and_well_formed() -> None:
    one, two = b"\x01" * 32, b"\x02" * 32
    assert derive.uid(one, "1.2.3") == derive.uid(one, "1.2.3") != derive.uid(two, "1.2.3")
    assert derive.uid(one, "1.2.3") != derive.uid(one, "1.2.4")
    value = int(derive.uid(one, "1.2.3")[5:])
    assert (value >> 76) & 0xF == 8 and (value >> 62) & 0x3 == 2  # an RFC 9562 version 8 UUID
    assert len(derive.uid(one, "1.2.3", "1.2.826.0.1.3680043.10.1447.5")) <= 64
    offsets = {derive.patient(one, f"P{n}", "SA").date_offset_days for n in range(2000)}
    assert min(offsets) == -365 and max(offsets) == -1
    assert Needs(uids=frozenset({"1"})) | Needs(patient_ids=frozenset({"P"})) == Needs(
        uids=frozenset({"1"}), patient_ids=frozenset({"P"}))


def test_a_project_with_its_own_trustees_is_re_identified_by_them_only(service: Pseudonymizer) -> None:
    """A project that names its re-identification roles is closed to the service-wide trustee (attacker
    review of issue 16: re-identification was not limited per project)."""
    _, answer = post(service, "/v1/projects/STUDY-C/pseudonyms", {"patient_ids": ["PAT-4711"]}, token())
    body = {"patient_id": answer["patients"]["PAT-4711"]["patient_id"], "reason": "incidental finding"}
    own = {**TRUSTEE, "sub": "c-trustee", "roles": ["study_c_trustee"], "username": "c-trustee"}
    assert post(service, "/v1/projects/STUDY-C/reidentify", body, token(**TRUSTEE))[0] == 403
    assert post(service, "/v1/projects/STUDY-C/reidentify", body, token(**own)) == (200, {"patient_id": "PAT-4711"})
    _, answer = post(service, "/v1/projects/STUDY-A/pseudonyms", {"patient_ids": ["PAT-4711"]}, token())
    body["patient_id"] = answer["patients"]["PAT-4711"]["patient_id"]
    assert post(service, "/v1/projects/STUDY-A/reidentify", body, token(**own))[0] == 403  # not STUDY-A's
