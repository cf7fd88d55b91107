"""De-identification of DICOM data set headers in transit (PS3.15 Annex E), as pure functions.

The server agent gives the research view: a C-FIND match or the header of a C-STORE sub-operation,
encoded in its transfer syntax, becomes its de-identified encoding; pixel data never passes through
here (the relay streams it on unchanged). Nothing here does I/O or keeps state: pseudonyms come in as
values (:class:`Pseudonyms`) that the pseudonymisation service (:mod:`pseudonymizer`) handed out.

    header = read_header(head, ts)                     # None: read more of the stream first
    pixel_risk_of(header.read, pixel_policy)           # a reason: refuse the instance
    wanted = needs_of(header, profile)                 # batch these across matches
    pseudonyms = service.pseudonyms(project, wanted)   # one HTTP call (pseudonymizer.client)
    new = deidentify_read(header, profile, pseudonyms).data
    send(new); send(head[header.end:]); stream the rest unchanged (to the end of its Pixel Data)

The header is read once (:class:`Header`); the bytes-taking forms (``header_end``, ``needs``,
``deidentify_header``, ``pixel_identity_risk``) read it themselves.

The actions are PS3.15 Table E.1-1 of edition ``deid.table.EDITION``, generated from maintained
packages by devtools/gen_deid_table.py; :mod:`deid.profile` says how each action code is carried out.
What the table does not name is removed or cleaned, never kept by default (PS3.15 E.1.1: the
profile's "all other attributes", and the Clean options of E.3): :mod:`deid.supplement`, reviewed
by hand beside the generated table, gives each such attribute an action by its PS3.6 VR and lists
the few kept as they are (codes, equipment, technique, definition UIDs), each with its reason.
A clinician's copy is never touched: it does not go through here.
"""

from .errors import DeidError, MissingPseudonym, NotDeidentifiable, PixelIdentityRisk
from .header import (
    Deidentified,
    Header,
    deidentify_header,
    deidentify_identifier,
    deidentify_read,
    header_end,
    needs,
    needs_of,
    read_header,
)
from .pixels import PixelPolicy, check_pixels, pixel_identity_risk, pixel_risk_of
from .profile import Option, Profile, SafePrivate
from .pseudonyms import Needs, PatientPseudonym, Pseudonyms
from .table import EDITION

__all__ = [
    "EDITION", "DeidError", "Deidentified", "Header", "MissingPseudonym", "Needs", "NotDeidentifiable", "Option",
    "PatientPseudonym", "PixelIdentityRisk", "PixelPolicy", "Profile", "Pseudonyms", "SafePrivate", "check_pixels",
    "deidentify_header", "deidentify_identifier", "deidentify_read", "header_end", "needs", "needs_of",
    "pixel_identity_risk", "pixel_risk_of", "read_header",
]
