"""Issue 13, case 8: TLS per PS3.15 B.12 (BCP 195: TLS 1.3 preferred, TLS 1.2 with ECDHE and AEAD
suites only) on both agents' listeners, and identity strictness: a client-credentials token (no
human user, RFC 6749 4.4) is not a user identity (PS3.7 D.3.3.7)."""

from __future__ import annotations

import socket
import ssl

import pytest
import requests

from devtools.site import Site

from .ring import events
from .support import VERIFICATION, Ended, Peer, Proposal, associate_rq, jwt_identity, tls_client

pytestmark = pytest.mark.e2e

# TLS 1.2 CBC suites with ECDHE, for the site's EC certificates and for RSA ones.
CBC_SUITES = ("ECDHE-ECDSA-AES128-SHA256", "ECDHE-ECDSA-AES256-SHA384", "ECDHE-ECDSA-AES128-SHA",
              "ECDHE-ECDSA-AES256-SHA", "ECDHE-RSA-AES128-SHA256", "ECDHE-RSA-AES256-SHA384",
              "ECDHE-RSA-AES128-SHA", "ECDHE-RSA-AES256-SHA")
AEAD_SUITE = "ECDHE-ECDSA-AES128-GCM-SHA256"


def tls12_cipher(site: Site, port: int, client: str, server_name: str, suite: str) -> str | None:
    """The suite a TLS 1.2 handshake offering only ``suite`` settles on, or None if it is refused.
    The client presents a certificate the listener trusts, so only the suite can make it fail."""
    context = tls_client(site.pki, client)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(f"{suite}:@SECLEVEL=0")  # offer it even where the local default would not
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                context.wrap_socket(raw, server_hostname=server_name) as tls:
            cipher = tls.cipher()
            return cipher[0] if cipher else None
    except (ssl.SSLError, OSError):
        return None


@pytest.mark.usefixtures("workstation")
def test_tls12_cbc_suites_are_refused_by_both_agents(site: Site) -> None:
    """On 7c541cf both listeners accepted ECDHE-ECDSA-AES128-SHA256 and -AES256-SHA384 (CBC)."""
    listeners = {"server agent": (site.ports["server"], "ws1", "gw1"),
                 "workstation agent return": (site.ports["agent_return"], "gw1", "ws1")}
    accepted = {}
    for name, (port, client, server_name) in listeners.items():
        assert tls12_cipher(site, port, client, server_name, AEAD_SUITE) == AEAD_SUITE, f"{name}: no TLS at all"
        accepted[name] = [s for s in CBC_SUITES if tls12_cipher(site, port, client, server_name, s) is not None]
    assert not any(accepted.values()), f"CBC suites accepted with TLS 1.2: {accepted}"


def test_a_client_credentials_token_opens_no_association_as_a_user(site: Site) -> None:
    """On 8c27d9f it was accepted as user 'server-agent'."""
    assert site.hial is not None
    response = requests.post(f"{site.hial.issuer}/token", timeout=10, auth=("server-agent", "demo-server-agent-secret"),
                             data={"grant_type": "client_credentials", "scope": "user/ImagingStudy.rs"})
    assert response.status_code == 200, response.text
    with Peer.connect(site.ports["server"], tls=tls_client(site.pki)) as peer:
        got = peer.associate(associate_rq(called="ORTHANC@GW1", calling="SERVICE@WS1", proposals=(
            Proposal(id=1, abstract=VERIFICATION),), identity=jwt_identity(response.json()["access_token"])))
    assert isinstance(got, Ended) and got.kind == "reject", f"a client-credentials token opened an association: {got}"
    assert events(site, event="authentication", calling_ae="SERVICE@WS1", decision="deny")
    assert not events(site, event="authentication", calling_ae="SERVICE@WS1", decision="permit")
