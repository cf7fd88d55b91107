"""Burned In Annotation and Recognizable Visual Features are YES or NO (PS3.3 C.7.6.1.1.3-4): anything but
exactly NO refuses the instance (the attacker review of issue 16, F6)."""

from __future__ import annotations

import pytest

from deid import PixelPolicy, pixel_identity_risk
from devtools.dicomdata import encode_data_set, identified_header

from .support import EXPLICIT


@pytest.mark.parametrize(("keyword", "said"), [("BurnedInAnnotation", "YES\\NO"), ("BurnedInAnnotation", "NO\\YES"),
                                               ("BurnedInAnnotation", "Y"), ("BurnedInAnnotation", "UNKNOWN"),
                                               ("RecognizableVisualFeatures", "YES\\NO"),
                                               ("RecognizableVisualFeatures", "MAYBE")])
def test_pixels_said_to_be_anything_but_no_are_refused(keyword: str, said: str) -> None:
    ds = identified_header(patient_id="PAT-4711")  # a CT: not a risky class or modality
    setattr(ds, keyword, said)
    reason = pixel_identity_risk(encode_data_set(ds, EXPLICIT), EXPLICIT, PixelPolicy())
    assert reason is not None and "is not NO" in reason and said not in reason


def test_a_ct_that_says_no_passes_and_an_empty_answer_is_an_absent_one() -> None:
    ds = identified_header(patient_id="PAT-4711")
    ds.RecognizableVisualFeatures = "NO"
    assert pixel_identity_risk(encode_data_set(ds, EXPLICIT), EXPLICIT, PixelPolicy()) is None
    ds.BurnedInAnnotation = ""
    assert pixel_identity_risk(encode_data_set(ds, EXPLICIT), EXPLICIT, PixelPolicy()) is None  # a CT
    us = identified_header("US", patient_id="PAT-4711")
    us.BurnedInAnnotation = ""
    reason = pixel_identity_risk(encode_data_set(us, EXPLICIT), EXPLICIT, PixelPolicy())
    assert reason is not None and "absent for Ultrasound Image Storage" in reason
