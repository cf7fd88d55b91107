"""deid/table.py is what the maintained packages ship, and the rules that join them hold."""

from __future__ import annotations

from pathlib import Path

from deid import table
from deid.profile import Op, Option, Profile
from devtools.gen_deid_table import WITHDRAWN, render, standard_rows

CODES = {"D", "Z", "X", "U", "K", "C", "Z/D", "X/Z", "X/D", "X/Z/D", "X/Z/U*"}


def test_the_committed_table_is_generated_from_the_installed_packages() -> None:
    assert (Path(__file__).parents[2] / "deid" / "table.py").read_text() == render()
    assert table.EDITION == "2026c"
    assert table.SOURCES == ("dicom-anonymizer 2.1.0", "dicom-standard 0.1.0")


def test_every_option_entry_sits_on_a_row_unchanged_since_its_edition() -> None:
    old: dict[int, set[str]] = {}  # the 2020 copy lists (3008,0105) twice, with X/Z and X
    for row in standard_rows():
        if len(row["id"]) == 8 and all(c in "0123456789abcdefABCDEF" for c in row["id"]):
            old.setdefault(int(row["id"], 16), set()).add(row["basicProfile"])
    offered = {option.value for option in Option}
    for option, entries in table.OPTIONS.items():
        for key, action in entries.items():
            assert action in ("K", "C") or option not in offered, (option, key, action)  # options only relax
            if isinstance(key, int):
                assert table.BASIC[key] in old[key], (option, hex(key))
            assert key not in WITHDRAWN.get(option, ()), (option, key)
    assert set(table.BASIC.values()) <= CODES


def test_withdrawn_entries_fall_back_to_the_basic_action() -> None:
    device = Profile(options=frozenset({Option.RETAIN_DEVICE_IDENTITY}))
    assert device.op(0x00400241, "AE") is Op.REMOVE  # Performed Station AE Title: 2024b cleans it
    assert device.op(0x00181000, "LO") is Op.KEEP  # Device Serial Number: kept by the option


def test_cid_7050_names_every_option_we_offer() -> None:
    for option in Option:
        assert option.code in table.CID7050
    assert table.CID7050["113100"] == ("DCM", "Basic Application Confidentiality Profile")
