"""The service end to end over HTTP: a real HIAL issues the tokens, a real ``pseudonymizer serve`` answers,
the Python client and the CLI call it, and de-identification uses what it hands out."""

from __future__ import annotations

import asyncio
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from deid import Needs, Option, Profile, deidentify_header, header_end, needs
from devtools.dicomdata import decode_data_set, encode_data_set, identified_header
from devtools.hial import HialProcess
from devtools.peers import PROJECT
from devtools.pseudonymizer import TRANSLATE_CLIENT, TRANSLATE_SECRET, PseudonymizerProcess
from oauthclient import (
    AsyncExecutor,
    AsyncOAuthClient,
    AuthMethod,
    ClientAuth,
    ClientCredentialsGrant,
    OAuthClient,
    PasswordGrant,
    SyncExecutor,
)
from pseudonymizer.client import AsyncPseudonymizerClient, PseudonymizerClient, PseudonymizerError

EXPLICIT = "1.2.840.10008.1.2.1"
AGENT = ClientAuth(client_id=TRANSLATE_CLIENT, method=AuthMethod.CLIENT_SECRET_BASIC, secret=TRANSLATE_SECRET)
CLI = ClientAuth(client_id="pseudonymizer-cli", method=AuthMethod.NONE)
PROFILE = Profile(options=frozenset({Option.RETAIN_LONGITUDINAL_MODIFIED_DATES}))


@pytest.fixture(scope="module")
def hial(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HialProcess]:
    server = HialProcess(tmp_path_factory.mktemp("hial")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def service(hial: HialProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PseudonymizerProcess]:
    server = PseudonymizerProcess(tmp_path_factory.mktemp("pseudonymizer"), issuer=hial.issuer).start()
    yield server
    server.stop()


def client(hial: HialProcess, service: PseudonymizerProcess, executor: SyncExecutor) -> PseudonymizerClient:
    return PseudonymizerClient(service.url, OAuthClient(hial.issuer, AGENT, executor), executor)


def user_token(hial: HialProcess, executor: SyncExecutor, user: str) -> str:
    oauth = OAuthClient(hial.issuer, CLI, executor)
    return oauth.run(PasswordGrant(username=user, password=f"demo-{user}", scope="pseudonyms:reidentify")).access_token


def test_a_header_de_identified_with_the_services_pseudonyms(hial: HialProcess,
                                                              service: PseudonymizerProcess) -> None:
    data = encode_data_set(identified_header(), EXPLICIT)
    end = header_end(data, EXPLICIT, complete=True)
    assert end is not None
    wanted = needs(data[:end], EXPLICIT, PROFILE)
    with SyncExecutor() as executor:
        first = client(hial, service, executor).pseudonyms("STUDY-A", wanted)
    with SyncExecutor() as executor:  # another session, another token: the same pseudonyms
        again = client(hial, service, executor).pseudonyms("STUDY-A", wanted)
        other = client(hial, service, executor).pseudonyms("STUDY-B", wanted)
        new = decode_data_set(deidentify_header(data[:end], EXPLICIT, PROFILE, first).data, EXPLICIT)
        back = client(hial, service, executor).originals("STUDY-A", patient_ids=[new.PatientID],
                                                         uids=[new.StudyInstanceUID, "2.25.1"])
    assert first == again and first.uids.keys() == wanted.uids
    assert set(first.uids.values()).isdisjoint(other.uids.values())
    assert first.patients["PAT-4711"].patient_id.startswith("SA-")
    assert other.patients["PAT-4711"].patient_id.startswith("SB-")
    assert new.PatientID == first.patients["PAT-4711"].patient_id and new.StudyDate < "20260114"
    assert back.patient_ids == {new.PatientID: "PAT-4711"}
    assert back.uids == {new.StudyInstanceUID: "1.2.826.0.1.3680043.10.1447.77.1"}  # 2.25.1: never handed out
    keys = service.state / "keys"
    assert sorted(p.name for p in keys.iterdir()) == ["STUDY-A.key", "STUDY-B.key"]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in keys.iterdir())


def test_the_async_client_the_server_agent_uses(hial: HialProcess, service: PseudonymizerProcess) -> None:
    async def run() -> tuple[object, object]:
        async with AsyncExecutor() as executor:
            agent = AsyncPseudonymizerClient(service.url, AsyncOAuthClient(hial.issuer, AGENT, executor), executor)
            wanted = Needs(patient_ids=frozenset({"PAT-1", "PAT-2"}), uids=frozenset({"1.2.3.4"}))
            got = await agent.pseudonyms("STUDY-A", wanted)
            back = await agent.originals("STUDY-A", uids=list(got.uids.values()))
            return got, back
    got, back = asyncio.run(run())
    assert back.uids == {got.uids["1.2.3.4"]: "1.2.3.4"}  # type: ignore[attr-defined]


def test_reidentification_refused_to_a_researcher_allowed_and_logged_for_the_trustee(
        hial: HialProcess, service: PseudonymizerProcess) -> None:
    with SyncExecutor() as executor:
        pseudonym = client(hial, service, executor).pseudonyms(
            "STUDY-A", Needs(patient_ids=frozenset({"PAT-9"}))).patients["PAT-9"].patient_id
        plain = PseudonymizerClient(service.url, None, executor)
        with pytest.raises(PseudonymizerError) as refused:
            plain.reidentify("STUDY-A", user_token(hial, executor, "researcher"), reason="curious",
                             patient_id=pseudonym)
        assert refused.value.status == 403
        agent_token = OAuthClient(hial.issuer, AGENT, executor).run(
            ClientCredentialsGrant(scope="pseudonyms:translate")).access_token
        with pytest.raises(PseudonymizerError) as agent:  # the server agent may translate, never re-identify
            plain.reidentify("STUDY-A", agent_token, reason="x", patient_id=pseudonym)
        assert agent.value.status == 403
    cli = subprocess.run([sys.executable, "-m", "pseudonymizer.cli", "reidentify", "--config",
                          str(service.folder / "pseudonymizer.toml"), "--url", service.url, "--project", "STUDY-A",
                          "--patient-id", pseudonym, "--reason", "incidental finding, ethics 2026-17",
                          "--user", "trustee"], input="demo-trustee\n", capture_output=True, text=True, cwd=PROJECT,
                         timeout=60)
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout.strip() == "PAT-9"
    records = [r for r in service.access_log() if r["action"] == "reidentify"]
    assert [(r["status"], r["who"]["username"]) for r in records] == [(403, "researcher"), (403, ""), (200, "trustee")]
    assert records[-1]["pseudonym"] == pseudonym and records[-1]["reason"] == "incidental finding, ethics 2026-17"
    assert all("PAT-9" not in str(record) for record in service.access_log())


def test_tokens_for_other_audiences_are_refused(hial: HialProcess, service: PseudonymizerProcess) -> None:
    with SyncExecutor() as executor:
        rad = OAuthClient(hial.issuer, ClientAuth(client_id="workstation-agent", method=AuthMethod.NONE), executor)
        token = rad.run(PasswordGrant(username="rad", password="demo-rad", scope="openid")).access_token
        plain = PseudonymizerClient(service.url, None, executor)
        with pytest.raises(PseudonymizerError) as refused:
            plain.reidentify("STUDY-A", token, reason="x", patient_id="SA-X")
    assert refused.value.status == 401  # audience dicom-server-agent, not pseudonymizer


def test_check_config_names_file_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "p.toml"
    bad.write_text('[server]\nhost = "0.0.0.0"\nstate_dir = "s"\n[identity]\nissuer = "http://x"\n'
                   '[projects.A]\nprefix = "A"\n')
    run = subprocess.run([sys.executable, "-m", "pseudonymizer.cli", "check-config", "--config", str(bad)],
                         capture_output=True, text=True, cwd=PROJECT)
    assert run.returncode == 2 and "server.host" in run.stderr and "loopback" in run.stderr
