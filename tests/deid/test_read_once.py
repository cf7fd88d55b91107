"""A C-STORE header read once (:func:`deid.read_header`) gives what reading it for each step gave:
the same pixel verdict, the same pseudonyms asked for, the same de-identified bytes (the research view
reads an instance's head once instead of four times, issue 16's benchmark)."""

from __future__ import annotations

import pytest

from deid import (
    PixelPolicy,
    deidentify_header,
    deidentify_read,
    header_end,
    needs,
    needs_of,
    pixel_identity_risk,
    pixel_risk_of,
    read_header,
)
from devtools.dicomdata import encode_data_set, identified_header
from tests.deid.support import SYNTAXES, answer
from tests.deid.test_deidentify import BASIC, RESEARCH


@pytest.mark.parametrize("ts", SYNTAXES)
@pytest.mark.parametrize("kind", ["CT", "US"])
def test_a_header_read_once_is_what_each_step_read_for_itself(ts: str, kind: str) -> None:
    ds = identified_header(kind)
    ds.add_new(0x7FE10010, "LO", "ACME CINE")  # after the pixels: no part of the header
    ds.add_new(0x7FE11001, "LO", "DOE^JANE")
    data = encode_data_set(ds, ts)
    end = header_end(data, ts, complete=True)
    assert end is not None
    for head, complete in ((data, True), (data[: end + 20], False)):  # whole, and a head into the pixels
        header = read_header(head, ts, complete=complete)
        assert header is not None and header.end == end and header.data == data[:end]
        for policy in (PixelPolicy(), PixelPolicy(allow=True)):
            assert pixel_risk_of(header.read, policy) == pixel_identity_risk(data[:end], ts, policy)
        for profile in (BASIC, RESEARCH):
            wanted = needs_of(header, profile)
            assert wanted == needs(data[:end], ts, profile)
            pseudonyms = answer(wanted)
            once = deidentify_read(header, profile, pseudonyms)
            assert once == deidentify_header(data[:end], ts, profile, pseudonyms)
            assert b"ACME CINE" not in once.data and b"DOE" not in once.data


def test_a_head_short_of_the_pixels_is_no_header_yet() -> None:
    data = encode_data_set(identified_header(), SYNTAXES[1])
    end = header_end(data, SYNTAXES[1], complete=True)
    assert end is not None
    assert read_header(data[: end - 3], SYNTAXES[1]) is None
