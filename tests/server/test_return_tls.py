"""The return path over DICOM TLS (PS3.15 B.12, issue 13): with ``[return] tls`` the return listener
requires a client certificate from a configured PACS's CA, and a return association is accepted from
the PACS that certificate names, wherever it connects from; without it, from a PACS's address only."""

from __future__ import annotations

import asyncio
import inspect
import socket
import ssl
import threading
from pathlib import Path
from typing import Any

import pytest

from agent import certs
from audit.events import Action, Reason
from dicomwire.dimse import Tag, decode_command, encode_command
from dicomwire.pdu import decode_associate
from dicomwire.policy import ConnectionInfo
from dicomwire.questions import AssociationQuestion, ForwardAssociation, RejectAssociation
from dicomwire.tls import certificate_names, client_context
from server_agent.authorization import read_facts
from server_agent.config import ServerAgentConfig
from server_agent.moves import Move, MoveRegistry
from server_agent.returns import ReturnPolicy
from server_agent.service import return_context
from tests.support.wire import pynetdicom_rq
from tomlconf import validate

MOVE = "1.2.840.10008.5.1.4.1.2.2.2"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pki")
    certs.init_ca(folder)
    for name in ("gw1", "pacs", "intruder"):
        certs.issue(folder, name, ["127.0.0.1"])
    return folder


def config(pki: Path, *, tls: bool) -> ServerAgentConfig:
    pacs: dict[str, Any] = {"host": "10.1.2.3", "port": 4242}
    if tls:
        pacs |= {"ca": str(pki / "ca.crt"), "certificate_names": ["pacs"]}
    return validate({
        "server": {"name": "GW1"}, "return": {"tls": tls},
        "tls": {"certificate": str(pki / "gw1.crt"), "key": str(pki / "gw1.key"), "ca": str(pki / "ca.crt")},
        "identity": {"issuer": "http://127.0.0.1:8800", "client_id": "server-agent", "client_secret": "s"},
        "pacs": {"PACS1": pacs}, "workstations": {"WS1": {"host": "127.0.0.1", "port": 11115}},
    }, ServerAgentConfig, pki / "server-agent.toml")


class Recorded:
    problem = None

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def write(self, event: Any) -> None:
        self.events.append(event.record())


def outstanding(moves: MoveRegistry) -> None:
    command = decode_command(encode_command({Tag.COMMAND_FIELD: 0x0021, Tag.MESSAGE_ID: 7, Tag.PRIORITY: 0,
                                             Tag.AFFECTED_SOP_CLASS_UID: MOVE, Tag.MOVE_DESTINATION: "VIEWER@WS1",
                                             Tag.COMMAND_DATA_SET_TYPE: 1}))
    facts = read_facts(command, b"", "1.2.840.10008.1.2", complete=True, action=Action.C_MOVE)
    asyncio.run(moves.add(Move(owner=None, facts=facts, destination="VIEWER@WS1", calling_ae="VIEWER@WS1",  # type: ignore[arg-type]
                   message_id=7, expires=1e12)))


def associate(configured: ServerAgentConfig, peer: str, names: list[str] | None) -> tuple[object, Recorded]:
    moves, log = MoveRegistry(), Recorded()
    outstanding(moves)
    policy = ReturnPolicy(configured, moves, log, None, pacs_hosts={"10.1.2.3"})  # type: ignore[arg-type]
    certificate = None if names is None else {"subject": tuple((("commonName", n),) for n in names)}
    association = policy.open(ConnectionInfo(association_id="r1", peer=(peer, 40000), local=None,
                                             peer_certificate=certificate, listener="return"))
    rq = decode_associate(pynetdicom_rq(called="VIEWER@WS1", calling="ORTHANC"))
    verdict = association.associate(AssociationQuestion(rq=rq))
    return (asyncio.run(verdict) if inspect.iscoroutine(verdict) else verdict), log


def test_over_tls_the_certificate_names_the_pacs_whatever_the_address(pki: Path) -> None:
    verdict, log = associate(config(pki, tls=True), "192.0.2.77", ["PACS"])  # names compared without case
    assert isinstance(verdict, ForwardAssociation) and verdict.target.port == 11115
    assert log.events[-1]["decision"] == "permit" and log.events[-1]["pacs"] == "PACS1"


@pytest.mark.parametrize("names", [["intruder"], [], None], ids=["another name", "no name", "no certificate"])
def test_over_tls_a_peer_whose_certificate_names_no_pacs_is_rejected_even_from_its_address(
        pki: Path, names: list[str] | None) -> None:
    verdict, log = associate(config(pki, tls=True), "10.1.2.3", names)
    assert isinstance(verdict, RejectAssociation) and verdict.reason == 3
    assert log.events[-1]["decision"] == "deny" and log.events[-1]["reason"] == Reason.NOT_A_PACS.value
    assert "names no configured PACS" in log.events[-1]["detail"]


def test_in_plain_mode_the_address_decides(pki: Path) -> None:
    plain = config(pki, tls=False)
    assert return_context(plain) is None
    assert isinstance(associate(plain, "10.1.2.3", None)[0], ForwardAssociation)
    verdict, log = associate(plain, "192.0.2.77", ["pacs"])  # a certificate proves nothing here
    assert isinstance(verdict, RejectAssociation) and log.events[-1]["reason"] == Reason.NOT_A_PACS.value


def handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> str | None:
    """The client certificate's CN the server saw once the handshake succeeded, or None."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        seen: list[str | None] = []

        def serve() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(5)
                try:
                    with server.wrap_socket(conn, server_side=True) as tls:
                        seen.append(certificate_names(tls.getpeercert())[0])
                        tls.sendall(b"x")
                except (ssl.SSLError, OSError):
                    seen.append(None)

        thread = threading.Thread(target=serve)
        thread.start()
        try:
            with socket.create_connection(listener.getsockname()[:2], timeout=5) as raw, \
                    client.wrap_socket(raw, server_hostname="gw1") as tls:
                tls.recv(1)  # TLS 1.3: a refused certificate is reported after the handshake
        except (ssl.SSLError, OSError):
            pass
        thread.join(10)
        return seen[0] if seen else None


def test_the_return_listener_requires_a_certificate_from_a_pacs_ca(pki: Path, tmp_path: Path) -> None:
    server = return_context(config(pki, tls=True))
    assert server is not None
    certs.init_ca(tmp_path)  # another CA, whose certificates no PACS carries
    certs.issue(tmp_path, "pacs", ["127.0.0.1"])
    ours = client_context(ca=pki / "ca.crt", certificate=pki / "pacs.crt", key=pki / "pacs.key")
    stranger = client_context(ca=pki / "ca.crt", certificate=tmp_path / "pacs.crt", key=tmp_path / "pacs.key")
    assert handshake(server, ours) == "pacs"
    assert handshake(server, stranger) is None
    assert handshake(server, client_context(ca=pki / "ca.crt")) is None  # no certificate at all
