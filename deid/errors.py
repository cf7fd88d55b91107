"""Typed errors of de-identification, each with its DIMSE consequence (PS3.4 B.2.3, C.4.x; PS3.7 C).

A data set we cannot de-identify is never passed on: the C-FIND match is dropped, the C-STORE
sub-operation is answered with ``status`` and not forwarded. A malformed data set raises
:class:`dicomwire.dataset.MalformedDataSet` (status 0xC000), the strict reader's own error.
"""

from __future__ import annotations

STATUS_UNABLE_TO_PROCESS = 0xC000  # C-STORE "Cannot understand", C-FIND/C-GET/C-MOVE "Unable to process"
STATUS_NOT_AUTHORIZED = 0x0124  # PS3.7 C.5.x "Refused: Not Authorized"


class DeidError(ValueError):
    """Base class: ``status`` is the DIMSE status the refusal carries."""

    status = STATUS_UNABLE_TO_PROCESS


class MissingPseudonym(DeidError):
    """A value needs a pseudonym the caller did not supply (see :func:`deid.needs`): fail closed."""


class NotDeidentifiable(DeidError):
    """The data set cannot be de-identified as given: a deflated head (its pixel data cannot be
    streamed unchanged), pixel data inside what should be the header, a value that no longer fits."""


class PixelIdentityRisk(DeidError):
    """The pixels may show who the patient is (PS3.15 E.1.1 note, E.3.1; PS3.3 C.7.6.1.1.3 Burned In
    Annotation, C.7.6.1.1.4 Recognizable Visual Features) and the project does not allow such instances."""

    status = STATUS_NOT_AUTHORIZED

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
