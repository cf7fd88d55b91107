"""What de-identification does with a public attribute deid/table.py does not list (PS3.15 E.1.1).

The generated table is Table E.1-1 as a maintained package ships it, and that copy misses rows (an
attacker review found identity in (0008,1167), (0040,A160), (0040,0400), (0054,0400), (0008,1190)...,
all kept). PS3.15 E.1.1 asks a de-identifier to treat "all other attributes" that may carry identity,
and its Clean options say how free text is made safe. So here nothing is kept because no row names it:

* an attribute is judged by its PS3.6 VR (pydicom's dictionary of the same edition), never by the VR
  the stream writes (:mod:`deid.profile` removes an element whose explicit VR the dictionary does not
  allow), with the action of :data:`BY_VR`: structured values (codes, numbers, tag pointers, arrays
  of numbers, sequences, whose items are judged the same way) are kept; UIDs are replaced; names get
  a dummy; dates are shifted or get a dummy; free text is cleaned (Clean Descriptors) or removed;
  URLs, AE titles and opaque bytes are removed;
* :data:`KEEP` lists the few text, UID and byte attributes kept as they are, each reviewed here with
  the PS3.3 module that defines it and why it names no person: coded entries, equipment and software,
  acquisition technique, display transforms, MIME types, private creator names, and definition UIDs
  (a SOP class, a transfer syntax, a coding scheme: the standard's or a vendor's, never an instance's).

Source: PS3.3 and PS3.6 2026c as pydicom 3.0's dictionary carries them, reviewed by hand for issue 16
(the review that found the leaks). tests/deid/test_supplement.py checks the rows against the
dictionary (a row's VR is what it says; no row shadows Table E.1-1) and that every VR has an action.

Actions are Table E.1-1's codes: ``K`` keep, ``X`` remove, ``D`` dummy, ``U`` new UID, and ``C``:
for a date or time, shifted with Retain Longitudinal Modified Dates, else a dummy (E.3.6); for text,
cleaned with Clean Descriptors, else removed (E.3.5). A clinician's copy never comes here: only the
research view de-identifies.
"""

from __future__ import annotations

# PS3.6 VR (as pydicom writes multi-VR entries) -> the action for an attribute of that VR that neither
# Table E.1-1 nor KEEP names. A VR not here is removed.
BY_VR: dict[str, str] = {
    "CS": "K",  # a code string: 16 characters of A-Z 0-9 space _, defined terms (PS3.5 6.2)
    "AT": "K", "DS": "K", "IS": "K", "FD": "K", "FL": "K", "SL": "K", "SS": "K", "SV": "K", "UL": "K",
    "US": "K", "UV": "K", "US or SS": "K",  # numbers: geometry, counts, acquisition parameters
    "OD": "K", "OF": "K", "OL": "K", "OV": "K", "OW": "K", "OB or OW": "K", "US or OW": "K",
    "US or SS or OW": "K",  # arrays of numbers: LUTs, palettes, coordinates, waveform samples
    "SQ": "K",  # its items are de-identified element by element, by these same rules
    "UI": "U",  # an instance's UID or a reference to one: the project's pseudonym (definition UIDs: KEEP)
    "PN": "D",  # a person: a dummy name (E.1.1 "D")
    "DA": "C", "DT": "C", "TM": "C",  # when: shifted by the patient's offset, else a dummy
    "LO": "C", "SH": "C", "ST": "C", "LT": "C", "UT": "C", "UC": "C",  # free text: cleaned, else removed
    "AS": "X",  # an age (Table E.1-1 names Patient's Age; Retain Patient Characteristics keeps it)
    "AE": "X",  # an application entity title: a station, a department
    "UR": "X",  # a URL: a WADO address carries the real UIDs, a host names the site
    "OB": "X",  # opaque bytes: signatures, encrypted attributes, documents, bitmaps
    "UN": "X",
}

# Unlisted attributes kept as they are: tag -> (keyword, PS3.3 module or section, why).
KEEP: dict[int, tuple[str, str, str]] = {
    # Coded entries (PS3.3 8.8 Code Sequence Macro, C.12.1 Coding Scheme Identification Sequence): a
    # vocabulary's codes and names, shared by every instance; Table E.1-1 cleans content items, not codes.
    0x00080100: ("CodeValue", "8.8", "a code of a coding scheme"),
    0x00080101: ("ExtendedCodeValue", "8.8", "a code of a coding scheme"),
    0x00080102: ("CodingSchemeDesignator", "8.8", "names a coding scheme"),
    0x00080103: ("CodingSchemeVersion", "8.8", "a coding scheme's version"),
    0x00080104: ("CodeMeaning", "8.8", "the scheme's text for a code"),
    0x00080108: ("ExtendedCodeMeaning", "8.8", "the scheme's text for a code"),
    0x00080112: ("CodingSchemeRegistry", "C.12.1 coding schemes", "a registry of coding schemes"),
    0x00080114: ("CodingSchemeExternalID", "C.12.1 coding schemes", "a coding scheme's identifier"),
    0x00080115: ("CodingSchemeName", "C.12.1 coding schemes", "a coding scheme's name"),
    0x00080116: ("CodingSchemeResponsibleOrganization", "C.12.1 coding schemes", "who maintains a coding scheme"),
    0x00080119: ("LongCodeValue", "8.8", "a code of a coding scheme"),
    0x00080120: ("URNCodeValue", "8.8", "a code of a coding scheme, as a URN"),
    0x0008010E: ("CodingSchemeURL", "C.12.1 coding schemes", "where a coding scheme is published"),
    0x00080122: ("MappingResourceName", "8.8", "a mapping resource's name"),
    # Equipment and software (C.7.5.1 General Equipment, C.8.6.1 SC Equipment, coil and detector macros):
    # the product, not the site or the device's identity (Retain Device Identity governs those).
    0x00080070: ("Manufacturer", "C.7.5.1", "the vendor"),
    0x00081090: ("ManufacturerModelName", "C.7.5.1", "the product"),
    0x00181020: ("SoftwareVersions", "C.7.5.1", "the product's software"),
    0x00181016: ("SecondaryCaptureDeviceManufacturer", "C.8.6.1", "the vendor"),
    0x00181018: ("SecondaryCaptureDeviceManufacturerModelName", "C.8.6.1", "the product"),
    0x00181019: ("SecondaryCaptureDeviceSoftwareVersions", "C.8.6.1", "the product's software"),
    0x0018702A: ("DetectorManufacturerName", "X-Ray Detector", "the vendor"),
    0x0018702B: ("DetectorManufacturerModelName", "X-Ray Detector", "the product"),
    0x00189041: ("ReceiveCoilManufacturerName", "MR Receive Coil", "the vendor"),
    0x00189050: ("TransmitCoilManufacturerName", "MR Transmit Coil", "the vendor"),
    # Acquisition technique (C.8.2.1 CT Image, C.8.3.1 MR Image, C.7.6.4 Contrast/Bolus, the MR, NM
    # and PET modules): what the scanner did, named by its vendor.
    0x00180024: ("SequenceName", "C.8.3.1", "the scanner's name of its pulse sequence"),
    0x00189005: ("PulseSequenceName", "MR Pulse Sequence", "the scanner's name of its pulse sequence"),
    0x00180085: ("ImagedNucleus", "C.8.3.1", "a nucleus: 1H, 31P"),
    0x00181210: ("ConvolutionKernel", "C.8.2.1", "a reconstruction kernel's name"),
    0x00181160: ("FilterType", "C.8.2.1", "an X-ray filter's type"),
    0x00181250: ("ReceiveCoilName", "C.8.3.1", "a coil's product name"),
    0x00181251: ("TransmitCoilName", "C.8.3.1", "a coil's product name"),
    0x00189046: ("MultiCoilConfiguration", "MR Receive Coil", "a coil configuration's name"),
    0x00189047: ("MultiCoilElementName", "MR Receive Coil", "a coil element's name"),
    0x00189320: ("ImageFilter", "C.8.2.1", "a reconstruction filter's name"),
    0x00180031: ("Radiopharmaceutical", "NM Isotope", "the agent given, as the vendor names it"),
    0x00181040: ("ContrastBolusRoute", "C.7.6.4", "a route of administration"),
    0x00181070: ("RadiopharmaceuticalRoute", "NM Isotope", "a route of administration"),
    0x00181061: ("TriggerSourceOrType", "Cardiac Synchronization", "a cardiac trigger's kind"),
    0x00181064: ("CardiacFramingType", "Cardiac Synchronization", "a cardiac framing method"),
    0x00181022: ("VideoImageFormatAcquired", "C.8.6.1", "a video format"),
    0x00181023: ("DigitalImageFormatAcquired", "C.8.6.1", "a digital format"),
    0x00540018: ("EnergyWindowName", "NM Isotope", "an energy window's name"),
    0x00541101: ("AttenuationCorrectionMethod", "PET Series", "a correction method"),
    0x00541103: ("ReconstructionMethod", "PET Series", "a reconstruction method"),
    0x00541104: ("DetectorLinesOfResponseUsed", "PET Series", "a detector setting"),
    0x00541105: ("ScatterCorrectionMethod", "PET Series", "a correction method"),
    # Display transforms (C.11.1 Modality LUT, C.11.2 VOI LUT and their macros): named by the device,
    # needed to show the pixels as acquired.
    0x00281054: ("RescaleType", "C.11.1", "the unit of rescaled values"),
    0x00281055: ("WindowCenterWidthExplanation", "C.11.2", "a window preset's name"),
    0x00283003: ("LUTExplanation", "C.11.1", "a LUT's name"),
    0x00283004: ("ModalityLUTType", "C.11.1", "the unit of a modality LUT"),
    0x00409210: ("LUTLabel", "Pixel Value Transformation", "a LUT's label"),
    0x00280A04: ("PixelSpacingCalibrationDescription", "Pixel Spacing Calibration", "how spacing was calibrated"),
    0x00282000: ("ICCProfile", "ICC Profile", "a colour profile: the pixels' colours need it"),
    # Encapsulated documents (C.24.2): what kind of file follows.
    0x00420012: ("MIMETypeOfEncapsulatedDocument", "C.24.2", "a MIME type"),
    0x00420014: ("ListOfMIMETypes", "C.24.2", "MIME types"),
    # Private creators named by public attributes (C.7.6.17 Multi-frame Dimension, C.12.1 SOP Common):
    # a vendor's block name (PS3.5 7.8.1), which Retain Safe Private needs to read its list.
    0x00080302: ("PrivateCreatorReference", "C.12.1 private elements", "a private block's creator"),
    0x00209213: ("DimensionIndexPrivateCreator", "C.7.6.17", "a private block's creator"),
    0x00209238: ("FunctionalGroupPrivateCreator", "C.7.6.17", "a private block's creator"),
    0x00209421: ("DimensionDescriptionLabel", "C.7.6.17", "a dimension's name, as the device writes it"),
    # Algorithms (the Algorithm Identification Macro, Segment Description): software names.
    0x00620009: ("SegmentAlgorithmName", "Segment Description", "a segmentation program's name"),
    0x00660031: ("AlgorithmVersion", "Algorithm Identification", "a program's version"),
    0x00660036: ("AlgorithmName", "Algorithm Identification", "a program's name"),
    # Definition UIDs (PS3.5 9, PS3.6 A): a SOP class, a transfer syntax, a coding scheme, a context
    # group or mapping resource. They say what kind of object, encoding or vocabulary, the standard's or
    # a vendor's, never which instance: the researcher's software needs them as they are.
    0x00080016: ("SOPClassUID", "C.12.1", "a SOP class"),
    0x0008001A: ("RelatedGeneralSOPClassUID", "C.12.1", "a SOP class"),
    0x0008001B: ("OriginalSpecializedSOPClassUID", "C.12.1", "a SOP class"),
    0x00080062: ("SOPClassesInStudy", "PS3.4 C.6.1.1.3 (a study-level key)", "SOP classes"),
    0x0008010C: ("CodingSchemeUID", "C.12.1 coding schemes", "a coding scheme"),
    0x00080117: ("ContextUID", "8.8", "a context group"),
    0x00080118: ("MappingResourceUID", "8.8", "a mapping resource"),
    0x0008040E: ("StoredInstanceTransferSyntaxUID", "PS3.6", "a transfer syntax"),
    0x00081150: ("ReferencedSOPClassUID", "SOP Instance Reference Macro", "a SOP class"),
    0x0008115A: ("SOPClassesSupported", "PS3.6", "SOP classes"),
    0x00083002: ("AvailableTransferSyntaxUID", "PS3.6", "a transfer syntax"),
    0x00041510: ("ReferencedSOPClassUIDInFile", "Basic Directory (PS3.3 F.3)", "a SOP class"),
    0x00041512: ("ReferencedTransferSyntaxUIDInFile", "Basic Directory (PS3.3 F.3)", "a transfer syntax"),
    0x0004151A: ("ReferencedRelatedGeneralSOPClassUIDInFile", "Basic Directory (PS3.3 F.3)", "SOP classes"),
    0x00340003: ("FlowTransferSyntaxUID", "PS3.6", "a transfer syntax"),
    0x04000010: ("MACCalculationTransferSyntaxUID", "Digital Signatures", "a transfer syntax"),
    0x04000510: ("EncryptedContentTransferSyntaxUID", "Encrypted Attributes", "a transfer syntax"),
    0x30100052: ("PertinentSOPClassesInStudy", "PS3.6", "SOP classes"),
    0x30100053: ("PertinentSOPClassesInSeries", "PS3.6", "SOP classes"),
}


def action(tag: int, vr: str) -> str:
    """The action for a public attribute Table E.1-1 does not list; ``vr`` is its PS3.6 VR."""
    kept = KEEP.get(tag)
    if kept is not None:
        return "K"
    return BY_VR.get(vr, "X")
