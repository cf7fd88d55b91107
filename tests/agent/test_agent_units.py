"""Workstation agent pieces without sockets: configuration, owner lookup, policy answers, certificates."""

from __future__ import annotations

import datetime as dt
import os
import socket
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from agent import certs
from agent.config import load
from agent.oidc import LoginError, Tokens, load_session, save_session
from agent.peercred import _diag_uid, _proc_address, _proc_uid, peer_uid
from agent.policy import AssociationLog, Credentials, WorkstationPolicy
from agent.service import client_context
from dicomwire.association import Side
from dicomwire.dimse import Tag, decode_command, encode_command
from dicomwire.pdu import decode_associate
from dicomwire.policy import ConnectionInfo
from dicomwire.questions import AcceptQuestion, ForwardAccept, Permit, RequestQuestion, Rewrite
from dicomwire.tls import certificate_names
from tests.support.configs import merged
from tests.support.wire import pynetdicom_ac, pynetdicom_rq
from tomlconf import ConfigError, write

BASE = {
    "workstation": {"name": "WS1"},
    "identity_provider": {"issuer": "http://127.0.0.1:8800", "client_id": "workstation-agent"},
    "tls": {"certificate": "{pki}/ws1.crt", "key": "{pki}/ws1.key", "ca": "{pki}/ca.crt"},
    "routes": {"GW1": {"host": "127.0.0.1", "port": 2762}},
}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pki")
    certs.init_ca(folder)
    certs.issue(folder, "ws1", ["127.0.0.1"])
    certs.issue(folder, "gw1", ["127.0.0.1", "gw1.example.org"])
    return folder


def _config(tmp_path: Path, pki: Path, patch: dict[str, Any] | None = None) -> Path:
    """A workstation configuration file: BASE with ``patch`` (a plain table: it may be wrong on purpose)."""
    return write(tmp_path / "ws.toml", merged(BASE, patch or {}, pki=pki))


def test_minimal_config_loads_with_defaults(tmp_path: Path, pki: Path) -> None:
    config = load(_config(tmp_path, pki))
    assert config.listen == ("127.0.0.1", 11112) and config.identity == "jwt"
    assert config.routes["GW1"].server_name == "gw1" and config.allowed_server_agents == ("gw1",)
    assert config.routes["GW1"].tls


def test_plain_route_only_on_loopback_and_without_tls(tmp_path: Path, pki: Path) -> None:
    config = load(_config(tmp_path, pki, {"routes": {"NEAR": {"host": "127.0.0.1", "port": 2764, "tls": False}}}))
    policy = WorkstationPolicy(config, lambda: None, client_context(config), AssociationLog(None))  # type: ignore
    assert policy.upstream(config.routes["NEAR"]).ssl is None
    assert policy.upstream(config.routes["GW1"]).ssl is not None


@pytest.mark.parametrize(("patch", "key"), [
    ({"workstation": {"name": "WS@1"}}, "workstation.name"),
    ({"workstation": {"listen": "0.0.0.0:104"}}, "workstation.listen"),
    ({"workstation": {"identity": "kerberos"}}, "workstation.identity"),
    ({"workstation": {"default_route": "GW9"}}, "workstation.default_route"),
    ({"identity_provider": {"issuer": "http://idp.example.org"}}, "identity_provider.issuer"),
    ({"apps": {"AVERYLONGVIEWER1": {"store_scp": "127.0.0.1:1"}}}, "apps.AVERYLONGVIEWER1.store_scp"),
    ({"apps": {"V": {"store_scp": "nowhere"}}}, "apps.V.store_scp"),
    ({"routes": {"GW1": {"port": "2762"}}}, "routes.GW1.port"),
    ({"routes": {"GW1": {"warm": 17}}}, "routes.GW1.warm"),
    ({"routes": {"FAR": {"host": "gw2.example.org", "port": 2762, "tls": False}}}, "routes.FAR.tls"),
    ({"workstation": {"colour": "blue"}}, "workstation.colour"),
    ({"return": {"max_associations": 0}}, "return.max_associations"),
    ({"limits": {"max_pending_connections": 0}}, "limits.max_pending_connections"),
    ({"limits": {"idle": 5}}, "limits.idle"),
])
def test_bad_config_names_file_and_key(tmp_path: Path, pki: Path, patch: dict[str, Any], key: str) -> None:
    path = _config(tmp_path, pki, patch)
    with pytest.raises(ConfigError) as raised:
        load(path)
    assert raised.value.key == key and str(path) in str(raised.value)


def test_missing_certificate_is_named(tmp_path: Path, pki: Path) -> None:
    path = _config(tmp_path, pki, {"tls": {"key": "{pki}/nope.key"}})
    with pytest.raises(ConfigError, match=r"tls\.key"):
        load(path)


def test_proc_net_tcp_addresses_and_owner_of_a_real_connection() -> None:
    assert _proc_address("0100007F:1F90") == ("127.0.0.1", 8080)
    assert _proc_address("0000000000000000FFFF00000100007F:0050") == ("127.0.0.1", 80)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    try:
        assert peer_uid(server.getpeername(), server.getsockname()) == os.getuid()
        assert _diag_uid(server.getpeername(), server.getsockname()) == os.getuid()  # netlink
        assert _proc_uid(server.getpeername(), server.getsockname(), Path("/proc/net")) == os.getuid()  # fallback
        assert peer_uid(("127.0.0.1", 1), server.getsockname()) is None
    finally:
        client.close()
        server.close()
        listener.close()


def _policy(tmp_path: Path, pki: Path) -> WorkstationPolicy:
    import ssl

    tokens = Tokens(access_token="a.b.c", refresh_token=None, expires_at=4e9, username="rad")
    return WorkstationPolicy(load(_config(tmp_path, pki)), lambda: Credentials(tokens), ssl.create_default_context(),
                             AssociationLog(None))


INFO = ConnectionInfo(association_id="1", peer=("127.0.0.1", 5000), local=("127.0.0.1", 11112))


def _move(destination: str) -> RequestQuestion:
    command = decode_command(encode_command({Tag.COMMAND_FIELD: 0x0021, Tag.MESSAGE_ID: 3, Tag.PRIORITY: 0,
                                             Tag.AFFECTED_SOP_CLASS_UID: "1.2.840.10008.5.1.4.1.2.2.2",
                                             Tag.MOVE_DESTINATION: destination, Tag.COMMAND_DATA_SET_TYPE: 1}))
    return RequestQuestion(side=Side.CLIENT, context_id=1, abstract_syntax="1.2.840.10008.5.1.4.1.2.2.2",
                           transfer_syntax="1.2.840.10008.1.2", command=command, data_set=b"", data_set_complete=True)


def test_move_destination_gets_the_workstation_name(tmp_path: Path, pki: Path) -> None:
    association = _policy(tmp_path, pki).open(INFO)
    verdict = association.request(_move("VIEWER1"))
    assert isinstance(verdict, Rewrite) and verdict.command is not None
    rewritten = decode_command(verdict.command)
    assert rewritten.move_destination == "VIEWER1@WS1" and rewritten.message_id == 3
    assert isinstance(association.request(_move("OTHER@WS2")), Permit)  # already self-describing
    assert isinstance(association.request(_move("ABCDEFGHIJKLMN")), Permit)  # would not fit 16 characters


def test_identity_response_is_stripped_from_the_accept(tmp_path: Path, pki: Path) -> None:
    from dicomwire.identity import add_identity_response, identity_response

    association = _policy(tmp_path, pki).open(INFO)
    ac = add_identity_response(decode_associate(pynetdicom_ac()))
    verdict = association.accept(AcceptQuestion(rq=decode_associate(pynetdicom_rq()), ac=ac))
    assert isinstance(verdict, ForwardAccept) and verdict.ac is not None
    assert identity_response(verdict.ac) is None


def test_association_with_identity_route_and_calling_title(tmp_path: Path, pki: Path) -> None:
    from dicomwire.identity import extract_user_identity
    from dicomwire.questions import AssociationQuestion, ForwardAssociation, RejectAssociation

    config_path = _config(tmp_path, pki, {"workstation": {"check_owner": False}})
    import ssl

    tokens = Tokens(access_token="a.b.c", refresh_token=None, expires_at=4e9, username="rad")
    policy = WorkstationPolicy(load(config_path), lambda: Credentials(tokens), ssl.create_default_context(),
                               AssociationLog(tmp_path / "log.jsonl"))
    rq = decode_associate(pynetdicom_rq(called="PACS1@GW1", calling="VIEWER1"))
    verdict = policy.open(INFO).associate(AssociationQuestion(rq=rq))
    assert isinstance(verdict, ForwardAssociation) and verdict.rq is not None and verdict.review_ac
    assert verdict.rq.calling_ae == "VIEWER1@WS1" and verdict.rq.called_ae == "PACS1@GW1"
    identity = extract_user_identity(verdict.rq)
    assert identity is not None and identity.type == 5 and identity.primary == b"a.b.c"
    assert verdict.target.server_hostname == "gw1" and verdict.target.port == 2762
    nowhere = policy.open(INFO).associate(AssociationQuestion(rq=decode_associate(pynetdicom_rq(called="PACS1@GW9"))))
    assert isinstance(nowhere, RejectAssociation) and nowhere.reason == 7
    assert "a.b.c" not in (tmp_path / "log.jsonl").read_text()  # the token is never logged


def test_certificates_are_signed_by_the_site_ca_and_keys_private(pki: Path) -> None:
    ca = x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes())
    leaf = x509.load_pem_x509_certificate((pki / "gw1.crt").read_bytes())
    leaf.verify_directly_issued_by(ca)  # raises if the signature or issuer does not match
    usages = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in usages and ExtendedKeyUsageOID.CLIENT_AUTH in usages
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "gw1.example.org" in names.get_values_for_type(x509.DNSName)
    assert leaf.not_valid_after_utc > dt.datetime.now(dt.UTC)
    for key in ("ca.key", "gw1.key", "ws1.key"):
        assert (pki / key).stat().st_mode & 0o077 == 0
    with pytest.raises(FileExistsError):
        certs.init_ca(pki)
    assert certificate_names({"subject": ((("commonName", "gw1"),),),
                              "subjectAltName": (("DNS", "gw1.example.org"),)}) == ["gw1", "gw1.example.org"]


def test_session_file_is_private_and_refused_if_not(tmp_path: Path) -> None:
    path = tmp_path / "s" / "session.json"
    tokens = Tokens(access_token="a.b.c", refresh_token="r", expires_at=4e9, username="rad")
    save_session(path, tokens)
    assert path.stat().st_mode & 0o777 == 0o600 and load_session(path) == tokens
    path.chmod(0o644)
    with pytest.raises(LoginError, match="readable by others"):
        load_session(path)
    assert "a.b.c" not in repr(tokens)


def test_break_glass_is_refused_in_password_mode_before_any_login(tmp_path: Path, pki: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from agent import cli

    path = _config(tmp_path, pki, {"workstation": {"identity": "password"}})
    assert cli.main(["--config", str(path), "login", "--break-glass", "emergency"]) == 2
    assert "--break-glass needs identity = \"jwt\"" in capsys.readouterr().err


def test_notices_of_the_server_side_are_told_to_the_person_and_the_apps_own_are_not(tmp_path: Path,
                                                                                     pki: Path) -> None:
    import ssl

    from dicomwire.commands import Notice, NoticeKind
    from dicomwire.policy import Ending
    from dicomwire.questions import AssociationQuestion

    config_path = _config(tmp_path, pki, {"workstation": {"check_owner": False}})
    tokens = Tokens(access_token="a.b.c", refresh_token=None, expires_at=4e9, username="rad")
    policy = WorkstationPolicy(load(config_path), lambda: Credentials(tokens), ssl.create_default_context(),
                               AssociationLog(None))
    heard: list[str | None] = []
    policy.notifier.listeners[1] = heard.append
    association = policy.open(INFO)
    rq = decode_associate(pynetdicom_rq(called="PACS1@GW1", calling="VIEWER1"))
    association.associate(AssociationQuestion(rq=rq))
    failed = decode_command(encode_command({Tag.COMMAND_FIELD: 0x8020, Tag.MESSAGE_ID_BEING_RESPONDED_TO: 1,
                                            Tag.COMMAND_DATA_SET_TYPE: 0x0101, Tag.STATUS: 0x0124,
                                            Tag.ERROR_COMMENT: "CONSENT: patient consent 1.2.3 (Share..."}))
    association.notice(Notice(kind=NoticeKind.FAILED, side=Side.CLIENT, detail="", command=failed))  # the app's own
    assert heard == []
    association.notice(Notice(kind=NoticeKind.FAILED, side=Side.SERVER, detail="", command=failed))
    association.notice(Notice(kind=NoticeKind.REJECTED, side=Side.SERVER, detail="", code=(1, 2, 1)))
    association.notice(Notice(kind=NoticeKind.ABORTED, side=Side.SERVER, detail="", code=(0, 0)))
    association.close(Ending(reason="rejected: upstream unreachable: [Errno 111] Connection refused",
                             established=False))
    assert [line and line.split(": ", 2)[1] for line in heard] == [
        "REFUSED VIEWER1 C-FIND", "REFUSED VIEWER1 the connection", "REFUSED VIEWER1 the connection",
        "REFUSED VIEWER1 the connection"]
    assert heard[0] is not None and "the patient's consent does not allow this access" in heard[0]
    assert heard[1] is not None and "did not accept your login" in heard[1]
    assert heard[2] is not None and "the server side of route GW1 ended it" in heard[2]
    assert heard[3] is not None and "at 127.0.0.1:2762 cannot be reached" in heard[3]
