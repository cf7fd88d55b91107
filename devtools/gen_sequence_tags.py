"""Write ``dicomwire/sequence_tags.py``: the tags PS3.6 gives VR SQ, from pydicom's data dictionary.

An Implicit VR data set (PS3.5 A.1) does not say which elements are sequences; a reader needs the
data dictionary for that. The wire core imports no pydicom at run time, so the one fact it needs (is
this tag a sequence?) is generated here once. Run ``python -m devtools.gen_sequence_tags`` after a
pydicom upgrade; tests/unit/test_dataset.py checks the table still matches the installed pydicom.
"""

from __future__ import annotations

from pathlib import Path

from pydicom import __version__ as pydicom_version
from pydicom._dicom_dict import DicomDictionary, RepeatersDictionary


def sequence_tags() -> list[int]:
    return sorted(tag for tag, entry in DicomDictionary.items() if entry[0] == "SQ")


def repeating_sequence_masks() -> list[str]:
    return sorted(mask for mask, entry in RepeatersDictionary.items() if entry[0] == "SQ")


def render() -> str:
    tags = sequence_tags()
    lines = [f'"""Tags of VR SQ in PS3.6, generated from pydicom {pydicom_version} by devtools/gen_sequence_tags.py.',
             "",
             "Do not edit: regenerate. The repeating group (50xx,2600) is handled in ``is_sequence``.",
             '"""',
             "",
             "SEQUENCE_TAGS = frozenset({"]
    for start in range(0, len(tags), 8):
        lines.append("    " + " ".join(f"0x{tag:08X}," for tag in tags[start:start + 8]))
    lines += ["})", "", "",
              "def is_sequence(tag: int) -> bool:",
              '    """True when PS3.6 gives ``tag`` the VR SQ (curve data (50xx,2600) included)."""',
              "    return tag in SEQUENCE_TAGS or (tag & 0xFF00FFFF) == 0x50002600", ""]
    return "\n".join(lines)


def main() -> None:
    assert repeating_sequence_masks() == ["50xx2600"], "a new repeating SQ tag: teach is_sequence about it"
    target = Path(__file__).resolve().parent.parent / "dicomwire" / "sequence_tags.py"
    target.write_text(render())
    print(f"wrote {target} ({len(sequence_tags())} tags)")


if __name__ == "__main__":
    main()
