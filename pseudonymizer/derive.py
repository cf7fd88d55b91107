"""Pseudonyms as keyed functions of the real values (HMAC-SHA-256, RFC 2104, FIPS 198-1).

One secret key per pseudonymisation scope; each kind of pseudonym is the HMAC of its own label and
the value, so a Patient ID's pseudonym, its date offset and a UID's pseudonym are independent. The
same key and value give the same pseudonym in every session and on every agent; another scope's key
gives unrelated ones. Without the key a pseudonym cannot be computed or reversed; the reverse
mapping the service keeps (:mod:`.store`) is what translates back.

* Patient ID: ``<prefix>-<16 base32 characters>`` (80 bits; LO, at most 64 characters); the
  pseudonymous name is ``<prefix>^<the same 16 characters>`` (PN: family ^ given).
* UID: ``2.25.<decimal of a 128-bit value>`` (PS3.5 B.2: a UUID-derived UID; the value is an RFC 9562
  version 8 UUID, the version for application-defined bits), or ``<root>.<decimal of 96 bits>``
  under a configured organisational root (PS3.5 9.1, at most 64 characters).
* Date offset: -365..-1 days (E.3.6: the same for all of a patient's data, so intervals are kept;
  never 0, so no date is ever disclosed unchanged).
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from deid import PatientPseudonym

UUID_ROOT = "2.25"
MIN_OFFSET, MAX_OFFSET = -365, -1
MAX_UID = 64  # PS3.5 9.1


def _mac(key: bytes, label: bytes, value: str) -> bytes:
    return hmac.new(key, label + b"\x00" + value.encode("latin-1"), hashlib.sha256).digest()


def patient(key: bytes, patient_id: str, prefix: str) -> PatientPseudonym:
    """The pseudonyms of one patient (``patient_id`` as latin-1 text: its bytes)."""
    code = base64.b32encode(_mac(key, b"patient-id", patient_id)[:10]).decode("ascii")
    span = MAX_OFFSET - MIN_OFFSET + 1
    offset = MIN_OFFSET + int.from_bytes(_mac(key, b"date-offset", patient_id)[:8], "big") % span
    return PatientPseudonym(patient_id=f"{prefix}-{code}", patient_name=f"{prefix}^{code}", date_offset_days=offset)


def uid(key: bytes, real: str, root: str = UUID_ROOT) -> str:
    """The pseudonymous UID of ``real``."""
    digest = _mac(key, b"uid", real)
    if root == UUID_ROOT:
        value = int.from_bytes(digest[:16], "big")
        value = (value & ~(0xF << 76)) | 8 << 76  # RFC 9562 4.2: version 8
        value = (value & ~(0x3 << 62)) | 0x2 << 62  # RFC 9562 4.1: variant 10
        return f"{UUID_ROOT}.{value}"
    new = f"{root}.{int.from_bytes(digest[:12], 'big')}"
    if len(new) > MAX_UID:
        raise ValueError(f"UID root {root!r} is too long for a 96-bit suffix within {MAX_UID} characters")
    return new
