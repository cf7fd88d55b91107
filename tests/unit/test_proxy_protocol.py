"""PROXY protocol v2 (HAProxy's proxy-protocol.txt 2.2): the header's codec, and a listener that believes it
only from its configured proxies, over real loopback sockets."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from typing import Any

import pytest

from dicomwire import proxy
from dicomwire.listener import RelayServer
from dicomwire.policy import ConnectionInfo, TransparentPolicy
from dicomwire.upstream import Upstream
from tests.unit.test_aio_driver import _read_pdu
from tests.unit.test_relay_core import AC, RQ


def test_headers_as_haproxy_writes_them_read_back() -> None:
    header = proxy.encode(("10.1.2.3", 4242), ("10.0.0.1", 11112))
    # proxy-protocol.txt 2.2: signature, 0x21 (v2, PROXY), 0x11 (TCP over IPv4), 12 address bytes.
    assert header.hex() == "0d0a0d0a000d0a515549540a" "2111000c" "0a010203" "0a000001" "1092" "2b68"
    assert proxy.parse(header[:16], header[16:]) == proxy.Proxied(("10.1.2.3", 4242), ("10.0.0.1", 11112))
    six = proxy.encode(("2001:db8::7", 5))
    assert proxy.parse(six[:16], six[16:]).source == ("2001:db8::7", 5)
    assert proxy.parse(proxy.encode(None)[:16], b"") == proxy.Proxied(None)  # LOCAL: the proxy's own check
    with_tlvs = bytearray(header + b"\x04\x00\x03abc")  # a NOOP TLV (2.2.7) after the addresses is skipped
    with_tlvs[15] += 6
    assert proxy.parse(bytes(with_tlvs[:16]), bytes(with_tlvs[16:])).source == ("10.1.2.3", 4242)


@pytest.mark.parametrize(("fixed", "why"), [
    (b"PROXY TCP4 1.2.3", "signature"),  # version 1 (text) is not accepted
    (proxy.SIGNATURE + b"\x11\x11\x00\x0c", "version"),
    (proxy.SIGNATURE + b"\x22\x11\x00\x0c", "version"),  # an unknown command
    (proxy.SIGNATURE + b"\x21\x11\x04\x01", "bytes"),  # longer than any proxy of ours sends
])
def test_a_header_that_is_not_one_we_accept_is_refused(fixed: bytes, why: str) -> None:
    with pytest.raises(proxy.ProxyHeaderError, match=why):
        proxy.header_length(fixed)


def test_udp_unix_and_short_headers_are_refused_and_random_bytes_raise_nothing_else() -> None:
    udp = bytearray(proxy.encode(("10.1.2.3", 1)))
    udp[13] = 0x12  # UDP over IPv4
    for bad in (bytes(udp), proxy.encode(("10.1.2.3", 1))[:-1]):
        with pytest.raises(proxy.ProxyHeaderError):
            proxy.parse(bad[:16], bad[16:])
    rng = random.Random(7)
    for _ in range(20_000):
        fixed = proxy.SIGNATURE + bytes([0x20 | rng.randrange(3), rng.randrange(256), 0, rng.randrange(64)])
        with contextlib.suppress(proxy.ProxyHeaderError):
            proxy.parse(fixed, os.urandom(fixed[15]))


def test_only_configured_proxies_are_believed() -> None:
    proxies = proxy.networks(["127.0.0.1", "10.0.0.0/29"])
    assert proxy.trusted("127.0.0.1", proxies) and proxy.trusted("10.0.0.7", proxies)
    assert proxy.trusted("::ffff:127.0.0.1", proxies)  # a dual-stack listener's view of IPv4
    assert not proxy.trusted("10.0.0.8", proxies) and not proxy.trusted("-", proxies)


class _Recording:
    """A transparent relay that remembers what each association's policy was told about its connection."""

    def __init__(self, port: int) -> None:
        self.inner = TransparentPolicy(Upstream(host="127.0.0.1", port=port))
        self.asks = self.inner.asks
        self.infos: list[ConnectionInfo] = []

    def open(self, info: ConnectionInfo) -> Any:
        self.infos.append(info)
        return self.inner.open(info)


async def _exchange(proxies: tuple[str, ...], first: bytes) -> tuple[bytes, list[ConnectionInfo]]:
    """Connect to a relay (trusting ``proxies``), send ``first`` and the A-ASSOCIATE-RQ; what came back."""
    async def pacs(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_pdu(reader)
        writer.write(AC)
        await writer.drain()
        await reader.read()
        writer.close()

    upstream = await asyncio.start_server(pacs, "127.0.0.1", 0)
    policy = _Recording(upstream.sockets[0].getsockname()[1])
    server = RelayServer(policy, proxies=proxies)
    await server.start()
    reader, writer = await asyncio.open_connection(*server.address)
    writer.write(first + RQ)
    try:
        answer = await asyncio.wait_for(_read_pdu(reader), 10)
    except asyncio.IncompleteReadError as error:
        answer = error.partial
    except ConnectionResetError:  # closed with our bytes unread
        answer = b""
    writer.close()
    await server.shutdown(0.5)
    upstream.close()
    return answer, policy.infos


def test_the_client_a_trusted_proxy_names_is_the_peer() -> None:
    answer, infos = asyncio.run(_exchange(("127.0.0.1",), proxy.encode(("192.0.2.7", 40001), ("10.0.0.1", 104))))
    assert answer == AC
    (info,) = infos
    assert info.peer == ("192.0.2.7", 40001) and info.via is not None and info.via[0] == "127.0.0.1"


def test_a_proxy_health_check_is_the_proxy_itself() -> None:
    answer, infos = asyncio.run(_exchange(("127.0.0.1",), proxy.encode(None)))
    assert answer == AC and infos[0].peer is not None and infos[0].peer[0] == "127.0.0.1" and infos[0].via is None


def test_a_trusted_proxy_without_a_header_is_closed_unheard() -> None:
    answer, infos = asyncio.run(_exchange(("127.0.0.1",), b""))
    assert answer == b"" and infos == []  # the RQ's bytes were no PROXY header: nothing reached a policy


def test_a_header_from_anyone_else_names_nobody() -> None:
    answer, infos = asyncio.run(_exchange(("10.9.9.9",), proxy.encode(("192.0.2.7", 40001))))
    assert answer[:1] != AC[:1]  # its bytes are read as the client's own: not a DICOM PDU, no association
    assert all(i.peer is None or i.peer[0] == "127.0.0.1" for i in infos)


def test_connections_through_a_proxy_are_bounded_per_client_not_per_proxy() -> None:
    from dicomwire.admission import Admission
    from dicomwire.limits import RelayLimits

    admission = Admission(RelayLimits(max_pending_per_source=2, max_pending_connections=10))
    through = [admission.admit("10.0.0.1", per_source=False) for _ in range(5)]  # more than 2 from the proxy
    assert all(p is not None for p in through) and admission.admit("10.0.0.1") is None
    assert [p.move("192.0.2.7") for p in through[:3] if p is not None] == [True, True, False]
    assert through[3] is not None and through[3].move("192.0.2.8")
    assert admission.per_source == {"10.0.0.1": 2, "192.0.2.7": 2, "192.0.2.8": 1}
    for pending in through:
        assert pending is not None
        pending.leave()
    assert admission.per_source == {} and admission.total == 0


def test_clients_a_proxy_names_in_one_ipv6_subscriber_prefix_count_as_one_source() -> None:
    """As for direct connections (test_aio_listener): the client a PROXY header names is counted by its
    /64, or a single IPv6 host behind the load balancer could hold every pending connection."""
    from dicomwire.admission import Admission
    from dicomwire.limits import RelayLimits

    admission = Admission(RelayLimits(max_pending_per_source=2, max_pending_connections=10))
    through = [admission.admit("10.0.0.1", per_source=False) for _ in range(3)]
    assert [p.move(f"2001:db8:0:7::{n}") for n, p in enumerate(through, 1) if p is not None] == [True, True, False]
    assert admission.per_source == {"10.0.0.1": 1, "2001:db8:0:7::/64": 2}
