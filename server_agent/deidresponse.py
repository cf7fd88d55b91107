"""The Failed SOP Instance UID List of a research retrieval's final response, as the researcher may see it
(issue 16; PS3.4 C.4.2.1.4.2 for C-MOVE, C.4.3.1.3.2 for C-GET).

The standard asks for the list in a final response that reports failed sub-operations, and for nothing
that marks it whole; the counts (Number of Failed Sub-operations, the PACS's) say how many failed. So the
researcher sees the PACS's list as pseudonyms, in its order, as many whole ones as fit in the element: a
UI value's length is 16 bits in explicit VR (PS3.5 7.1.2) and a pseudonym (``2.25.`` and 39 digits) is
often longer than the real UID the PACS fitted into it. Never a real UID.

The relay holds a C-GET-RSP's or C-MOVE-RSP's identifier whole, as a C-FIND's (the gate's
``_WHOLE_DATA_SET``), up to ``max_identifier_length`` (256 KiB, some 6,000 UIDs). A longer one can be
neither shown (its real UIDs) nor cut (the rest would stream on as it came): that final response is
dropped, logged.

Any response a research view lets through loses the PACS's Error Comment (:func:`without_comment`): free
text of the PACS's choosing, which may echo the real keys the request was translated to.
"""

from __future__ import annotations

import logging

from dicomwire.dataset import IMPLICIT_VR_LE
from dicomwire.dimse import CommandSet, Tag, command_values, encode_command
from dicomwire.limits import RelayLimits
from dicomwire.questions import Drop, ResponseQuestion

log = logging.getLogger("server_agent.deid")

# The longest list shown in explicit VR: 16-bit lengths (PS3.5 7.1.2), even (6.2). Implicit VR has 32-bit
# lengths: there the bound is what the relay may hold of a header at all.
SHOWN_LIST = 0xFFFE
SHOWN_LIST_IMPLICIT = RelayLimits().max_header_length


def without_comment(command: CommandSet) -> bytes | None:
    """The command set without its Error Comment (0000,0902), or None when it has none."""
    values = command_values(command)
    if values.pop(Tag.ERROR_COMMENT, None) is None:
        return None
    return encode_command(values)  # decoded values, one fewer: they fit


def whole_response(question: ResponseQuestion) -> Drop | None:
    """A Drop for a response whose identifier the relay did not hold whole (see the module's docstring)."""
    if not question.command.has_data_set or question.data_set_complete:
        return None
    log.warning("research view: a %s whose identifier is longer than the %d bytes held is dropped (its Failed SOP "
                "Instance UID List cannot be made pseudonymous)", question.command.name, len(question.data_set))
    return Drop(reason_text="a response identifier too long to be made pseudonymous")


def failed_list_value(pseudonyms: list[str], transfer_syntax: str) -> bytes:
    """The UI value of the list (PS3.5 6.4: backslash-joined), whole pseudonyms only, in the PACS's order,
    padded to even (6.2), within the element's bound in ``transfer_syntax``; a shortened list is logged."""
    most = SHOWN_LIST_IMPLICIT if transfer_syntax == IMPLICIT_VR_LE else SHOWN_LIST
    kept: list[str] = []
    size = -1
    for uid in pseudonyms:
        if size + 1 + len(uid) > most:
            log.info("research view: %d failed instances, the first %d shown (a UI value's bound)", len(pseudonyms),
                     len(kept))
            break
        kept.append(uid)
        size += 1 + len(uid)
    value = "\\".join(kept).encode("ascii")
    return value + b"\x00" if len(value) & 1 else value


__all__ = ["SHOWN_LIST", "failed_list_value", "whole_response"]
