"""Whether an instance's pixels may show who the patient is (PS3.15 E.1.1 note 1, E.3.1; PS3.3 C.7.6.1).

Header de-identification leaves pixels unchanged, so an instance whose pixels may carry burned-in
text (names, IDs, dates on ultrasound screens, scanned forms, screenshots) or a recognisable face is
refused unless the project allows such instances. Burned In Annotation (0028,0301) and Recognizable
Visual Features (0028,0302) are Enumerated Values YES or NO (PS3.3 C.7.6.1.1.3, C.7.6.1.1.4): either
present with a value that is not exactly ``NO`` (``YES``, ``YES\\NO``, ``Y``, ``UNKNOWN``) is refused;
when (0028,0301) is absent or empty, the SOP classes and modalities known to carry burned-in text are
refused as well.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom import uid as uids

from dicomwire.dataset import DataSet, read_data_set

from .errors import PixelIdentityRisk

BURNED_IN_ANNOTATION = 0x00280301
RECOGNIZABLE_VISUAL_FEATURES = 0x00280302
MODALITY = 0x00080060
SOP_CLASS_UID = 0x00080016

# SOP classes whose pixels are screens, photographs, documents or captures: burned-in text is usual.
RISKY_SOP_CLASSES = frozenset(getattr(uids, name) for name in (
    "SecondaryCaptureImageStorage", "MultiFrameSingleBitSecondaryCaptureImageStorage",
    "MultiFrameGrayscaleByteSecondaryCaptureImageStorage", "MultiFrameGrayscaleWordSecondaryCaptureImageStorage",
    "MultiFrameTrueColorSecondaryCaptureImageStorage", "UltrasoundImageStorage", "UltrasoundMultiFrameImageStorage",
    "EnhancedUSVolumeStorage", "EncapsulatedPDFStorage", "EncapsulatedCDAStorage", "VLPhotographicImageStorage",
    "VideoPhotographicImageStorage", "VLEndoscopicImageStorage", "VideoEndoscopicImageStorage",
    "VLMicroscopicImageStorage", "VideoMicroscopicImageStorage", "VLSlideCoordinatesMicroscopicImageStorage",
    "VLWholeSlideMicroscopyImageStorage", "DermoscopicPhotographyImageStorage",
    "OphthalmicPhotography8BitImageStorage", "OphthalmicPhotography16BitImageStorage"))
# PS3.3 C.7.3.1.1.1 modalities of the same kinds: ultrasound, documents, photographs, endoscopy,
# microscopy (slide labels), ophthalmic photography, "other" (screenshots and the like).
RISKY_MODALITIES = frozenset({"US", "IVUS", "DOC", "XC", "ES", "GM", "SM", "OP", "OT"})


@dataclass(frozen=True, slots=True, kw_only=True)
class PixelPolicy:
    """A project's rule: ``allow`` accepts every instance (its data are checked otherwise)."""

    allow: bool = False
    sop_classes: frozenset[str] = RISKY_SOP_CLASSES
    modalities: frozenset[str] = RISKY_MODALITIES


def pixel_identity_risk(header: bytes, transfer_syntax: str | None, policy: PixelPolicy) -> str | None:
    """Why this instance's pixels may identify the patient, or None; ``header`` may be a head (its
    first bytes), as long as it reaches past (0028,0302)."""
    if policy.allow:
        return None
    return pixel_risk_of(read_data_set(header, transfer_syntax, complete=False), policy)


def pixel_risk_of(read: DataSet, policy: PixelPolicy) -> str | None:
    """:func:`pixel_identity_risk` of a header (or head) already read."""
    if policy.allow:
        return None

    def text(tag: int) -> str:
        element = read.get(tag)
        return read.value(element).strip(b" \x00").decode("latin-1").upper() if element else ""

    burned = text(BURNED_IN_ANNOTATION)
    if burned and burned != "NO":
        return "Burned In Annotation (0028,0301) is not NO"  # its value is the PACS's: not echoed
    features = text(RECOGNIZABLE_VISUAL_FEATURES)
    if features and features != "NO":
        return "Recognizable Visual Features (0028,0302) is not NO"
    if burned == "NO":
        return None
    if read.known_below <= RECOGNIZABLE_VISUAL_FEATURES:
        return "the head ends before Burned In Annotation (0028,0301) could be read"
    said = "absent"
    sop_class = text(SOP_CLASS_UID)
    if sop_class in policy.sop_classes:
        name = uids.UID(sop_class).name
        return f"Burned In Annotation is {said} for {name}"
    modality = text(MODALITY)
    if modality in policy.modalities:
        return f"Burned In Annotation is {said} for modality {modality[:16]}"
    return None


def check_pixels(header: bytes, transfer_syntax: str | None, policy: PixelPolicy) -> None:
    """:func:`pixel_identity_risk` as a refusal: raises :class:`PixelIdentityRisk` with the reason."""
    reason = pixel_identity_risk(header, transfer_syntax, policy)
    if reason is not None:
        raise PixelIdentityRisk(reason)
