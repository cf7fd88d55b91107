"""What Orthanc (DCMTK underneath) matches for a key, against what server_agent.keys says it pins.

Each case is a request the agent must not decide as pinned to one patient when Orthanc answers with
another's data (issue 13, one canonical reading). The identifiers are written by pydicom and sent by
pynetdicom, as a workstation would.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import dcmwrite, write_dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom.events import Event
from pynetdicom.sop_class import SecondaryCaptureImageStorage
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FIND
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet as GET

from devtools.peers import Orthanc
from dicomwire.dataset import IMPLICIT_VR_LE, MalformedDataSet
from server_agent.keys import Patient, identifier_keys, retrieve_keys

pytestmark = pytest.mark.e2e


def instance(patient_id: str) -> bytes:
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    ds.PatientID, ds.PatientName = patient_id, "KEYS^TEST"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = generate_uid(), generate_uid(), "OT"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    fp = DicomBytesIO()
    dcmwrite(fp, ds, enforce_file_format=True)
    return fp.getvalue()


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Orthanc, dict[str, str]]]:
    server = Orthanc(tmp_path_factory.mktemp("orthanc-keys")).start()
    studies = {}
    for patient in ("KEY-1", "KEY-2", " KEY-3", "KEY-3"):
        stored = server.rest("/instances", instance(patient))
        assert isinstance(stored, dict)
        study = server.rest(f"/studies/{stored['ParentStudy']}")
        assert isinstance(study, dict)
        studies[patient] = study["MainDicomTags"]["StudyInstanceUID"]
    yield server, studies
    server.stop()


def identifier(**keys: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    for name, value in keys.items():
        setattr(ds, name, value)
    if "StudyInstanceUID" not in keys:
        ds.StudyInstanceUID = ""
    return ds


def encoded(ds: Dataset) -> bytes:
    fp = DicomBytesIO()
    fp.is_implicit_VR, fp.is_little_endian = True, True
    write_dataset(fp, ds)
    return fp.getvalue()


def find(server: Orthanc, query: Dataset) -> list[str]:
    ae = AE(ae_title="KEYS")
    ae.add_requested_context(FIND, ImplicitVRLittleEndian)
    association = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.aet)
    assert association.is_established
    found = [match.PatientID for status, match in association.send_c_find(query, FIND)
             if status and status.Status in (0xFF00, 0xFF01) and match is not None]
    association.release()
    return sorted(found)


def test_a_leading_space_names_another_patient_in_orthanc(pacs: tuple[Orthanc, dict[str, str]]) -> None:
    server, _ = pacs
    assert find(server, identifier(PatientID=" KEY-3")) == [" KEY-3"]
    assert find(server, identifier(PatientID="KEY-3")) == ["KEY-3"]
    with pytest.raises(MalformedDataSet, match="starts with a space"):  # was read as KEY-3, pinned
        identifier_keys(encoded(identifier(PatientID=" KEY-3")), IMPLICIT_VR_LE)


def test_a_backslash_is_a_list_to_orthanc(pacs: tuple[Orthanc, dict[str, str]]) -> None:
    server, _ = pacs
    assert find(server, identifier(PatientID="KEY-1\\KEY-2")) == ["KEY-1", "KEY-2"]
    with pytest.raises(MalformedDataSet, match="more than one value"):
        identifier_keys(encoded(identifier(PatientID="KEY-1\\KEY-2")), IMPLICIT_VR_LE)


def test_a_study_level_retrieval_is_not_pinned_by_its_patient_id(pacs: tuple[Orthanc, dict[str, str]]) -> None:
    server, studies = pacs
    received: list[str] = []

    def stored(event: Event) -> int:
        received.append(event.dataset.PatientID)
        return 0x0000

    ae = AE(ae_title="KEYS")
    ae.add_requested_context(GET, ImplicitVRLittleEndian)
    ae.add_requested_context(SecondaryCaptureImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    association = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.aet,
                               ext_neg=[build_role(SecondaryCaptureImageStorage, scp_role=True)],
                               evt_handlers=[(evt.EVT_C_STORE, stored)])
    request = identifier(PatientID="KEY-1", StudyInstanceUID=studies["KEY-2"])
    statuses = [status.Status for status, _ in association.send_c_get(request, GET) if status]
    association.release()
    assert statuses[-1] == 0x0000 and received == ["KEY-2"]  # Orthanc retrieves by the Study Instance UID
    assert retrieve_keys(encoded(request), IMPLICIT_VR_LE).pinned_patient is None
    assert identifier_keys(encoded(request), IMPLICIT_VR_LE).pinned_patient == Patient(id="KEY-1", issuer=None)
    patient_level = identifier(QueryRetrieveLevel="PATIENT", PatientID="KEY-1")
    assert retrieve_keys(encoded(patient_level), IMPLICIT_VR_LE).pinned_patient == Patient(id="KEY-1", issuer=None)
