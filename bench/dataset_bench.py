"""What the strict reading costs per C-STORE head (issue 13): ``python -m bench.dataset_bench``.

The server agent reads the first ``store_head_length`` bytes (16 KiB) of every C-STORE data set. This
times the keys read from such heads by ``server_agent.keys.store_keys`` (the strict reader: every
element of the head checked) against the pydicom reading it replaced (``data_element_generator`` up to
(0020,000E), nothing checked), best of several rounds, on: the CT slices the site benchmark stores
(devtools.dicomdata), and pydicom's own CT and MR examples (a vendor header of 256 and 73 elements).
"""

from __future__ import annotations

import tempfile
import time
import warnings
from collections.abc import Callable
from functools import partial
from io import BytesIO
from pathlib import Path

from pydicom import dcmread, examples
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import data_element_generator
from pydicom.filewriter import write_dataset

from devtools.dicomdata import make_ct_study
from dicomwire.dataset import EXPLICIT_VR_LE, IMPLICIT_VR_LE, read_data_set
from server_agent.keys import store_keys

HEAD = 16 * 1024


def encode(ds: Dataset, implicit: bool) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, implicit
    write_dataset(fp, ds)
    return fp.getvalue()


def best_us(call: Callable[[], object], rounds: int = 7, count: int = 2000) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(count):
            call()
        best = min(best, (time.perf_counter() - started) / count)
    return best * 1e6


def pydicom_head(data: bytes, implicit: bool) -> None:
    for _ in data_element_generator(BytesIO(data), implicit, True, defer_size=None,
                                    stop_when=lambda tag, vr, length: tag > 0x0020000E):
        pass


def heads() -> dict[str, Dataset]:
    with tempfile.TemporaryDirectory() as folder:
        slice_ = dcmread(make_ct_study(Path(folder), slices=1, size=512)[0])
    del slice_.file_meta
    ct, mr = examples.ct.copy(), examples.mr.copy()
    del ct.file_meta, mr.file_meta
    return {"site benchmark CT slice": slice_, "pydicom examples.ct": ct, "pydicom examples.mr": mr}


def main() -> None:
    warnings.simplefilter("ignore")
    for name, ds in heads().items():
        for implicit in (True, False):
            data = encode(ds, implicit)[:HEAD]
            syntax = IMPLICIT_VR_LE if implicit else EXPLICIT_VR_LE
            elements = len(read_data_set(data, syntax, complete=False).elements)
            strict = best_us(partial(store_keys, data, syntax, complete=False))
            old = best_us(partial(pydicom_head, data, implicit))
            print(f"{name:26s} {'implicit' if implicit else 'explicit'} {elements:4d} elements: "
                  f"strict keys {strict:6.1f} us, pydicom to (0020,000E) {old:6.1f} us")


if __name__ == "__main__":
    main()
