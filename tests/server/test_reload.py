"""The server agent's SIGHUP reload in one process (issue 15 item 1): which generation each listener and
association holds, what is refused and why, what is reported (names, never values). The end-to-end
ring with real peers is tests/e2e/test_reload.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from agent import certs
from dicomwire.listener import RelayServer
from server_agent.config import load
from server_agent.reload import reload
from server_agent.service import ServerAgent
from tests.support.configs import merged
from tomlconf import ConfigError, write
from tomlconf.reload import changed_keys, check_key_pair, needing_restart

BASE: dict[str, Any] = {
    "server": {"name": "GW1", "listen": "127.0.0.1:0", "return_listen": "127.0.0.1:0",
               "decision_log": "{root}/decisions.jsonl"},
    "tls": {"certificate": "{pki}/gw1.crt", "key": "{pki}/gw1.key", "ca": "{pki}/ca.crt"},
    "identity": {"issuer": "https://idp.example.org", "client_id": "server-agent", "client_secret": "s3cret-one"},
    "pacs": {"ORTHANC": {"host": "127.0.0.1", "port": 4242}},
}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pki")
    certs.init_ca(folder)
    for name in ("gw1", "other"):
        certs.issue(folder, name, ["127.0.0.1"])
    return folder


def write_config(tmp_path: Path, pki: Path, patch: Mapping[str, Any] | None = None) -> Path:
    return write(tmp_path / "server-agent.toml", merged(BASE, patch or {}, pki=pki, root=tmp_path))


def test_changed_keys_are_names_and_a_table_needing_restart_covers_its_keys(tmp_path: Path, pki: Path) -> None:
    old = load(write_config(tmp_path, pki))
    new = load(write_config(tmp_path, pki, {"identity": {"client_secret": "s3cret-two"},
                                            "pacs": {"ORTHANC": {"port": 104}, "PACS2": {"host": "h", "port": 1}}}))
    changed = changed_keys(old, new)
    assert "identity.client_secret" in changed and "pacs.ORTHANC.port" in changed and "pacs.PACS2.host" in changed
    assert not any("s3cret" in key for key in changed)
    assert needing_restart(["sessions.max_lifetime", "server.listen", "server.listen_x", "pacs.A.port"],
                           ("sessions", "server.listen")) == ["sessions.max_lifetime", "server.listen"]


def test_a_key_that_is_not_the_certificates_is_named(tmp_path: Path, pki: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        check_key_pair(tmp_path / "f.toml", "tls.certificate", pki / "gw1.crt", "tls.key", pki / "other.key")
    assert caught.value.key == "tls.key" and "is not the private key of" in caught.value.problem
    (tmp_path / "broken.crt").write_text("-----BEGIN CERTIFICATE-----\nnot base64\n")
    with pytest.raises(ConfigError) as caught:
        check_key_pair(tmp_path / "f.toml", "tls.certificate", tmp_path / "broken.crt", "tls.key", pki / "gw1.key")
    assert caught.value.key == "tls.certificate"


def opened_by(server: RelayServer) -> object:
    """The policy factory whose policies a listener's next association gets (under a metrics wrapper)."""
    return getattr(server.factory, "inner", server.factory)


def test_new_associations_get_the_new_generation_and_the_old_one_stays_whole(tmp_path: Path, pki: Path) -> None:
    path = write_config(tmp_path, pki)

    async def scenario() -> None:
        agent = ServerAgent(load(path))
        await agent.start()
        try:
            first = opened_by(agent.main)
            assert first is agent.policy and first.config.pacs["ORTHANC"].port == 4242
            write_config(tmp_path, pki, {"pacs": {"ORTHANC": {"port": 4343}}, "server": {"max_associations": 7}})
            result = reload(agent)
            assert result.applied and result.generation == 2 and result.changed == ("pacs.ORTHANC.port",
                                                                                   "server.max_associations")
            assert opened_by(agent.main) is agent.policy is not first
            assert opened_by(agent.returns) is agent.generation.returns
            assert agent.policy.config.pacs["ORTHANC"].port == 4343 and agent.main.max_associations == 7
            assert first.config.pacs["ORTHANC"].port == 4242  # what a live association holds is unchanged
            assert agent.policy.moves is first.moves and agent.policy.decisions is first.decisions
            assert agent.authn.throttle is first.authn.throttle  # failed logins are not forgiven by a reload

            write_config(tmp_path, pki, {"tls": {"key": "{pki}/other.key"}})
            refused = reload(agent)
            assert not refused.applied and refused.generation == 2 and ": tls.key: " in refused.problem
            assert opened_by(agent.main) is agent.policy and agent.policy.config.pacs["ORTHANC"].port == 4343
            write_config(tmp_path, pki, {"sessions": {"max_lifetime": 60.0}})
            assert "sessions.max_lifetime: cannot change while running" in reload(agent).problem
            # The first generation had no association left: it is retired (its clients closed) at once.
            done, _ = await asyncio.wait(set(agent.retired), timeout=5)
            await asyncio.sleep(0)
            assert len(done) == 1 and not agent.retired
        finally:
            await agent.stop()

    asyncio.run(scenario())
    records = [json.loads(line) for line in (tmp_path / "decisions.jsonl").read_text().splitlines()]
    reloads = [r for r in records if r.get("event") == "configuration-reload"]
    assert [(r["result"], r["generation"]) for r in reloads] == [("applied", 2), ("refused", 2), ("refused", 2)]
    assert reloads[1]["key"] == "tls.key" and "s3cret" not in json.dumps(reloads)
