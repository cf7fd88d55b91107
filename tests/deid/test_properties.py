"""Properties over generated headers: no generated identity survives; hostile bytes raise typed errors only."""

from __future__ import annotations

import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deid import DeidError, Option, PixelPolicy, Profile, deidentify_header, header_end, needs, pixel_identity_risk
from devtools.dicomdata import encode_data_set, identified_header
from dicomwire.dataset import MalformedDataSet

from .support import SYNTAXES, answer, deidentify

# Every option but Retain Institution Identity (it keeps the institution, which the test generates).
PROFILES = [Profile(), Profile(options=frozenset(Option) - {Option.RETAIN_INSTITUTION_IDENTITY},
                               vocabulary=frozenset({"CT", "CHEST"}))]
token = st.text(string.ascii_uppercase, min_size=6, max_size=10).map(lambda s: "Q" + s)  # Q...: never a real word
date = st.dates().filter(lambda d: d.year >= 1900).map(lambda d: d.strftime("%Y%m%d"))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(family=token, given_name=token, patient_id=token, institution=token, operator=token, birth=date, study=date,
       uid_tail=st.integers(1, 10**12), ts=st.sampled_from(SYNTAXES), profile=st.sampled_from(PROFILES))
def test_generated_identities_never_survive(family: str, given_name: str, patient_id: str, institution: str,
                                            operator: str, birth: str, study: str, uid_tail: int, ts: str,
                                            profile: Profile) -> None:
    study_uid = f"1.2.826.0.1.3680043.10.1447.{uid_tail}"
    ds = identified_header(patient_id=patient_id, patient_name=f"{family}^{given_name}", study_uid=study_uid)
    ds.PatientBirthDate, ds.StudyDate, ds.ContentDate = birth, study, study
    ds.InstitutionName, ds.OperatorsName = institution, f"{operator}^X"
    ds.StudyDescription = f"CT CHEST {family}"
    _, new_bytes, new = deidentify(ds, ts, profile)
    for value in (family, given_name, patient_id, institution, operator, study_uid, birth, study):
        assert value.encode() not in new_bytes, value
    assert new.PatientIdentityRemoved == "YES"


def _mutations(data: bytes) -> st.SearchStrategy[bytes]:
    def mutate(edits: list[tuple[int, int, int]]) -> bytes:
        out = bytearray(data)
        for kind, where, value in edits:
            where %= max(len(out), 1)
            if kind == 0:
                out[where] = value
            elif kind == 1:
                out.insert(where, value)
            elif out:
                del out[where]
        return bytes(out)
    edit = st.tuples(st.integers(0, 2), st.integers(0, 10**6), st.integers(0, 255))
    return st.lists(edit, min_size=1, max_size=6).map(mutate)


HEAD = {ts: encode_data_set(identified_header(pixels=False), ts) for ts in SYNTAXES}


@pytest.mark.parametrize("ts", SYNTAXES)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_headers_raise_typed_errors_only(ts: str, data: st.DataObject) -> None:
    mutated = data.draw(_mutations(HEAD[ts]))
    profile = data.draw(st.sampled_from(PROFILES))
    try:
        header_end(mutated, ts)
        pixel_identity_risk(mutated, ts, PixelPolicy())
        wanted = needs(mutated, ts, profile)
        out = deidentify_header(mutated, ts, profile, answer(wanted))
    except (MalformedDataSet, DeidError):
        return
    assert b"PAT-4711" not in out.data
