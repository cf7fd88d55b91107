"""DICOM over TLS (PS3.15 B.12): what the agents read from a peer's certificate.

A peer is named by its certificate's subject Common Name and DNS subject-alternative names; the agents
compare those names (case-insensitively) with the names their configuration expects.
"""

from __future__ import annotations

from typing import Any


def certificate_names(cert: dict[str, Any] | None) -> list[str]:
    """Subject CN and DNS subject-alternative names of a peer certificate (``ssl.getpeercert()`` form)."""
    if not cert:
        return []
    names = [str(value) for rdn in cert.get("subject", ()) for key, value in rdn if key == "commonName"]
    return names + [str(value) for kind, value in cert.get("subjectAltName", ()) if kind == "DNS"]


__all__ = ["certificate_names"]
