"""DICOM audit messages reach a real rsyslog over TLS; while it is down they wait, none lost, none twice."""

from __future__ import annotations

import time
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from agent import certs
from audit.dicom_audit import audit_message
from audit.events import Action, AuthenticationEvent, AuthorizationEvent, Decision, PdpAnswer, Reason, Who
from audit.syslog import SpooledSender, SyslogTarget, rfc5424
from devtools.rsyslog import RSYSLOGD, Rsyslog

pytestmark = pytest.mark.skipif(not Path(RSYSLOGD).exists(), reason="rsyslog is installed by `make test`")


RAD = Who(kind="user", sub="rad", username="rad", roles=("radiologist",))


def query(n: int, decision: Decision = Decision.PERMIT, break_glass: bool = False) -> AuthorizationEvent:
    return AuthorizationEvent(association="a1", action=Action.C_FIND, decision=decision, reason=Reason.PDP,
                              pdp=PdpAnswer(reason="permit" if decision is Decision.PERMIT else "consent_denied",
                                            break_glass=break_glass),
                              user=RAD, calling_ae="FINDSCU@WS1",
                              resource={"patient_id": f"PAT-{n}", "study_instance_uid": f"1.2.3.{n}"})


def message(n: int, decision: Decision = Decision.PERMIT, break_glass: bool = False) -> bytes:
    return audit_message(query(n, decision, break_glass), "GW1", time=f"2026-11-22T10:00:{n:02d}.000000+00:00")


def wait_for(condition, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_audit_message_shapes() -> None:
    query_message = ET.fromstring(message(1))
    assert query_message.find("EventIdentification/EventID").get("csd-code") == "110112"  # type: ignore[union-attr]
    requestor = query_message.find("ActiveParticipant[@UserIsRequestor='true']")
    assert requestor is not None and requestor.get("UserID") == "rad"
    node = query_message.find("ActiveParticipant[@UserID='FINDSCU@WS1']")
    assert node is not None and node.get("UserIsRequestor") == "false"
    objects = {o.get("ParticipantObjectTypeCode"): o.get("ParticipantObjectID")
               for o in query_message.findall("ParticipantObjectIdentification")}
    assert objects == {"1": "PAT-1", "2": "1.2.3.1"}
    denied = ET.fromstring(message(2, decision=Decision.DENY))
    assert denied.find("EventIdentification/EventID").get("csd-code") == "110113"  # type: ignore[union-attr]
    assert denied.find("EventIdentification").get("EventOutcomeIndicator") == "4"  # type: ignore[union-attr]
    assert denied.findtext("EventIdentification/EventOutcomeDescription") == "consent_denied"  # the PDP's code
    login = ET.fromstring(audit_message(AuthenticationEvent(
        association="a1", decision=Decision.PERMIT, reason=Reason.AUTHENTICATED, user=RAD, calling_ae="FINDSCU@WS1",
        peer="127.0.0.1:5000"), "GW1", time="t"))
    assert login.find("EventIdentification/EventTypeCode").get("csd-code") == "110122"  # type: ignore[union-attr]
    node = login.find("ActiveParticipant[@UserID='FINDSCU@WS1']")
    assert node is not None and node.get("NetworkAccessPointID") == "127.0.0.1"
    glass = ET.fromstring(message(3, break_glass=True))
    assert glass.find("EventIdentification/EventTypeCode").get("csd-code") == "110127"  # type: ignore[union-attr]
    frame = rfc5424(b"<AuditMessage/>", "dicom-server-agent")
    assert frame.startswith(b"<85>1 ") and b" DICOM+RFC3881 - \xef\xbb\xbf<AuditMessage/>" in frame


def test_delivered_to_rsyslog_over_tls_in_order_none_lost_none_twice(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    certs.init_ca(pki)
    certs.issue(pki, "audit", ["127.0.0.1"])
    certs.issue(pki, "gw1", ["127.0.0.1"])
    repository = Rsyslog(tmp_path / "rsyslog", ca=pki / "ca.crt", certificate=pki / "audit.crt",
                         key=pki / "audit.key").start()
    sender = SpooledSender(SyslogTarget(host="127.0.0.1", port=repository.port, ca=pki / "ca.crt",
                                        certificate=pki / "gw1.crt", key=pki / "gw1.key", server_name="audit"),
                           tmp_path / "spool")
    try:
        for n in range(5):
            sender.submit(message(n))
        wait_for(lambda: len(repository.messages()) == 5)
        parsed = [ET.fromstring(m) for m in repository.messages()]
        assert all(p.tag == "AuditMessage" for p in parsed)
        repository.stop()  # the repository goes down...
        for n in range(5, 15):
            sender.submit(message(n))
        time.sleep(1.0)
        assert sender.pending() > 0  # ...the messages wait in the spool
        repository.start()  # ...and it comes back on the same port
        wait_for(lambda: sender.pending() == 0 and len(repository.messages()) >= 15)
        time.sleep(0.5)
        patients = [ET.fromstring(m).find("ParticipantObjectIdentification").get("ParticipantObjectID")  # type: ignore[union-attr]
                    for m in repository.messages()]
        assert patients == [f"PAT-{n}" for n in range(15)]  # every one, once, in order
    finally:
        sender.close(1)
        repository.stop()


def test_udp_transport_sends_one_message_per_datagram(tmp_path: Path) -> None:
    import socket

    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(10)
    sender = SpooledSender(SyslogTarget(host="127.0.0.1", port=receiver.getsockname()[1], transport="udp"),
                           tmp_path / "spool")
    try:
        sender.submit(message(1))
        sender.submit(message(2))
        datagrams = [receiver.recv(65535), receiver.recv(65535)]
    finally:
        sender.close(1)
        receiver.close()
    for n, datagram in zip((1, 2), datagrams, strict=True):
        assert datagram.startswith(b"<85>1 ")  # RFC 5426: the RFC 5424 message alone, no octet count
        xml = datagram.split(b"\xef\xbb\xbf", 1)[1]
        assert ET.fromstring(xml).find("ParticipantObjectIdentification").get("ParticipantObjectID") == f"PAT-{n}"  # type: ignore[union-attr]
