"""The server agent's configuration: validated once at the edge, every problem named by file and key."""

from __future__ import annotations

import dataclasses
import logging
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from agent import certs
from audit.events import ApplicationEvent, Kind
from dicomwire.limits import RelayLimits
from server_agent.claims import ClaimMapping
from server_agent.config import load
from server_agent.decisions import DecisionLog, UnloggedDecisions
from server_agent.service import ServerAgent
from tests.support.configs import merged
from tomlconf import ConfigError, write

BASE = {
    "server": {"name": "GW1", "decision_log": "{root}/decisions.jsonl"},
    "tls": {"certificate": "{pki}/gw1.crt", "key": "{pki}/gw1.key", "ca": "{pki}/ca.crt"},
    "identity": {"issuer": "http://127.0.0.1:8800", "client_id": "server-agent", "client_secret": "s3cret"},
    "pacs": {"ORTHANC": {"host": "127.0.0.1", "port": 4242}},
}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pki")
    certs.init_ca(folder)
    certs.issue(folder, "gw1", ["127.0.0.1"])
    certs.issue(folder, "ws1", ["127.0.0.1"])
    return folder


def _config(tmp_path: Path, pki: Path, patch: Mapping[str, Any] | None = None) -> Path:
    """A server agent configuration file: BASE with ``patch`` (a plain table: it may be wrong on purpose)."""
    return write(tmp_path / "server-agent.toml", merged(BASE, patch or {}, pki=pki, root=tmp_path))


def test_minimal_config_loads_with_defaults(tmp_path: Path, pki: Path) -> None:
    config = load(_config(tmp_path, pki))
    assert config.listen == ("127.0.0.1", 2762) and config.pacs["ORTHANC"].ae_title == "ORTHANC"
    assert config.decision_log.enabled and config.refuse_unlogged and config.pdp.url == "http://127.0.0.1:8800"


@pytest.mark.parametrize(("patch", "key"), [
    ({"tls": {"key": "{pki}/nope.key"}}, "tls.key"),
    ({"identity": {"issuer": "http://idp.example.org"}}, "identity.issuer"),
    ({"identity": {"client_secret": None}}, "identity.client_secret"),
    ({"identity": {"client_secret_file": "{pki}/ca.crt"}}, "identity.client_secret_file"),  # both: which one?
    ({"identity": {"x": {}}}, "identity.x"),
    ({"pacs": {"ORTHANC": {"ae_title": "A VERY LONG AE TITLE"}}}, "pacs.ORTHANC.ae_title"),
    ({"pacs": {"ORTHANC": {"name": "OTHER"}}}, "pacs.ORTHANC.name"),  # the table's name, not a key
    ({"server": {"default_pacs": "OTHER"}}, "server.default_pacs"),
    ({"server": {"listen": "2762"}}, "server.listen"),
    ({"decision_log": {"on_failure": "shrug"}}, "decision_log.on_failure"),
    ({"decision_log": {"enabled": False}, "audit": {"repository": "127.0.0.1:6514"}}, "decision_log.enabled"),
    ({"nodes": {"CT": {"addresses": ["10.0.0.9"], "actions": ["C-DELETE"]}}}, "nodes.CT.actions"),
    ({"limits": {"idle_timeout": -1}}, "limits.idle_timeout"),
    ({"limits": {"max_pending_per_source": 0}}, "limits.max_pending_per_source"),
    ({"limits": {"tls_handshake_timeout": "10"}}, "limits.tls_handshake_timeout"),
    ({"limits": {"max_pdu": 16384}}, "limits.max_pdu"),
    ({"pacs": {"ORTHANC": {"tls": True}}}, "pacs.ORTHANC.ca"),
    ({"pacs": {"ORTHANC": {"tls": True, "ca": "nowhere.crt"}}}, "pacs.ORTHANC.ca"),
    ({"pacs": {"ORTHANC": {"server_name": "pacs"}}}, "pacs.ORTHANC.server_name"),
    ({"return": {"tls": True}}, "pacs.ORTHANC.ca"),  # the CA its certificate on the return path chains to
    ({"pacs": {"ORTHANC": {"certificate_names": ["pacs"]}}}, "pacs.ORTHANC.certificate_names"),
    ({"return": {"max_associations": 0}}, "return.max_associations"),
    ({"nodes": {"CT": {"client_id": "server-agent"}}}, "nodes.CT.client_id"),  # our PDP token as a node's
    ({"nodes": {"A": {"client_id": "ct"}, "B": {"client_id": "ct"}}}, "nodes.B.client_id"),
    ({"identity": {"throttle": {"max_failures": 0}}}, "identity.throttle.max_failures"),
    ({"identity": {"throttle": {"lock_seconds": 60}}}, "identity.throttle.lock_seconds"),
    ({"identity": {"leeway": 3600}}, "identity.leeway"),
    ({"identity": {"client_auth": "none"}}, "identity.client_auth"),
    # [pseudonymizer]: real values cross that link (TLS or loopback), with the agent's own client
    ({"pseudonymizer": {"url": "http://pseudo.example.org", "client_id": "c", "client_secret": "s"}},
     "pseudonymizer.url"),
    ({"pseudonymizer": {"url": "https://pseudo.example.org", "client_id": "c"}}, "pseudonymizer.client_secret"),
    ({"pseudonymizer": {"url": "https://pseudo.example.org", "client_secret": "s"}}, "pseudonymizer.client_id"),
    ({"pseudonymizer": {"url": "https://p.example.org", "client_id": "c", "client_secret": "s", "key": "k"}},
     "pseudonymizer.key"),
    ({"server": {"workers": 2}}, "server.workers"),  # several workers need [shared] redis
    ({"server": {"workers": 0}}, "server.workers"),
    ({"shared": {"redis": "127.0.0.1:6379"}}, "shared.redis"),
    ({"shared": {"redis": "redis://:pw@127.0.0.1:6379/0"}}, "shared.redis"),  # a password never in the file
])
def test_bad_config_names_file_and_key(tmp_path: Path, pki: Path, patch: dict[str, Any], key: str) -> None:
    path = _config(tmp_path, pki, patch)
    with pytest.raises(ConfigError) as raised:
        load(path)
    assert raised.value.key == key and str(path) in str(raised.value)


def test_identity_is_strict_by_default_and_nodes_may_name_their_client(tmp_path: Path, pki: Path) -> None:
    config = load(_config(tmp_path, pki, {"nodes": {"CT01": {"addresses": ["10.0.0.9"], "client_id": "ct01"}}}))
    identity = config.identity
    assert identity.token_types == ("at+jwt", "application/at+jwt")  # RFC 9068 only: JWT, IUA-JWT when listed
    assert identity.node_clients == {"ct01": "CT01"} and config.nodes["CT01"].client_id == "ct01"
    assert (identity.throttle.max_failures, identity.throttle.window, identity.client_auth) == (
        5, 300.0, "client_secret_basic")


def test_the_demo_configuration_loads_with_its_commented_examples(tmp_path: Path, pki: Path) -> None:
    text = (Path(__file__).parents[2] / "configs" / "demo" / "server-agent.toml").read_text()
    text = text.replace('"pki/', f'"{pki}/').replace('"state/', f'"{tmp_path}/')
    for line in ("[nodes.CT01]", "addresses =", "actions =", "client_id =", "token_types =", "leeway =",
                 "[pseudonymizer]", "url =", "client_secret =",
                 "jwks_min_refresh =", "jwks_max_age =", "[identity.claims]", "username =", "roles =", "scopes =",
                 "organization =", "purpose_of_use =", "client_token =", "user_token ="):
        text = text.replace(f"# {line}", line)
    path = tmp_path / "demo.toml"
    path.write_text(text)
    config = load(path)
    assert config.identity.node_clients == {"ct01": "CT01"} and config.identity.throttle.block_seconds == 900
    assert config.identity.claims == ClaimMapping()  # the defaults the file shows are the defaults
    assert config.pseudonymizer is not None and config.pseudonymizer.url == "http://127.0.0.1:8810"
    assert config.pseudonymizer.client_secret == "demo-pseudonyms-secret" and config.pseudonymizer.timeout == 5


def test_a_tls_pacs_gets_its_ca_our_certificate_and_its_name(tmp_path: Path, pki: Path) -> None:
    config = load(_config(tmp_path, pki, {"pacs": {"ORTHANC": {"tls": True, "ca": "{pki}/ca.crt"}}}))
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
        off = ServerAgent(load(_config(tmp_path, pki, {"decision_log": {"enabled": False}})))
    assert isinstance(off.decisions, UnloggedDecisions) and off.decisions.healthy
    off.decisions.write(ApplicationEvent(kind=Kind.APPLICATION_START, name="GW1"))
    assert not (tmp_path / "decisions.jsonl").exists()
    assert "DECISION LOG DISABLED" in caplog.text


def _uncomment_limits(text: str) -> str:
    """The demo file with every commented ``# key = value`` line of its [limits] table made a key."""
    head, _, limits = text.partition("\n[limits]")
    lines = [line[2:] if line.startswith("# ") and " = " in line else line for line in limits.splitlines()]
    return head + "\n[limits]" + "\n".join(lines) + "\n"


@pytest.mark.parametrize("demo", ["server-agent.toml", "workstation.toml"])
def test_the_demo_files_document_every_bound_with_its_default(tmp_path: Path, pki: Path, demo: str) -> None:
    from agent.config import load as load_workstation

    text = (Path(__file__).parents[2] / "configs" / "demo" / demo).read_text()
    text = text.replace('"pki/', f'"{pki}/').replace('"state/', f'"{tmp_path}/')
    path = tmp_path / demo
    path.write_text(_uncomment_limits(text))
    documented = tomllib.loads(path.read_text())["limits"]
    assert set(documented) == {f.name for f in dataclasses.fields(RelayLimits)}  # every bound, nothing else
    config = (load if demo == "server-agent.toml" else load_workstation)(path)
    assert config.limits.relay() == RelayLimits()  # the defaults shown are the defaults


def test_every_bound_is_configured_from_limits(tmp_path: Path, pki: Path) -> None:
    doubled = {f.name: getattr(RelayLimits(), f.name) * 2 for f in dataclasses.fields(RelayLimits)}
    config = load(_config(tmp_path, pki, {"limits": doubled, "return": {"max_associations": 7}}))
    assert config.limits.relay() == RelayLimits(**doubled) and config.return_.max_associations == 7
    agent = ServerAgent(config)
    try:
        assert {s.name: s.limits for s in agent.servers} == dict.fromkeys(("main", "return"), RelayLimits(**doubled))
        assert agent.returns.max_associations == 7 and agent.returns.ssl is None
    finally:
        agent.decisions.close()


def test_a_configuration_built_in_code_is_written_and_read_back_unchanged(tmp_path: Path, pki: Path) -> None:
    from pydantic import ValidationError

    from server_agent.config import (
        IdentityConfig,
        Node,
        Pacs,
        ReturnSection,
        ServerAgentConfig,
        ServerSection,
        ThrottleConfig,
        TlsFiles,
    )
    from tomlconf.limits import Limits

    built = ServerAgentConfig(
        server=ServerSection(name="GW1", listen=("127.0.0.1", 2762), decision_log=tmp_path / "d.jsonl"),
        tls=TlsFiles(certificate=pki / "gw1.crt", key=pki / "gw1.key", ca=pki / "ca.crt"),
        identity=IdentityConfig(issuer="http://127.0.0.1:8800/", client_id="server-agent", client_secret="s3cret",
                                throttle=ThrottleConfig(max_failures=3)),
        pacs={"ORTHANC": Pacs(host="127.0.0.1", port=4242, tls=True, ca=pki / "ca.crt", certificate_names=("pacs",))},
        nodes={"CT": Node(addresses=("10.0.0.9",), client_id="ct")}, limits=Limits(idle_timeout=30.0),
        return_=ReturnSection(tls=True, max_associations=5))
    read = load(write(tmp_path / "built.toml", built))
    assert read.model_dump() == built.model_dump()
    assert read.pacs["ORTHANC"].name == "ORTHANC" and read.identity.node_clients == {"ct": "CT"}
    assert read.identity.issuer == "http://127.0.0.1:8800" and read.pdp.url == read.identity.issuer
    with pytest.raises(ValidationError, match="max_association"):  # a misspelt key fails where it is written
        ServerSection(name="GW1", max_association=3)  # type: ignore[call-arg]


def test_several_workers_load_with_a_shared_redis(tmp_path: Path, pki: Path) -> None:
    config = load(_config(tmp_path, pki, {"server": {"workers": 2}, "shared": {"redis": "rediss://redis.example:6380/0",
                                                                               "username": "gw-agent"}}))
    assert config.server.workers == 2 and config.shared.redis == "rediss://redis.example:6380/0"
    assert config.shared.timeout == 1.0 and config.shared.prefix == ""  # dia:SITE: at run time


@pytest.mark.parametrize("table, extra", [
    ("identity", {}),
    ("pdp", {"auth": "client_secret", "client_id": "gw1-at-pdp", "url": "https://pdp.example.org"}),
    ("pseudonymizer", {"url": "https://pseudo.example.org", "client_id": "gw1-translate"}),
])
def test_each_client_secret_is_read_from_its_file_and_each_problem_names_its_key(
        tmp_path: Path, pki: Path, table: str, extra: dict[str, Any]) -> None:
    """One rule for every table with a client of its own: the file's secret read, both refused, an
    unreadable file named by file and key, and the secret never in a message or a repr."""
    secret = tmp_path / f"{table}-secret"
    secret.write_text("  t0p-s3cret\n")
    section = {**extra, "client_secret_file": str(secret)}
    if table == "identity":
        section["client_secret"] = None  # BASE's, taken out
    config = load(_config(tmp_path, pki, {table: section}))
    assert getattr(config, table).client_secret == "t0p-s3cret" and "t0p-s3cret" not in repr(config)
    for patch, key in (({"client_secret": "inline-s3cret"}, "client_secret_file"),
                       ({"client_secret_file": str(tmp_path / "missing")}, "client_secret_file")):
        path = _config(tmp_path, pki, {table: {**section, **patch}})
        with pytest.raises(ConfigError) as raised:
            load(path)
        assert raised.value.key == f"{table}.{key}" and str(path) in str(raised.value)
        assert "s3cret" not in str(raised.value)
