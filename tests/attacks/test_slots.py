"""Issue 13, case 3: slots held by anyone. A slot is held only by an association whose transport is up,
and what an unauthenticated peer makes the agent buffer is bounded. The attacker connects from
127.0.0.2, the legitimate user from 127.0.0.1, so that bounds per source address do not count them
together. This site has 20 association slots per listener, so the attack takes a few hundred
connections, not thousands."""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import time
from collections.abc import Iterator

import pytest
from pydicom import dcmread

from devtools.site import Site

from .conftest import start_site, stop_site
from .ring import user_association, user_token, vm_rss, workstation_agent
from .support import (
    ASSOCIATE_RQ,
    ATTACKER,
    STUDY_ROOT_MOVE,
    VERIFICATION,
    Message,
    Proposal,
    describe,
    echo_rq,
    message,
    move_rq,
    text,
    uid,
)

pytestmark = pytest.mark.e2e

MAX_ASSOCIATIONS = 20
# The bound: a site under 1,000 such connections stays under 256 MiB, from about 80 MiB idle,
# so about 180 KiB per connection; for 200 connections 36 MiB, plus 12 MiB of allocator noise.
PARTIAL_RQS = 200
RQ_DECLARED = 1024 * 1024  # the longest A-ASSOCIATE-RQ the agent's framer accepts today
GROWTH_BOUND = 48 * 1024 * 1024


@pytest.fixture(scope="module")
def small_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    site = start_site(tmp_path_factory.mktemp("slots"), max_associations=MAX_ASSOCIATIONS)
    yield site
    stop_site(site)


@pytest.fixture()
def fresh_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """A site whose server agent no other attack has touched: the workstation-side test needs the
    server agent's TLS listener, which the server-side one exhausts on today's code."""
    site = start_site(tmp_path_factory.mktemp("return-slots"))
    yield site
    stop_site(site)


def connections_without_tls(site: Site, port: int, server_name: str, each: int) -> list[socket.socket]:
    """``each`` connections of four kinds to a TLS listener: a port scan or load balancer check
    (closed at once), a client of the wrong protocol (plain text, handshake fails), a TLS scanner
    without a client certificate (refused), and idle ones, left open and returned."""
    address, source = ("127.0.0.1", port), (ATTACKER, 0)
    anonymous = ssl.create_default_context(cafile=str(site.pki / "ca.crt"))
    held = []
    for _ in range(each):
        socket.create_connection(address, timeout=5, source_address=source).close()
        with socket.create_connection(address, timeout=5, source_address=source) as plain:
            plain.sendall(b"GET / HTTP/1.0\r\n\r\n")
        with contextlib.suppress(OSError), socket.create_connection(address, timeout=5, source_address=source) as raw, \
                anonymous.wrap_socket(raw, server_hostname=server_name) as tls:
            tls.recv(1)  # TLS 1.3: the refusal of the missing certificate arrives after the handshake
        held.append(socket.create_connection(address, timeout=5, source_address=source))
    return held


def test_connections_that_never_finish_tls_leave_a_slot_for_a_user(small_site: Site) -> None:
    """On 8c27d9f the user was refused (A-ASSOCIATE-RJ 2/3/2, local limit exceeded) until a restart."""
    token = user_token(small_site, "rad")
    held = connections_without_tls(small_site, small_site.ports["server"], "gw1", each=MAX_ASSOCIATIONS * 5 // 2)
    try:
        deadline, outcome = time.monotonic() + 5, ""
        while time.monotonic() < deadline:  # a fix may release a slot a moment after its socket closes
            try:
                with user_association(small_site, token, "LEGIT@WS1", Proposal(id=1, abstract=VERIFICATION)) as peer:
                    peer.send(message(1, echo_rq(1)))
                    echo = peer.read_message()
                    assert isinstance(echo, Message) and echo.status == 0x0000, f"the user's C-ECHO: {echo}"
                    return
            except AssertionError as refused:
                outcome = str(refused)
                time.sleep(0.25)
        raise AssertionError(f"after {4 * len(held)} connections without TLS, a user is refused: {outcome}")
    finally:
        for sock in held:
            sock.close()


def test_connections_that_never_finish_tls_leave_the_return_path_open(fresh_site: Site) -> None:
    """The same attack on the workstation's side: its return listener, where the server agent brings
    the images of a user's C-MOVE. rad moves PAT-1's study to the site's DCMTK storescp (MOVESCP@WS1).

    On 8c27d9f the move ended 0xC000 and nothing reached the app.
    """
    assert fresh_site.scp is not None
    study = sorted((fresh_site.root / "data" / "PAT-1").iterdir())
    wanted = {str(dcmread(path).SOPInstanceUID) for path in study}
    with workstation_agent(fresh_site, "rad", {}):
        held = connections_without_tls(fresh_site, fresh_site.ports["agent_return"], "ws1", each=63)  # 252
        try:
            with user_association(fresh_site, user_token(fresh_site, "rad"), "MOVER@WS1",
                                  Proposal(id=1, abstract=STUDY_ROOT_MOVE)) as peer:
                peer.send(message(1, move_rq(1, "MOVESCP@WS1"), text(0x00080052, "STUDY")
                                  + uid(0x0020000D, str(dcmread(study[0]).StudyInstanceUID))))
                answers, ended = peer.responses(timeout=10)
        finally:
            for sock in held:
                sock.close()
    delivered = {str(dcmread(path).SOPInstanceUID) for path in fresh_site.scp.received()}
    assert wanted <= delivered, (f"after {4 * len(held)} connections without TLS to the workstation's return "
                                 f"listener, rad's C-MOVE delivered nothing: {[describe(m) for m in answers[-1:]]} "
                                 f"{describe(ended)}")


def trickle_partial_rqs(site: Site, count: int, seconds: float = 10.0) -> list[socket.socket]:
    """``count`` connections to the plain listener, each sending an A-ASSOCIATE-RQ header that declares
    RQ_DECLARED bytes and then all but the last of them, in 64 KiB pieces, round robin. A listener may
    stop reading or close: what it does not take stays unsent."""
    sockets, left = [], []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", site.ports["plain"]), timeout=5, source_address=(ATTACKER, 0))
        sock.setblocking(False)
        sockets.append(sock)
        left.append(struct.pack(">BBI", ASSOCIATE_RQ, 0, RQ_DECLARED) + bytes(RQ_DECLARED - 1))
    deadline = time.monotonic() + seconds
    while any(left) and time.monotonic() < deadline:
        for n, sock in enumerate(sockets):
            if not left[n]:
                continue
            try:
                left[n] = left[n][sock.send(left[n][: 64 * 1024]) :]
            except BlockingIOError:
                pass
            except OSError:
                left[n] = b""  # closed by the listener: nothing more to send
        time.sleep(0.001)
    return sockets


def settled_rss(pid: int, quiet: float = 0.5, limit: float = 3.0) -> int:
    """The highest VmRSS seen until it has stopped growing for ``quiet`` seconds."""
    highest, since, deadline = vm_rss(pid), time.monotonic(), time.monotonic() + limit
    while time.monotonic() - since < quiet and time.monotonic() < deadline:
        time.sleep(0.05)
        now = vm_rss(pid)
        if now > highest:
            highest, since = now, time.monotonic()
    return highest


def test_partial_associate_requests_keep_the_server_agent_within_a_memory_bound(small_site: Site) -> None:
    """On 8c27d9f the server agent grew from about 75 to 300 MiB."""
    assert small_site.server is not None
    pid = small_site.server.pid
    before = vm_rss(pid)
    sockets = trickle_partial_rqs(small_site, PARTIAL_RQS)
    try:
        during = settled_rss(pid)
    finally:
        for sock in sockets:
            sock.close()
    growth = during - before
    assert growth < GROWTH_BOUND, (f"{PARTIAL_RQS} partial A-ASSOCIATE-RQs took the server agent from "
                                   f"{before >> 20} to {during >> 20} MiB (bound: +{GROWTH_BOUND >> 20} MiB)")
