"""Write ``deid/table.py``: the actions of PS3.15 Table E.1-1, generated from two maintained packages.

No package on PyPI ships every column of Table E.1-1 for a named edition under a licence we can use
(2026-12): ``dicom-anonymizer`` (Kitware, BSD-3-Clause) ships the Basic Profile column of named
editions (2023e, 2024b, 2026c) but no option column; ``dicom-standard`` (Innolitics, MIT) ships every
column as JSON, but its one release is the table as published in April 2020; ``idiscore`` ships every
column but is GPL-3.0, needs Python 3.12 since 1.3, and names a scrape date, not an edition; pydicom's
``deid`` and ``dicognito`` ship no table. So:

* **Basic Profile column**: ``dicom-anonymizer`` 2.1.0, ``dicomfields_2026c`` (DICOM 2026c).
* **Option columns**: ``dicom-standard`` 0.1.0. An option entry is used only where its row's Basic
  action in that copy is the 2026c action (the row has not changed since), and entries that later
  editions withdrew are dropped (``WITHDRAWN``, found by comparing the 2020 copy with the 2024b
  table). Attributes added since 2020 carry no option entry: every option treats them as the Basic
  Profile does, stricter than the standard, never looser.

Run ``python -m devtools.gen_deid_table`` after upgrading either package; tests/deid/test_table.py
checks that the committed table is what the installed packages give.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
from pathlib import Path
from typing import Any

import pydicom
import pydicom.sr.codedict

ANONYMIZER = "dicom-anonymizer"
ANONYMIZER_MODULE = "dicomanonymizer.dicom_anonymization_databases.dicomfields_2026c"
EDITION = "2026c"
STANDARD = "dicom-standard"
STANDARD_FILE = "confidentiality_profile_attributes.json"

# dicom-anonymizer's list name -> the Table E.1-1 action code (PS3.15 E.1.1 "Action codes").
GROUPS = {"D_TAGS": "D", "Z_TAGS": "Z", "X_TAGS": "X", "U_TAGS": "U", "Z_D_TAGS": "Z/D", "X_Z_TAGS": "X/Z",
          "X_D_TAGS": "X/D", "X_Z_D_TAGS": "X/Z/D", "X_Z_U_STAR_TAGS": "X/Z/U*"}
# The JSON's option keys, in Table E.1-1's column order, with the CID 7050 code of each option.
OPTIONS = {"rtnSafePrivOpt": "113111", "rtnUIDsOpt": "113110", "rtnDevIdOpt": "113109", "rtnInstIdOpt": "113112",
           "rtnPatCharsOpt": "113108", "rtnLongFullDatesOpt": "113106", "rtnLongModifDatesOpt": "113107",
           "cleanDescOpt": "113105", "cleanStructContOpt": "113104", "cleanGraphOpt": "113103"}
# 2020 entries that later editions made stricter (2024b: Retain Device Identity cleans, no longer keeps,
# the AE titles of scheduled and performed stations). Dropped: the Basic action applies.
WITHDRAWN = {"rtnDevIdOpt": frozenset({0x00321021, 0x00400001, 0x00400241})}
# The rows of the JSON that are not one tag: a masked tag (value, mask) or the private attributes.
PRIVATE = "private"
SPECIAL_IDS = {"50XXXXXX": (0x50000000, 0xFF000000), "60XX3000": (0x60003000, 0xFF00FFFF),
               "60XX4000": (0x60004000, 0xFF00FFFF), "GGGGEEEE-WHERE-GGGG-IS-ODD": PRIVATE}


def basic_column() -> tuple[dict[int, str], list[tuple[int, int, str]]]:
    """The 2026c Basic Profile: single tags, and masked ones as (value, mask, action)."""
    module = importlib.import_module(ANONYMIZER_MODULE)
    single: dict[int, str] = {}
    masked: list[tuple[int, int, str]] = []
    for name, action in GROUPS.items():
        for entry in getattr(module, name):
            if len(entry) == 2:
                tag = entry[0] << 16 | entry[1]
                assert tag not in single, f"({tag:08X}) in two lists of {ANONYMIZER_MODULE}"
                single[tag] = action
            else:
                group, element, group_mask, element_mask = entry
                masked.append((group << 16 | element, group_mask << 16 | element_mask, action))
    return single, sorted(masked)


def standard_rows() -> list[dict[str, Any]]:
    files = importlib.metadata.files(STANDARD) or []
    path = next(f for f in files if f.name == STANDARD_FILE)
    rows: list[dict[str, Any]] = json.loads(Path(str(path.locate())).read_text())
    return rows


def option_columns(single: dict[int, str], masked: list[tuple[int, int, str]]) -> dict[str, dict[Any, str]]:
    """Each option's entries from the 2020 copy, kept where the row's Basic action is still 2026c's."""
    masked_basic = {(value, mask): action for value, mask, action in masked}
    columns: dict[str, dict[Any, str]] = {option: {} for option in OPTIONS}
    for row in standard_rows():
        key: Any = SPECIAL_IDS.get(row["id"].upper())
        if key is None:
            key = int(row["id"], 16)
        current = (single.get(key) if isinstance(key, int) else
                   masked_basic.get(key) if isinstance(key, tuple) else "X")  # private: X unless an option
        if current != row["basicProfile"]:
            continue
        for option in OPTIONS:
            action = row.get(option)
            if action and key not in WITHDRAWN.get(option, ()):
                columns[option][key] = action
    return columns


def _key(key: Any) -> str:
    if isinstance(key, int):
        return f"0x{key:08X}"
    if isinstance(key, tuple):
        return f"(0x{key[0]:08X}, 0x{key[1]:08X})"
    return repr(key)


def render() -> str:
    single, masked = basic_column()
    columns = option_columns(single, masked)
    anonymizer = importlib.metadata.version(ANONYMIZER)
    standard = importlib.metadata.version(STANDARD)
    lines = [
        f'"""PS3.15 Table E.1-1 (DICOM {EDITION}), generated by devtools/gen_deid_table.py. Do not edit: regenerate.',
        "",
        f"Basic Profile column: {ANONYMIZER} {anonymizer} ({ANONYMIZER_MODULE.rsplit('.', 1)[1]}). Option columns:",
        f"{STANDARD} {standard} (Table E.1-1 as published in April 2020), each entry kept only where its",
        f"row's Basic action is the {EDITION} one; see the generator for why two sources and what that costs.",
        '"""',
        "",
        f'EDITION = "{EDITION}"',
        f'SOURCES = ("{ANONYMIZER} {anonymizer}", "{STANDARD} {standard}")',
        "",
        "# tag -> Basic Profile action code (PS3.15 E.1.1)",
        "BASIC: dict[int, str] = {",
    ]
    items = sorted(single.items())
    for start in range(0, len(items), 5):
        lines.append("    " + " ".join(f'0x{tag:08X}: "{action}",' for tag, action in items[start:start + 5]))
    lines += ["}", "", "# (value, mask, action): repeating groups, a tag t matches when t & mask == value",
              "BASIC_MASKED: tuple[tuple[int, int, str], ...] = ("]
    lines += [f'    (0x{value:08X}, 0x{mask:08X}, "{action}"),' for value, mask, action in masked]
    lines += [")", "", "# option column (PS3.15 Table E.1-1 header) -> CID 7050 code",
              "OPTION_CODES: dict[str, str] = {"]
    lines += [f'    "{option}": "{code}",' for option, code in OPTIONS.items()]
    lines += ["}", "", f"# CID 7050 code -> (scheme, meaning), from pydicom {pydicom.__version__}'s code dictionary",
              "CID7050: dict[str, tuple[str, str]] = {"]
    cid = pydicom.sr.codedict.codes.cid7050
    for name in sorted(cid.dir(), key=lambda n: str(getattr(cid, n).value)):
        code = getattr(cid, name)
        lines.append(f'    "{code.value}": ("{code.scheme_designator}", "{code.meaning}"),')
    lines += ["}", "", "# option column -> {tag, (value, mask) or \"private\": action}",
              "OPTIONS: dict[str, dict[int | tuple[int, int] | str, str]] = {"]
    for option, entries in columns.items():
        lines.append(f'    "{option}": {{')
        ordered = sorted(entries.items(), key=lambda item: str(_key(item[0])))
        for start in range(0, len(ordered), 5):
            lines.append("        " + " ".join(f'{_key(k)}: "{a}",' for k, a in ordered[start:start + 5]))
        lines.append("    },")
    lines += ["}", ""]
    return "\n".join(lines)


def main() -> None:
    target = Path(__file__).resolve().parent.parent / "deid" / "table.py"
    target.write_text(render())
    single, masked = basic_column()
    columns = option_columns(single, masked)
    print(f"wrote {target}: {len(single)} + {len(masked)} Basic rows; options: "
          + ", ".join(f"{option} {len(entries)}" for option, entries in columns.items()))


if __name__ == "__main__":
    main()
