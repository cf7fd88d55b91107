"""Synthetic DICOM data for tests and benchmarks: CT studies made with pydicom, nothing downloaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

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
