"""Every bound and timeout of a relay, each with the reason for its default.

Per association (the core): PDU sizes, what is held while a decision is made, the PS3.8 timers and
the decision deadline. Per listener (the driver): what connections that have not yet formed an
association may hold in all and per source address, so that anonymous peers (port scans, load
balancer checks, TLS scanners, a flood) can never hold the slots and memory legitimate users need.
"""

from __future__ import annotations

from dataclasses import dataclass

from .pdu import DEFAULT_MAX_ASSOCIATE_LENGTH, DEFAULT_MAX_PDU_LENGTH

KiB = 1024
MiB = 1024 * KiB


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayLimits:
    # Largest P-DATA-TF we accept; an endpoint announcing more (or 0, unlimited) is told this instead.
    max_pdu_length: int = DEFAULT_MAX_PDU_LENGTH
    # Largest A-ASSOCIATE-RQ/AC: 128 presentation contexts of ten transfer syntaxes (~40 KiB) and a User
    # Identity sub-item at its 16-bit maximum (64 KiB) fit with room to spare; a "request" larger than
    # this is no request, and an anonymous peer may make us hold this much per connection.
    max_associate_length: int = DEFAULT_MAX_ASSOCIATE_LENGTH
    # C-FIND/C-GET/C-MOVE identifiers held while a decision is made; real ones are a few KiB.
    max_identifier_length: int = 256 * KiB
    # Head of a C-STORE data set held for a decision: Patient ID and Study UID come early in tag order,
    # within the first kilobytes; one 16 KiB PDU holds them, and a smaller head stalls the stream less.
    store_head_length: int = 16 * KiB
    # A data set's header, held in full when a policy asks for it (``Extend``: de-identifying a C-STORE
    # before its Pixel Data); an enhanced multi-frame header can be megabytes, anything beyond this is
    # refused rather than held.
    max_header_length: int = 4 * MiB
    # PS3.8 9.1.5 ARTIM: pynetdicom and DCMTK use 30 s for request/release/close supervision.
    artim_timeout: float = 30.0
    connect_timeout: float = 10.0
    # No traffic either way for this long ends the association (a C-MOVE sends pending responses).
    idle_timeout: float = 600.0
    # Each question not answered within this time is answered "deny" (fail closed).
    decision_timeout: float = 10.0
    # Responses under review at once (C-FIND post-filter), decided as a batch; bounds held data.
    max_pending_reviews: int = 64
    # -- per listener: connections without an association yet --
    # A TLS handshake takes milliseconds; a peer that has not finished one in this time is not a client.
    tls_handshake_timeout: float = 10.0
    # Connections accepted but not yet associated (handshaking, or sending their A-ASSOCIATE-RQ), in all
    # and per source address: beyond these a new connection is closed at once, before any TLS work.
    max_pending_connections: int = 512
    max_pending_per_source: int = 32
    # Bytes such connections may have us hold (partial A-ASSOCIATE-RQs), in all: 32 MiB is 128
    # maximal requests at once; a connection that would exceed it is rejected (transient) and closed.
    max_pending_bytes: int = 32 * MiB


__all__ = ["KiB", "MiB", "RelayLimits"]
