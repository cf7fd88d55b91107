"""Typed protocol errors that know their wire consequence.

PS3.8 9.3.8 (A-ABORT) and PS3.8 9.3.4 (A-ASSOCIATE-RJ) define the codes these errors carry, so the
relay can turn any error into the exact PDU to send without a lookup table of its own.
"""

from __future__ import annotations

import enum


class AbortSource(enum.IntEnum):
    """PS3.8 9.3.8, A-ABORT byte 9 (0-based 8)."""

    SERVICE_USER = 0
    SERVICE_PROVIDER = 2


class AbortReason(enum.IntEnum):
    """PS3.8 9.3.8, provider reasons (byte 10, 0-based 9); 0 when the source is the service user."""

    NOT_SPECIFIED = 0
    UNRECOGNIZED_PDU = 1
    UNEXPECTED_PDU = 2
    UNRECOGNIZED_PDU_PARAMETER = 4
    UNEXPECTED_PDU_PARAMETER = 5
    INVALID_PDU_PARAMETER_VALUE = 6


class RejectResult(enum.IntEnum):
    """PS3.8 9.3.4, A-ASSOCIATE-RJ result."""

    PERMANENT = 1
    TRANSIENT = 2


class RejectSource(enum.IntEnum):
    """PS3.8 9.3.4, A-ASSOCIATE-RJ source."""

    SERVICE_USER = 1
    SERVICE_PROVIDER_ACSE = 2
    SERVICE_PROVIDER_PRESENTATION = 3


class RejectReason(enum.IntEnum):
    """PS3.8 9.3.4, A-ASSOCIATE-RJ reason/diag. The meaning depends on the source."""

    NO_REASON = 1
    # source 1 (service user)
    APPLICATION_CONTEXT_NOT_SUPPORTED = 2
    CALLING_AE_NOT_RECOGNIZED = 3
    CALLED_AE_NOT_RECOGNIZED = 7
    # source 2 (ACSE): 2 = protocol version not supported
    PROTOCOL_VERSION_NOT_SUPPORTED = 2
    # source 3 (presentation): 1 temporary congestion, 2 local limit exceeded
    TEMPORARY_CONGESTION = 1
    LOCAL_LIMIT_EXCEEDED = 2


class DicomWireError(Exception):
    """Base class of every error raised by dicomwire."""


class ProtocolError(DicomWireError):
    """The peer sent bytes that break PS3.8; the association ends in A-ABORT.

    ``source``/``reason`` are the A-ABORT fields to send (PS3.8 9.3.8).
    """

    def __init__(
        self,
        message: str,
        *,
        reason: AbortReason = AbortReason.INVALID_PDU_PARAMETER_VALUE,
        source: AbortSource = AbortSource.SERVICE_PROVIDER,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.source = source


class AssociationRejected(DicomWireError):
    """An A-ASSOCIATE-RQ that is well formed but must be answered with A-ASSOCIATE-RJ."""

    def __init__(
        self,
        message: str,
        *,
        result: RejectResult = RejectResult.PERMANENT,
        source: RejectSource = RejectSource.SERVICE_USER,
        reason: int = RejectReason.NO_REASON,
    ) -> None:
        super().__init__(message)
        self.result = result
        self.source = source
        self.reason = reason


class EncodeError(DicomWireError, ValueError):
    """A value we were asked to encode does not fit its field (e.g. a 16-bit item length)."""
