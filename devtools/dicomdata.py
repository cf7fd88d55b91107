"""Synthetic DICOM data for tests and benchmarks: CT studies made with pydicom, nothing downloaded."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.uid import (
    UID,
    CTImageStorage,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    UltrasoundImageStorage,
    generate_uid,
)

IMPLEMENTATION_UID = "1.2.826.0.1.3680043.10.1447.1"


def make_ct_study(
    folder: Path,
    *,
    slices: int = 4,
    size: int = 64,
    patient_id: str = "PAT001",
    patient_name: str = "TEST^PATIENT",
    study_uid: str | None = None,
    accession: str = "ACC001",
    seed: int = 1,
) -> list[Path]:
    """Write ``slices`` CT images of ``size`` x ``size`` 16-bit pixels; returns the file paths."""
    folder.mkdir(parents=True, exist_ok=True)
    study = {"PatientID": patient_id, "PatientName": patient_name, "PatientBirthDate": "19700101",
             "PatientSex": "O", "StudyInstanceUID": study_uid or generate_uid(), "SeriesInstanceUID": generate_uid(),
             "FrameOfReferenceUID": generate_uid(), "StudyID": "1", "AccessionNumber": accession,
             "StudyDate": "20260101", "StudyTime": "120000", "StudyDescription": "SYNTHETIC CT", "Modality": "CT",
             "SeriesNumber": 1}
    rng = np.random.default_rng(seed)
    paths = []
    for n in range(slices):
        path = folder / f"ct{n:04d}.dcm"
        _ct_slice(path, study, n, size, rng).save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _ct_slice(path: Path, study: dict[str, object], n: int, size: int, rng: np.random.Generator) -> FileDataset:
    """Slice ``n`` of a study: the study's attributes, its own position and random 12-bit pixels."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = IMPLEMENTATION_UID
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\x00" * 128)
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    for keyword, value in study.items():
        setattr(ds, keyword, value)
    ds.InstanceNumber = n + 1
    ds.ImagePositionPatient = [0, 0, n]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [0.5, 0.5]
    ds.SliceThickness = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = size
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.PixelData = rng.integers(0, 4096, (size, size), dtype=np.uint16).tobytes()
    return ds


# ---- headers for de-identification tests: identifying values everywhere a real header has them ----

def encode_data_set(ds: Dataset, transfer_syntax: str) -> bytes:
    """``ds`` encoded as a DIMSE data set (no preamble, no file meta) in ``transfer_syntax``."""
    syntax = UID(transfer_syntax)
    fp = DicomBytesIO()
    fp.is_little_endian = syntax != ExplicitVRBigEndian
    fp.is_implicit_VR = syntax == ImplicitVRLittleEndian
    write_dataset(fp, ds)
    data: bytes = fp.getvalue()
    return data


def decode_data_set(data: bytes, transfer_syntax: str) -> Dataset:
    syntax = UID(transfer_syntax)
    return read_dataset(BytesIO(data), is_implicit_VR=syntax == ImplicitVRLittleEndian,
                        is_little_endian=syntax != ExplicitVRBigEndian)


def identified_header(kind: str = "CT", *, patient_id: str = "PAT-4711", patient_name: str = "DOE^JANE^Q",
                      study_uid: str = "1.2.826.0.1.3680043.10.1447.77.1", series: int = 1, instance: int = 1,
                      pixels: bool = True) -> Dataset:
    """A CT, US or SC instance as a PACS sends it, with identifying values at the top level, in nested
    sequences and in a private block; ``pixels`` adds 16x16 of Pixel Data after the header."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.InstanceCreationDate, ds.InstanceCreationTime = "20260114", "101500"
    ds.InstanceCreatorUID = "1.2.826.0.1.3680043.10.1447.77.9"
    ds.SOPClassUID = {"CT": CTImageStorage, "US": UltrasoundImageStorage, "SC": SecondaryCaptureImageStorage}[kind]
    ds.SOPInstanceUID = f"{study_uid}.{series}.{instance}"
    ds.StudyDate, ds.SeriesDate, ds.AcquisitionDate, ds.ContentDate = "20260114", "20260114", "20260114", "20260114"
    ds.AcquisitionDateTime = "20260114101502.250000"
    ds.StudyTime, ds.SeriesTime, ds.ContentTime = "101500", "101501", "101502"
    ds.AccessionNumber = "ACC-99812"
    ds.Modality = "OT" if kind == "SC" else kind
    ds.Manufacturer = "ACME MEDICAL"
    ds.InstitutionName = "SAINT ELSEWHERE HOSPITAL"
    ds.InstitutionAddress = "1 HOSPITAL ROAD, SPRINGFIELD"
    ds.ReferringPhysicianName = "WELBY^MARCUS"
    ds.StationName = "CT7-SPRINGFIELD"
    ds.StudyDescription = "CT CHEST WITH CONTRAST DOE"
    ds.SeriesDescription = "AXIAL 1MM"
    ds.InstitutionalDepartmentName = "RADIOLOGY WEST WING"
    ds.PerformingPhysicianName = "HOUSE^GREGORY"
    ds.OperatorsName = ["RATCHED^MILDRED", "KILDARE^JAMES"]
    ds.ManufacturerModelName = "SCANMASTER 3000"
    ds.ReferencedStudySequence = [_reference("1.2.840.10008.3.1.2.3.1", f"{study_uid}.900")]
    ds.ReferencedPatientSequence = [_reference("1.2.840.10008.3.1.2.1.1", "1.2.826.0.1.3680043.10.1447.77.901")]
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.IssuerOfPatientID = "SPRINGFIELD GENERAL"
    ds.PatientBirthDate = "19610704"
    ds.PatientSex = "F"
    ds.OtherPatientIDsSequence = [Dataset()]
    ds.OtherPatientIDsSequence[0].PatientID = "SSN-078-05-1120"
    ds.OtherPatientIDsSequence[0].TypeOfPatientID = "TEXT"
    ds.PatientAge = "064Y"
    ds.PatientWeight = 71.5
    ds.PatientAddress = "742 EVERGREEN TERRACE"
    ds.PatientComments = "ALLERGIC TO IODINE, CALL DAUGHTER ANNA DOE"
    ds.DeviceSerialNumber = "SN-884422"
    ds.SoftwareVersions = "VB42"
    ds.ProtocolName = "CHEST ROUTINE"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = f"{study_uid}.{series}"
    ds.StudyID = "S-1234"
    ds.SeriesNumber, ds.InstanceNumber = series, instance
    ds.FrameOfReferenceUID = f"{study_uid}.{series}.0"
    ds.RequestAttributesSequence = [Dataset()]
    request = ds.RequestAttributesSequence[0]
    request.RequestedProcedureID = "RP-5521"
    request.ScheduledProcedureStepID = "SPS-5521"
    request.RequestedProcedureDescription = "CT CHEST FOR JANE DOE"
    ds.SourceImageSequence = [_reference(CTImageStorage, f"{study_uid}.{series}.999")]
    ds.SourceImageSequence[0].ReferencedFrameNumber = 1
    ds.add_new(0x00090010, "LO", "ACME PRIVATE 1")
    ds.add_new(0x00091001, "LO", "DOE^JANE")
    ds.add_new(0x00091002, "DS", "2.5")
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = 16
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if kind == "CT":
        ds.BurnedInAnnotation = "NO"
    if pixels:
        ds.PixelData = bytes(range(256)) * 2
    return ds


def _reference(sop_class: str, sop_instance: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_instance
    return item
