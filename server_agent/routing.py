"""Where an association goes, and who is asking: routing by AE title and proof of the workstation.

Self-describing AE titles (architecture: routing): the called AE title ``PACS@GW`` names the PACS (a
title with no ``@`` goes to the default PACS); the calling AE title ``APP@WS`` names an application on
a workstation. The workstation decides where C-MOVE images may go and what the PDP and the decision
log see, so over TLS the workstation agent's certificate must prove it; on a listener without client
certificates the claim proves nothing and the association has no workstation. Pure functions of the
configuration and what the driver saw.
"""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from audit.events import Reason
from dicomwire.upstream import Upstream

from .config import Pacs, ServerAgentConfig

log = logging.getLogger("server_agent")


def route(config: ServerAgentConfig, called_ae: str) -> Pacs | None:
    """The PACS a called AE title names (``PACS@GW``, or the default PACS for a title without ``@``)."""
    name, at, _ = called_ae.partition("@")
    if name in config.pacs:
        return config.pacs[name]
    if not at and config.default_pacs:
        return config.pacs[config.default_pacs]
    return None


@dataclass(frozen=True, slots=True)
class Claim:
    """The workstation a calling AE title names, and what the certificate made of it."""

    workstation: str  # proven, or "" (none named, or nothing proves it)
    claimed: str  # as named in ``APP@WS``
    refusal: Reason | None = None
    detail: str = ""


def workstation_claim(config: ServerAgentConfig, calling_ae: str, names: list[str]) -> Claim:
    """The workstation in ``APP@WS``: proven by a certificate naming it (the name this agent checks
    when it connects back to that workstation), refused when a certificate names another one."""
    claimed = calling_ae.partition("@")[2]
    if not claimed:
        return Claim("", "")
    if not names:
        return Claim("", claimed)  # no certificate (the plain listener): the claim proves nothing
    registered = config.workstations.get(claimed)
    expected = (registered.server_name if registered else claimed).lower()
    if expected not in {name.lower() for name in names}:
        return Claim("", claimed, Reason.WORKSTATION_UNPROVEN,
                     f"calling AE title {calling_ae!r} names workstation {claimed!r}, which the client certificate "
                     f"{names} does not prove")
    return Claim(claimed, claimed)


def pacs_upstream(pacs: Pacs, contexts: Mapping[str, ssl.SSLContext]) -> Upstream:
    """Where the association goes: the PACS, over TLS when it offers DICOM over TLS (PS3.15 B.1)."""
    context = contexts.get(pacs.name)
    return Upstream(host=pacs.host, port=pacs.port, ssl=context,
                    server_hostname=pacs.server_name if context is not None else None)


def return_source(config: ServerAgentConfig, peer: tuple[str, int] | None, names: list[str],
                  pacs_hosts: set[str]) -> tuple[str | None, str]:
    """Which configured PACS opened a return association, or None and why not.

    With ``[return] tls`` (PS3.15 B.12) the handshake has verified a client certificate chaining to a
    configured PACS's CA; the PACS is the one whose ``certificate_names`` it carries (compared without
    case), whatever the source address. Without it, only the source address tells: any configured
    PACS's address is accepted (and the return association is named by no PACS in particular).
    """
    if config.return_.tls:
        carried = {name.lower() for name in names}
        for entry in config.pacs.values():
            if carried & {name.lower() for name in entry.peer_names}:
                return entry.name, ""
        return None, f"certificate {names or '(none)'} names no configured PACS"
    if peer is None or peer[0] not in pacs_hosts:
        return None, f"{peer[0] if peer else '-'} is not a configured PACS"
    return "", ""


def pacs_addresses(pacs: Iterable[Pacs]) -> set[str]:
    """The addresses the PACS open return associations from: each configured host as written and,
    for a name, every address it resolves to now (a return association arrives from an address,
    never a name). Resolved once, at start: a PACS that moves needs a restart."""
    addresses: set[str] = set()
    for entry in pacs:
        addresses.add(entry.host)
        try:
            infos = socket.getaddrinfo(entry.host, None, type=socket.SOCK_STREAM)
        except OSError as error:
            log.warning("PACS %s: host %r does not resolve (%s); return associations are accepted only from "
                        "that literal address", entry.name, entry.host, error)
            continue
        addresses.update(str(info[4][0]) for info in infos)
    return addresses


__all__ = ["Claim", "pacs_addresses", "pacs_upstream", "return_source", "route", "workstation_claim"]
