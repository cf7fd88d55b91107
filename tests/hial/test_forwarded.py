"""The login source: the HTTP peer, or the one address a trusted forwarder names (RFC 7239)."""

from __future__ import annotations

import ipaddress

import pytest

from hial_mock.forwarded import UNKNOWN_PEER, ForwardedError, Source, login_source, parse_for, peer_address

PEER = ipaddress.ip_address("127.0.0.1")


@pytest.mark.parametrize(("header", "address"), [
    ('for="203.0.113.7"', "203.0.113.7"),
    ("for=203.0.113.7", "203.0.113.7"),
    ('For="203.0.113.7:47011"', "203.0.113.7"),
    ('for="[2001:db8::1]"', "2001:db8::1"),
    ('for="[2001:db8::1]:4711";proto=https;by=192.0.2.1', "2001:db8::1"),
    ('proto=https; for="198.51.100.17"', "198.51.100.17"),
    ('for="[::ffff:192.0.2.5]"', "192.0.2.5"),  # an IPv4 host is one source however it is spelled
])
def test_one_element_names_one_address(header: str, address: str) -> None:
    assert parse_for(header) == ipaddress.ip_address(address)


@pytest.mark.parametrize("header", [
    'for="203.0.113.7", for="198.51.100.1"',  # two elements: which one?
    'for="203.0.113.7";for="198.51.100.1"',  # a parameter twice (RFC 7239 section 4)
    "proto=https",  # no for
    'for="unknown"', "for=_hidden", 'for="_gazonk"',  # obfuscated: not an address to count
    "for=2001:db8::1", 'for="2001:db8::1"',  # RFC 7239 section 6: IPv6 goes in brackets, quoted
    'for="[2001:db8::1"', 'for="203.0.113.7:port"', 'for="203.0.113.7:123456"',
    'for="203.0.113.7', "for", "=x", 'for="fe80::1%eth0"', "for=203.0.113.7 junk",
    "for=" + "1" * 300,
])
def test_anything_that_could_be_read_two_ways_is_refused(header: str) -> None:
    with pytest.raises(ForwardedError):
        parse_for(header)


def test_only_a_trusted_forwarder_names_the_source() -> None:
    named = ['for="203.0.113.7"']
    assert login_source(PEER, named, trusted=True) == Source(address=ipaddress.ip_address("203.0.113.7"), peer=PEER)
    assert login_source(PEER, named, trusted=False) == Source(address=PEER, peer=PEER)
    assert login_source(PEER, [], trusted=True) == Source(address=PEER, peer=PEER)
    with pytest.raises(ForwardedError):
        login_source(PEER, named * 2, trusted=True)  # two header lines
    assert str(login_source(PEER, named, trusted=True)) == "203.0.113.7 (forwarded by 127.0.0.1)"


def test_peer_addresses_have_one_spelling() -> None:
    assert peer_address("::ffff:10.1.2.3") == ipaddress.ip_address("10.1.2.3")
    assert peer_address("fe80::1%eth0") == ipaddress.ip_address("fe80::1")
    assert peer_address(None) == UNKNOWN_PEER
    assert peer_address("not an address") == UNKNOWN_PEER
