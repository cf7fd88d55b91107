"""The flood benchmark's load (``bench/flood_load.py``): what it reports must be what happened.

docs/performance.md says which suite the server agent chose for a TLS scanner offering CBC suites only;
that rests on the load reading the ServerHello off the wire (RFC 5246 7.4.1.2-7.4.1.3). And every run
must send each kind its stated share of the connections.
"""

from __future__ import annotations

import collections
import itertools
import ssl
from pathlib import Path

import pytest

from agent import certs
from bench.flood_load import KINDS, mix, scanner_context, schedule, server_hello


def first_flight(server: ssl.SSLContext, client: ssl.SSLContext) -> bytes:
    """The bytes a TLS server answers a client's ClientHello with, both driven over memory BIOs."""
    client_in, client_out, server_in, server_out = (ssl.MemoryBIO() for _ in range(4))
    tls_client = client.wrap_bio(client_in, client_out, server_hostname="gw1")
    tls_server = server.wrap_bio(server_in, server_out, server_side=True)
    with pytest.raises(ssl.SSLWantReadError):
        tls_client.do_handshake()
    server_in.write(client_out.read())
    with pytest.raises(ssl.SSLWantReadError):
        tls_server.do_handshake()
    return server_out.read()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pki")
    certs.init_ca(folder)
    certs.issue(folder, "gw1", ["127.0.0.1"])
    return folder


@pytest.mark.parametrize(("server_suite", "code"), [("ECDHE-ECDSA-AES128-SHA256", 0xC023),
                                                    ("ECDHE-ECDSA-AES256-SHA384", 0xC024),
                                                    ("ECDHE-ECDSA-AES128-SHA", 0xC009)])
def test_the_scanner_names_the_suite_the_server_chose(pki: Path, server_suite: str, code: int) -> None:
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(str(pki / "gw1.crt"), str(pki / "gw1.key"))
    server.set_ciphers(f"{server_suite}:@SECLEVEL=0")
    server.maximum_version = ssl.TLSVersion.TLSv1_2
    scanner = scanner_context("TLS 1.2 CBC only")
    names = {int(c["id"]) & 0xFFFF: str(c["name"]) for c in scanner.get_ciphers()}

    assert server_hello(first_flight(server, scanner)) == ("TLS 1.2", code)
    assert names[code] == server_suite


def test_a_server_hello_with_a_session_id() -> None:
    """RFC 5246 7.4.1.3, built by hand: the suite follows a session id of its own length."""
    body = bytes.fromhex("0301") + bytes(range(32)) + bytes([32]) + bytes([0xC0] * 32) + bytes.fromhex("c02b00")
    handshake = bytes([2]) + len(body).to_bytes(3, "big") + body  # HandshakeType server_hello (2)
    record = bytes.fromhex("160301") + len(handshake).to_bytes(2, "big") + handshake  # ContentType handshake (22)
    assert server_hello(record) == ("TLS 1.0", 0xC02B)


def test_an_alert_is_no_server_hello() -> None:
    assert server_hello(bytes.fromhex("15030300020228")) is None  # fatal handshake_failure (RFC 5246 7.2)
    assert server_hello(b"") is None


def test_every_round_gives_each_kind_its_share_interleaved() -> None:
    one_round = schedule(mix())
    assert collections.Counter(one_round) == {name: share for name, share, _ in KINDS}
    assert all(a != b for a, b in itertools.pairwise(one_round) if a != "tcp-check")


def test_a_kind_alone_and_an_unknown_kind() -> None:
    assert set(schedule(mix(["tls-silent"]))) == {"tls-silent"}
    with pytest.raises(ValueError, match="unknown kinds"):
        mix(["tls-silnet"])
