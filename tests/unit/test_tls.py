"""The one TLS profile (PS3.15 B.12, BCP 195): what a peer can and cannot negotiate with our contexts."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import certs
from dicomwire.tls import client_context, server_context


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pki")
    certs.init_ca(folder)
    certs.issue(folder, "server", ["127.0.0.1"])
    certs.issue(folder, "client", ["127.0.0.1"])
    return folder


@pytest.fixture
def listener(pki: Path) -> Iterator[tuple[int, list[str]]]:
    """A TLS server with :func:`server_context` (client certificates required) on a thread: its port,
    and what each handshake ended with (the suite, or the error's name)."""
    context = server_context(pki / "server.crt", pki / "server.key", ca=pki / "ca.crt")
    sock = socket.create_server(("127.0.0.1", 0))
    outcomes: list[str] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    with context.wrap_socket(conn, server_side=True) as tls:
                        outcomes.append(f"{tls.version()} {tls.cipher()[0]}")  # type: ignore[index]
                        tls.sendall(b"x")
                except (OSError, ssl.SSLError) as error:
                    outcomes.append(type(error).__name__)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield sock.getsockname()[1], outcomes
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() (close alone does not, on Linux)
    sock.close()
    thread.join(5)


def handshake(port: int, context: ssl.SSLContext) -> str | None:
    """The protocol and suite a handshake settles on, or None when it fails (either side refusing)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                context.wrap_socket(raw, server_hostname="server") as tls:
            tls.recv(1)  # TLS 1.3: a refused client certificate is only reported after the handshake
            cipher = tls.cipher()
            return f"{tls.version()} {cipher[0]}" if cipher else None
    except (OSError, ssl.SSLError):
        return None


def peer(pki: Path, *, tls12: str | None = None, certificate: bool = True) -> ssl.SSLContext:
    """A generic client (OpenSSL's defaults, not our profile): a certificate from the site CA, and
    optionally limited to TLS 1.2 with the suites ``tls12`` (security level 0: offer anything)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki / "ca.crt"))
    if certificate:
        context.load_cert_chain(str(pki / "client.crt"), str(pki / "client.key"))
    if tls12 is not None:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers(f"{tls12}:@SECLEVEL=0")
    return context


def test_tls13_is_chosen_when_both_ends_have_it(pki: Path, listener: tuple[int, list[str]]) -> None:
    port, _ = listener
    ours = client_context(ca=pki / "ca.crt", certificate=pki / "client.crt", key=pki / "client.key")
    assert (handshake(port, ours) or "").startswith("TLSv1.3 ")
    assert (handshake(port, peer(pki)) or "").startswith("TLSv1.3 ")


@pytest.mark.parametrize("suite", ["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
                                   "ECDHE-ECDSA-CHACHA20-POLY1305"])
def test_tls12_with_ecdhe_and_an_aead_suite_is_accepted(pki: Path, listener: tuple[int, list[str]],
                                                        suite: str) -> None:
    assert handshake(listener[0], peer(pki, tls12=suite)) == f"TLSv1.2 {suite}"


@pytest.mark.parametrize("suite", ["ECDHE-ECDSA-AES128-SHA256", "ECDHE-ECDSA-AES256-SHA384", "ECDHE-ECDSA-AES128-SHA",
                                   "ECDHE-RSA-AES128-GCM-SHA256", "AES128-GCM-SHA256", "AES256-SHA256"])
def test_tls12_cbc_and_static_key_exchange_are_refused(pki: Path, listener: tuple[int, list[str]],
                                                       suite: str) -> None:
    assert handshake(listener[0], peer(pki, tls12=suite)) is None


def test_older_protocols_are_refused(pki: Path, listener: tuple[int, list[str]]) -> None:
    old = peer(pki)
    old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    with pytest.warns(DeprecationWarning):
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("ALL:@SECLEVEL=0")
    assert handshake(listener[0], old) is None


def test_a_client_without_a_certificate_is_refused(pki: Path, listener: tuple[int, list[str]]) -> None:
    port, outcomes = listener
    assert handshake(port, peer(pki, certificate=False)) is None
    assert handshake(port, peer(pki, tls12="ECDHE-ECDSA-AES128-GCM-SHA256", certificate=False)) is None
    assert outcomes and all(o == "SSLError" for o in outcomes), outcomes


def test_our_client_refuses_a_server_outside_its_ca_or_name(pki: Path, listener: tuple[int, list[str]],
                                                            tmp_path: Path) -> None:
    certs.init_ca(tmp_path)
    stranger = client_context(ca=tmp_path / "ca.crt", certificate=pki / "client.crt", key=pki / "client.key")
    assert handshake(listener[0], stranger) is None
    ours = client_context(ca=pki / "ca.crt", certificate=pki / "client.crt", key=pki / "client.key")
    with socket.create_connection(("127.0.0.1", listener[0]), timeout=5) as raw, \
            pytest.raises(ssl.SSLCertVerificationError):
        ours.wrap_socket(raw, server_hostname="someone-else")


def test_no_compression_no_renegotiation_and_mutual_authentication_needs_a_ca(pki: Path) -> None:
    for context in (server_context(pki / "server.crt", pki / "server.key", ca=pki / "ca.crt"),
                    client_context(ca=pki / "ca.crt")):
        assert context.options & ssl.OP_NO_COMPRESSION and context.options & ssl.OP_NO_RENEGOTIATION
        assert context.minimum_version == ssl.TLSVersion.TLSv1_2
        assert {c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"} <= {
            "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES128-GCM-SHA256",
            "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305"}
    with pytest.raises(ValueError, match="CA"):
        server_context(pki / "server.crt", pki / "server.key")
    https = server_context(pki / "server.crt", pki / "server.key", require_client_certificate=False)
    assert https.verify_mode == ssl.CERT_NONE


def tickets_after_handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> bool:
    """Whether a TLS 1.3 client holds a session ticket once the handshake and one byte of data are done
    (tickets come after the handshake: the client takes them in with the data it reads)."""
    client_in, client_out, server_in, server_out = (ssl.MemoryBIO() for _ in range(4))
    tls_client = client.wrap_bio(client_in, client_out, server_hostname="server")
    tls_server = server.wrap_bio(server_in, server_out, server_side=True)
    for _ in range(10):
        for end, peer_in, out in ((tls_client, server_in, client_out), (tls_server, client_in, server_out)):
            with contextlib.suppress(ssl.SSLWantReadError):
                end.do_handshake()
            peer_in.write(out.read())
    tls_server.write(b"x")
    client_in.write(server_out.read())
    assert tls_client.read(1) == b"x" and tls_client.version() == "TLSv1.3"
    session = tls_client.session
    return session is not None and session.has_ticket


def test_the_server_sends_no_session_tickets_nobody_would_use(pki: Path) -> None:
    """RFC 8446 4.6.1: none of our clients resumes a session, so a ticket is only work for the server
    and memory at the client for the connection's life (issue 15: memory per idle association)."""
    client = client_context(ca=pki / "ca.crt", certificate=pki / "client.crt", key=pki / "client.key")
    ours = server_context(pki / "server.crt", pki / "server.key", ca=pki / "ca.crt")
    assert not tickets_after_handshake(ours, client)
    ours.num_tickets = 2  # OpenSSL's default: what a server context made without our profile sends
    assert tickets_after_handshake(ours, client)
