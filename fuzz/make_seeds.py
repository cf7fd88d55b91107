"""Seed inputs for fuzz/dataset_fuzz.py: real identifiers and instance heads in every syntax.

    python fuzz/make_seeds.py CORPUS_DIR
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from pydicom import examples
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset


def encode(ds: Dataset, implicit: bool, little: bool = True) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = little, implicit
    write_dataset(fp, ds)
    return fp.getvalue()


def identifiers() -> list[Dataset]:
    query = Dataset()
    query.SpecificCharacterSet = "ISO_IR 100"
    query.QueryRetrieveLevel = "STUDY"
    query.ReferencedStudySequence = [Dataset()]
    query.ReferencedStudySequence[0].ReferencedSOPInstanceUID = "1.2.3"
    query.PatientID = "PAT-REF-1"
    query.IssuerOfPatientID = "HOSP"
    query.StudyInstanceUID = "1.2.3\\1.2.4"
    query.SeriesInstanceUID = ""
    head = examples.ct.copy()
    del head.file_meta
    return [query, head]


def main() -> None:
    corpus = Path(sys.argv[1])
    corpus.mkdir(parents=True, exist_ok=True)
    for ds in identifiers():
        for selector, implicit, little in ((0, True, True), (1, False, True), (2, False, True), (3, False, False)):
            data = encode(ds, implicit, little)[:4096]
            for flags in (0x00, 0x20, 0x10 if selector == 2 else 0x00):
                seed = bytes([selector | flags]) + b"\x10\x00" + data
                (corpus / hashlib.sha1(seed).hexdigest()).write_bytes(seed)


if __name__ == "__main__":
    main()
