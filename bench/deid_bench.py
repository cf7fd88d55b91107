"""What de-identification costs per header (issue 16): ``python -m bench.deid_bench``.

Times, best of several rounds, on headers as they reach the server agent (Explicit VR LE, no pixel
data): the CT slices the site benchmark stores (devtools.dicomdata.make_ct_study), the identified CT
header of the deid tests (sequences, a private block), and pydicom's own CT example (a vendor header of
256 elements with private groups). Per header: ``header_end`` (where the pixel data starts),
``needs`` (what to ask the service), ``deidentify_header`` (the rewrite), and the service's answer
computed in process (``service``: the HMACs of what ``needs`` asked for, without HTTP).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from pydicom import dcmread, examples

from bench.dataset_bench import best_us
from deid import Option, Profile, deidentify_header, header_end, needs
from deid.pseudonyms import Needs, Pseudonyms
from devtools.dicomdata import encode_data_set, identified_header, make_ct_study
from pseudonymizer import derive

TS = "1.2.840.10008.1.2.1"
PROFILE = Profile(options=frozenset({Option.RETAIN_LONGITUDINAL_MODIFIED_DATES, Option.RETAIN_PATIENT_CHARACTERISTICS,
                                     Option.CLEAN_DESCRIPTORS}), vocabulary=frozenset({"CT", "CHEST", "SYNTHETIC"}))
KEY = b"\x07" * 32


def answer(data: bytes) -> Pseudonyms:
    return respond(needs(data, TS, PROFILE))


def respond(wanted: Needs) -> Pseudonyms:
    return Pseudonyms(patients={p: derive.patient(KEY, p, "SA") for p in wanted.patient_ids},
                      uids={u: derive.uid(KEY, u) for u in wanted.uids})


def headers() -> dict[str, bytes]:
    with tempfile.TemporaryDirectory() as folder:
        ct = dcmread(make_ct_study(Path(folder), slices=1, size=64)[0])
    vendor = dcmread(examples.get_path("ct"))
    found = {}
    for name, ds in (("site CT slice", ct), ("identified CT", identified_header()), ("pydicom CT example", vendor)):
        data = encode_data_set(ds, TS)
        end = header_end(data, TS, complete=True)
        assert end is not None
        found[name] = data[:end]
    return found


def main() -> None:
    print(f"{'header':22} {'bytes':>6} {'header_end':>11} {'needs':>8} {'service':>8} {'deidentify':>11}  (us)")
    for name, data in headers().items():
        pseudonyms, wanted = answer(data), needs(data, TS, PROFILE)
        times = [best_us(lambda d=data: header_end(d, TS, complete=True), count=500),
                 best_us(lambda d=data: needs(d, TS, PROFILE), count=500),
                 best_us(lambda w=wanted: respond(w), count=200),
                 best_us(lambda d=data, p=pseudonyms: deidentify_header(d, TS, PROFILE, p), count=500)]
        print(f"{name:22} {len(data):6d} " + " ".join(f"{t:>{w}.0f}" for t, w in zip(times, (11, 8, 8, 11),
                                                                                     strict=True)))


if __name__ == "__main__":
    main()
