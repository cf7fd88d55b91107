"""Issue 14 end to end with an OpenID provider this project did not write (panva's oidc-provider,
npm registry): its RFC 9068 access tokens for the users, the HIAL as the PDP trusting it for the
server agent's own token (``[pdp] auth = "client_secret"`` at that provider, HIAL ``[foreign.X]``),
storing and querying through both agents (the workstation agent logged in by the device flow at that
provider), an unchanged Orthanc behind."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.dicomdata import make_ct_study
from devtools.foreign_idp import ForeignIdp, installed
from devtools.peers import DCMTK_BIN, PROJECT, dcmtk, wait_for_port
from devtools.site import Site
from oauthclient import AsyncExecutor, AsyncOAuthClient
from server_agent.config import load
from server_agent.pdp import PdpClient, PdpUnavailable, probe
from server_agent.service import identity_client, pdp_credentials

if installed() is not None:
    pytest.skip(str(installed()), allow_module_level=True)

GW1 = "urn:dicom:gw1"  # the server agent as a resource (RFC 8707): the aud of the users' tokens
PDP = "urn:hial:pdp"  # the HIAL's PDP as a resource: the aud of the server agent's PDP token
PATIENT = "PAT-1"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("foreign")
    idp = ForeignIdp(root / "idp", clients=[
        {"client_id": "server-agent", "client_secret": "demo-server-agent-secret",
         "grant_types": ["client_credentials"], "redirect_uris": [], "response_types": []},
        {"client_id": "gw1-pdp", "client_secret": "gw1-pdp-secret", "grant_types": ["client_credentials"],
         "redirect_uris": [], "response_types": []},
        {"client_id": "workstation-agent", "token_endpoint_auth_method": "none", "redirect_uris": [],
         "grant_types": ["urn:ietf:params:oauth:grant-type:device_code", "refresh_token"], "response_types": []}],
        accounts={"rad": {"roles": ["radiologist"], "organization": "hospital-a"},
                  "tech": {"roles": ["technologist"], "organization": "hospital-a"}},
        resources={GW1: {"scope": "user/ImagingStudy.rs user/ImagingStudy.c"}, PDP: {"scope": "authzen:evaluate"}},
        default_resources={"gw1-pdp": PDP, "workstation-agent": GW1}).start()
    site = Site(root, identity_issuer=idp.issuer, identity={"audience": GW1},
                pdp={"auth": "client_secret", "issuer": idp.issuer, "client_id": "gw1-pdp",
                     "client_secret": "gw1-pdp-secret"},
                hial_foreign={"hospital": {"issuer": idp.issuer, "audience": PDP, "clients": ["gw1-pdp"]}})
    site.idp = idp  # type: ignore[attr-defined]
    try:
        site.start()
        assert site.orthanc is not None
        site.orthanc.upload(make_ct_study(root / "data", slices=2, patient_id=PATIENT, accession="ACC1", seed=1))
        yield site
    finally:
        site.stop()
        idp.stop()


def _idp(site: Site) -> ForeignIdp:
    return site.idp  # type: ignore[attr-defined, no-any-return]


def _serve_as(site: Site, user: str) -> subprocess.Popen[bytes]:
    """`dicom-agent login --device` at the foreign provider (RFC 8628, approved by ``user`` in its
    pages), then `dicom-agent serve` with that session."""
    config = str(site.root / "workstation.toml")
    site.agent("logout")
    headless = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}  # the printed line
    login = subprocess.Popen([sys.executable, "-m", "agent.cli", "--config", config, "login", "--device"],
                             cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=headless)
    assert login.stderr is not None
    line = login.stderr.readline()
    while "enter the code" not in line:
        assert line, "no device code was shown"
        line = login.stderr.readline()
    assert "Sign-in Success" in _idp(site).approve_device(line.rsplit(" ", 1)[1].strip(), user)
    out, err = login.communicate(timeout=60)
    assert login.returncode == 0 and f"logged in as {user}" in out, err
    process = subprocess.Popen([sys.executable, "-m", "agent.cli", "--config", config, "--log-level", "WARNING",
                                "serve"], cwd=PROJECT)
    wait_for_port(site.ports["agent"], 20, process)  # type: ignore[arg-type]
    return process


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(15)


def _decisions(site: Site, action: str) -> list[dict]:
    records = [json.loads(line) for line in site.decisions().splitlines() if line.strip()]
    return [r for r in records if r.get("action") == action]


def test_the_pdp_chain_works_with_the_foreign_providers_client(site: Site) -> None:
    config = load(site.root / "server-agent.toml")

    async def chain() -> object:
        async with AsyncExecutor() as http:
            identity = AsyncOAuthClient(config.identity.issuer, identity_client(config.identity), http)
            return await probe(PdpClient(config.pdp, pdp_credentials(config.pdp, identity, http), http))

    decision = asyncio.run(chain())
    assert getattr(decision, "policy_version", "")  # the HIAL's policy answered (permit or deny)


def test_without_the_hials_trust_the_pdp_refuses_the_foreign_token(site: Site, tmp_path: Path) -> None:
    config = load(site.root / "server-agent.toml")
    token = _idp(site).client_credentials("server-agent", "demo-server-agent-secret", "authzen:evaluate", PDP)
    assert token["access_token"].count(".") == 2  # a JWT for the PDP: the right provider and audience...
    (tmp_path / "token").write_text(token["access_token"])  # ...but a client the HIAL does not list
    pdp = config.pdp.model_copy(update={"auth": "token_file", "token_file": tmp_path / "token", "issuer": None,
                                        "client_id": "", "client_secret": "", "client_secret_file": None})

    async def chain() -> object:
        async with AsyncExecutor() as http:
            return await probe(PdpClient(pdp, pdp_credentials(pdp, None, http), http))  # type: ignore[arg-type]

    with pytest.raises(PdpUnavailable, match=r"HTTP 401: it does not accept our token"):
        asyncio.run(chain())


def test_store_and_query_through_both_agents_with_the_foreign_providers_tokens(site: Site, tmp_path: Path) -> None:
    files = make_ct_study(tmp_path / "new", slices=2, patient_id=PATIENT, accession="ACC9", seed=9)
    tech = _serve_as(site, "tech")
    try:
        stored = dcmtk("storescu", "-v", "-aec", "ORTHANC@GW1", "127.0.0.1", str(site.ports["agent"]), *files)
    finally:
        _stop(tech)
    assert stored.returncode == 0 and "Success" in stored.stderr, stored.stderr
    rad = _serve_as(site, "rad")
    try:
        found = subprocess.run([str(DCMTK_BIN / "findscu"), "-v", "-S", "-k", "QueryRetrieveLevel=STUDY", "-k",
                                f"PatientID={PATIENT}", "-k", "AccessionNumber", "-aec", "ORTHANC@GW1", "127.0.0.1",
                                str(site.ports["agent"])], capture_output=True, text=True, timeout=120)
    finally:
        _stop(rad)
    accessions = sorted(a.strip() for a in re.findall(r"\(0008,0050\) SH \[([^\]]*)\]", found.stderr))
    assert accessions == ["ACC1", "ACC9"], found.stderr  # the study stored a moment ago, through the agents
    store = _decisions(site, "C-STORE")  # decided by the HIAL for the foreign provider's user
    assert store and {(r["decision"], r["decided_by"], r["rule_id"], r["user"]["username"]) for r in store} == {
        ("permit", "pdp", "role:technologist", "tech")}
    find = _decisions(site, "C-FIND")
    assert find and {(r["decision"], r["decided_by"], r["user"]["username"]) for r in find} == {
        ("permit", "pdp", "rad")}


def test_the_foreign_providers_technologist_may_not_query(site: Site) -> None:
    """The HIAL's policy holds for the foreign provider's users: a technologist's C-FIND is refused 0124H
    (and nothing reaches Orthanc), so the permits above were decisions, not a door left open."""
    tech = _serve_as(site, "tech")
    try:
        found = subprocess.run([str(DCMTK_BIN / "findscu"), "-v", "-S", "-k", "QueryRetrieveLevel=STUDY", "-k",
                                f"PatientID={PATIENT}", "-aec", "ORTHANC@GW1", "127.0.0.1", str(site.ports["agent"])],
                               capture_output=True, text=True, timeout=120)
    finally:
        _stop(tech)
    assert re.search(r"0x0?124\b", found.stderr), found.stderr
    denied = [r for r in _decisions(site, "C-FIND") if r["user"]["username"] == "tech"]
    assert denied and denied[-1]["decision"] == "deny" and denied[-1]["decided_by"] == "pdp", denied
