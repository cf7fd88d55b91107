"""DICOM over TLS (PS3.15 B.12, BCP 195 / RFC 9325): the one place where TLS contexts are made.

Every listener and client of the project (both agents' DICOM listeners and clients, the return path,
the audit sender, the HTTP clients of the identity provider and PDP, the HIAL, tests and devtools)
takes its ``ssl.SSLContext`` from :func:`server_context` or :func:`client_context`, so that one
profile holds everywhere (PS3.15 B.12 "BCP195 TLS Secure Transport Connection Profile", which points
at RFC 9325):

* TLS 1.3 preferred: both ends offer it, so it is chosen whenever the peer has it (RFC 9325 3.1.1);
* TLS 1.2 only with ECDHE key exchange and AEAD suites (RFC 9325 4.2: forward secrecy, no CBC, no
  static RSA key exchange); TLS 1.1 and below never (RFC 8996);
* no TLS compression (RFC 9325 3.3, CRIME) and no renegotiation (RFC 9325 3.5);
* a peer certificate always verified against the configured CA; a server that requires client
  certificates (mutual authentication, PS3.15 B.12 "the node shall be authenticated") refuses a
  handshake without one.

A peer is then named by its certificate's subject Common Name and DNS subject-alternative names
(:func:`certificate_names`); the agents compare those names, case-insensitively, with the names their
configuration expects.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# RFC 9325 4.2: the TLS 1.2 suites that remain recommended, in OpenSSL's cipher-list language. TLS 1.3
# suites are all AEAD and are not affected by this list (OpenSSL configures them apart).
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"

PathLike = Path | str


def _profile(context: ssl.SSLContext) -> ssl.SSLContext:
    """Apply the BCP 195 profile shared by servers and clients."""
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    return context


def server_context(certificate: PathLike, key: PathLike, *, ca: PathLike | Sequence[PathLike] | None = None,
                   require_client_certificate: bool = True) -> ssl.SSLContext:
    """A listener's context: our certificate and key; with ``ca`` (one CA file, or several: the return
    listener trusts each configured PACS's), client certificates chaining to it are verified, and
    required unless ``require_client_certificate`` is False (an HTTPS server whose clients
    authenticate otherwise). Mutual authentication without a CA is a configuration error."""
    cas = [ca] if isinstance(ca, Path | str) else list(ca or ())
    if require_client_certificate and not cas:
        raise ValueError("a listener that requires client certificates needs the CA they chain to")
    context = _profile(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    context.load_cert_chain(str(certificate), str(key))
    for authority in dict.fromkeys(str(c) for c in cas):
        context.load_verify_locations(cafile=authority)
    if cas:
        context.verify_mode = ssl.CERT_REQUIRED if require_client_certificate else ssl.CERT_OPTIONAL
    # The server picks among the suites both offer, in its own order (RFC 9325 4.2: AES-GCM first).
    context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    # No TLS 1.3 session tickets (RFC 8446 4.6.1 lets a server send none): no client of ours resumes a
    # session (asyncio and the workstation agent's warm connections always handshake in full), so each
    # ticket was work for nothing, and a client kept it for the connection's life (measured: ~8% of the
    # server agent's CPU per handshake, 3-4 KiB per workstation-agent connection; docs/performance.md).
    context.num_tickets = 0
    return context


def client_context(*, ca: PathLike | None = None, certificate: PathLike | None = None,
                   key: PathLike | None = None) -> ssl.SSLContext:
    """A client's context: the server's certificate verified against ``ca`` (None: the system's trust
    store, for a public HTTPS identity provider) and its name checked; ``certificate`` and ``key`` are
    presented to a server that asks for client certificates."""
    context = _profile(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))  # CERT_REQUIRED and check_hostname
    if ca is not None:
        context.load_verify_locations(cafile=str(ca))
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if certificate is not None:
        context.load_cert_chain(str(certificate), str(key) if key is not None else None)
    return context


def certificate_names(cert: dict[str, Any] | None) -> list[str]:
    """Subject CN and DNS subject-alternative names of a peer certificate (``ssl.getpeercert()`` form)."""
    if not cert:
        return []
    names = [str(value) for rdn in cert.get("subject", ()) for key, value in rdn if key == "commonName"]
    return names + [str(value) for kind, value in cert.get("subjectAltName", ()) if kind == "DNS"]


__all__ = ["TLS12_CIPHERS", "certificate_names", "client_context", "server_context"]
