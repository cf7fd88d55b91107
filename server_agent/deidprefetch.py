"""What a de-identified retrieval will bring, asked of the PACS before it starts, so that its pseudonyms
come in one call to the pseudonymisation service (issue 16: pseudonym lookups batched per move).

A C-STORE sub-operation's header cannot leave before its UIDs are replaced, and a PACS sends one
sub-operation at a time: asked instance by instance, every image would wait for a round trip to the
service. So, once a researcher's C-GET or C-MOVE is permitted and translated, the agent asks the PACS
itself, with a C-FIND at the IMAGE level (PS3.4 C.6.2, Study Root; the same keys as the retrieval, as
the calling AE title the PACS already knows for this association), which instances the retrieval names,
and asks the service for all their pseudonyms at once. Nothing of the answer is shown to anyone: the
pseudonyms wait in the retrieval's memory for the sub-operations that need them.

This is an optimisation only. A PACS that refuses the query, answers too slowly, or names more than
:data:`MAX_INSTANCES` instances leaves the retrieval to ask per instance, which is as safe (each header
is still rewritten only with the service's pseudonyms), just slower.
"""

from __future__ import annotations

import logging
import ssl

from deid import Needs

from .config import Pacs

log = logging.getLogger("server_agent.deid")

MAX_INSTANCES = 20_000  # one call to the service holds at most 10,000 values ([limits] max_values): 2 per instance
TIMEOUT = 3.0  # seconds for the association and each response (pynetdicom's ACSE, DIMSE, network timeouts)
# How long a retrieval's permit waits for the answer (within the relay's 10 s decision_timeout); past it
# the retrieval goes on and its images ask for themselves.
DEADLINE = 3.0
_FIND = "1.2.840.10008.5.1.4.1.2.2.1"  # Study Root Query/Retrieve Information Model - FIND
_KEYS = {"patient_id": "PatientID", "study_instance_uid": "StudyInstanceUID",
         "series_instance_uid": "SeriesInstanceUID", "sop_instance_uid": "SOPInstanceUID"}


def members(pacs: Pacs, context: ssl.SSLContext | None, calling_ae: str, keys: dict[str, str]) -> Needs | None:
    """The Patient IDs and UIDs of the instances ``keys`` (a retrieval's real keys, ``Facts.resource``)
    name, by a C-FIND to ``pacs``; None when it cannot tell (blocking: run it in a thread)."""
    from pydicom.dataset import Dataset
    from pynetdicom import AE

    query = Dataset()
    query.QueryRetrieveLevel = "IMAGE"
    for name, keyword in _KEYS.items():
        setattr(query, keyword, keys.get(name, ""))
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(_FIND)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = TIMEOUT
    tls = (context, pacs.server_name or pacs.host) if context is not None else None
    assoc = ae.associate(pacs.host, pacs.port, ae_title=pacs.ae_title, tls_args=tls)
    if not assoc.is_established:
        return None
    patient_ids: set[str] = set()
    uids: set[str] = set()
    count = 0
    try:
        for status, match in assoc.send_c_find(query, _FIND):
            if status is None or status.Status not in (0xFF00, 0xFF01):
                return Needs(patient_ids=frozenset(patient_ids), uids=frozenset(uids)) if status is not None \
                    and status.Status == 0 else None
            count += 1
            if count > MAX_INSTANCES:
                assoc.abort()
                return None
            if match is not None:
                patient_ids.update(str(v) for v in [match.get("PatientID", "")] if v)
                uids.update(str(match.get(k, "")) for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
                            if match.get(k, ""))
    finally:
        if assoc.is_established:
            assoc.release()
    return None


__all__ = ["DEADLINE", "MAX_INSTANCES", "members"]
