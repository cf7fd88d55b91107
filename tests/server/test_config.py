"""The server agent's configuration: validated once at the edge, every problem named by file and key."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from agent import certs
from audit.events import ApplicationEvent, Kind
from server_agent.config import load
from server_agent.decisions import DecisionLog, UnloggedDecisions
from server_agent.service import ServerAgent
from tomlconf import ConfigError

BASE = """
[server]
name = "GW1"
decision_log = "{root}/decisions.jsonl"
[tls]
certificate = "{pki}/gw1.crt"
key = "{pki}/gw1.key"
ca = "{pki}/ca.crt"
[identity]
issuer = "http://127.0.0.1:8800"
client_id = "server-agent"
client_secret = "s3cret"
[pacs.ORTHANC]
host = "127.0.0.1"
port = 4242
"""


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pki")
    certs.init_ca(folder)
    certs.issue(folder, "gw1", ["127.0.0.1"])
    return folder


def _config(tmp_path: Path, pki: Path, extra: str = "", replace: tuple[str, str] | None = None) -> Path:
    text = BASE.format(pki=pki, root=tmp_path) + extra
    if replace:
        text = text.replace(*replace)
    path = tmp_path / "server-agent.toml"
    path.write_text(text)
    return path


def test_minimal_config_loads_with_defaults(tmp_path: Path, pki: Path) -> None:
    config = load(_config(tmp_path, pki))
    assert config.listen == ("127.0.0.1", 2762) and config.pacs["ORTHANC"].ae_title == "ORTHANC"
    assert config.decision_log.enabled and config.refuse_unlogged and config.pdp.url == "http://127.0.0.1:8800"


@pytest.mark.parametrize(("replace", "extra", "key"), [
    (("gw1.key", "nope.key"), "", "tls.key"),
    (('issuer = "http://127.0.0.1:8800"', 'issuer = "http://idp.example.org"'), "", "identity.issuer"),
    (('client_secret = "s3cret"', ""), "", "identity.client_secret"),
    (None, '[identity.x]\n', "identity.x"),
    (("port = 4242", 'port = 4242\nae_title = "A VERY LONG AE TITLE"'), "", "pacs.ORTHANC.ae_title"),
    (('name = "GW1"', 'name = "GW1"\ndefault_pacs = "OTHER"'), "", "server.default_pacs"),
    (None, '[decision_log]\non_failure = "shrug"\n', "decision_log.on_failure"),
    (None, '[decision_log]\nenabled = false\n[audit]\nrepository = "127.0.0.1:6514"\n', "decision_log.enabled"),
    (None, '[nodes.CT]\naddresses = ["10.0.0.9"]\nactions = ["C-DELETE"]\n', "nodes.CT.actions"),
    (None, '[limits]\nidle_timeout = -1\n', "limits.idle_timeout"),
    (("port = 4242", "port = 4242\ntls = true"), "", "pacs.ORTHANC.ca"),
    (("port = 4242", 'port = 4242\ntls = true\nca = "nowhere.crt"'), "", "pacs.ORTHANC.ca"),
    (("port = 4242", 'port = 4242\nserver_name = "pacs"'), "", "pacs.ORTHANC.server_name"),
    (None, '[nodes.CT]\nclient_id = "server-agent"\n', "nodes.CT.client_id"),  # our PDP token as a node's
    (None, '[nodes.A]\nclient_id = "ct"\n[nodes.B]\nclient_id = "ct"\n', "nodes.B.client_id"),
    (None, '[identity.throttle]\nmax_failures = 0\n', "identity.throttle.max_failures"),
    (None, '[identity.throttle]\nlock_seconds = 60\n', "identity.throttle.lock_seconds"),
    (("client_id =", 'leeway = 3600\nclient_id ='), "", "identity.leeway"),
    (("client_id =", 'client_auth = "none"\nclient_id ='), "", "identity.client_auth"),
])
def test_bad_config_names_file_and_key(tmp_path: Path, pki: Path, replace: tuple[str, str] | None, extra: str,
                                       key: str) -> None:
    path = _config(tmp_path, pki, extra, replace)
    with pytest.raises(ConfigError) as raised:
        load(path)
    assert raised.value.key == key and str(path) in str(raised.value)


def test_identity_is_strict_by_default_and_nodes_may_name_their_client(tmp_path: Path, pki: Path) -> None:
    config = load(_config(tmp_path, pki, '[nodes.CT01]\naddresses = ["10.0.0.9"]\nclient_id = "ct01"\n'))
    identity = config.identity
    assert identity.token_types == ("at+jwt", "application/at+jwt")  # RFC 9068 only: JWT, IUA-JWT when listed
    assert identity.node_clients == {"ct01": "CT01"} and config.nodes["CT01"].client_id == "ct01"
    assert (identity.throttle.max_failures, identity.throttle.window, identity.client_auth) == (
        5, 300.0, "client_secret_basic")


def test_the_demo_configuration_loads_with_its_commented_examples(tmp_path: Path, pki: Path) -> None:
    text = (Path(__file__).parents[2] / "configs" / "demo" / "server-agent.toml").read_text()
    text = text.replace('"pki/', f'"{pki}/').replace('"state/', f'"{tmp_path}/')
    for line in ("[nodes.CT01]", "addresses =", "actions =", "client_id =", "token_types =", "leeway ="):
        text = text.replace(f"# {line}", line)
    path = tmp_path / "demo.toml"
    path.write_text(text)
    config = load(path)
    assert config.identity.node_clients == {"ct01": "CT01"} and config.identity.throttle.block_seconds == 900


def test_a_tls_pacs_gets_its_ca_our_certificate_and_its_name(tmp_path: Path, pki: Path) -> None:
    config = load(_config(tmp_path, pki, replace=("port = 4242", f'port = 4242\ntls = true\nca = "{pki}/ca.crt"')))
    pacs = config.pacs["ORTHANC"]
    assert pacs.tls and pacs.server_name == "127.0.0.1" and pacs.certificate == config.certificate
    assert pacs.ca == pki / "ca.crt"
    assert not load(_config(tmp_path, pki)).pacs["ORTHANC"].tls


def test_disabled_decision_log_records_nothing_and_says_so(tmp_path: Path, pki: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    on = ServerAgent(load(_config(tmp_path, pki)))
    assert isinstance(on.decisions, DecisionLog)
    on.decisions.close()
    (tmp_path / "decisions.jsonl").unlink()
    with caplog.at_level(logging.CRITICAL, "server_agent"):
        off = ServerAgent(load(_config(tmp_path, pki, "[decision_log]\nenabled = false\n")))
    assert isinstance(off.decisions, UnloggedDecisions) and off.decisions.healthy
    off.decisions.write(ApplicationEvent(kind=Kind.APPLICATION_START, name="GW1"))
    assert not (tmp_path / "decisions.jsonl").exists()
    assert "DECISION LOG DISABLED" in caplog.text
