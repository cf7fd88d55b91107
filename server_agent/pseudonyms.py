"""The server agent's side of the pseudonymisation service (issue 16 item 4): batches, a deadline, one error.

The research view needs pseudonyms (real Patient IDs and UIDs to pseudonymous ones) and, for a
researcher's query keys, the way back; both belong to the service (:mod:`pseudonymizer`), which alone
holds the per-project keys and the reverse mapping. :class:`PseudonymService` is what an association
asks: each call is one HTTP request for a whole batch (every match of a C-FIND response window, every
key of an identifier), bounded by ``[pseudonymizer] timeout``, and every failure (unreachable, refused,
a malformed answer, too slow) is one :class:`PseudonymsUnavailable`: the caller refuses (fail closed).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Protocol

from deid import Needs, Pseudonyms
from oauthclient import OAuthClientError
from pseudonymizer.client import AsyncPseudonymizerClient, Originals, PseudonymizerError


class PseudonymsUnavailable(Exception):
    """No answer from the pseudonymisation service: what needed it is refused (0124H/C000H)."""


class PseudonymSource(Protocol):
    """Pseudonyms of one research project (the service applies its scope), and the real values of
    pseudonyms it handed out for it."""

    async def pseudonyms(self, project: str, wanted: Needs) -> Pseudonyms: ...

    async def originals(self, project: str, *, patient_ids: Iterable[str] = (),
                        uids: Iterable[str] = ()) -> Originals: ...


class PseudonymService:
    """:class:`PseudonymSource` over the service's HTTP client, each call within ``timeout`` seconds."""

    def __init__(self, client: AsyncPseudonymizerClient, timeout: float) -> None:
        self.client = client
        self.timeout = timeout

    async def pseudonyms(self, project: str, wanted: Needs) -> Pseudonyms:
        if not wanted:
            return Pseudonyms()
        try:
            return await asyncio.wait_for(self.client.pseudonyms(project, wanted), self.timeout)
        except (PseudonymizerError, OAuthClientError, TimeoutError) as error:
            raise PseudonymsUnavailable(_why(error)) from None

    async def originals(self, project: str, *, patient_ids: Iterable[str] = (), uids: Iterable[str] = ()) -> Originals:
        patient_ids, uids = list(patient_ids), list(uids)
        if not patient_ids and not uids:
            return Originals()
        try:
            return await asyncio.wait_for(self.client.originals(project, patient_ids=patient_ids, uids=uids),
                                          self.timeout)
        except (PseudonymizerError, OAuthClientError, TimeoutError) as error:
            raise PseudonymsUnavailable(_why(error)) from None


def _why(error: Exception) -> str:
    if isinstance(error, TimeoutError):
        return "pseudonymisation service: no answer in time"
    return f"pseudonymisation service: {str(error)[:200]}"


__all__ = ["PseudonymService", "PseudonymSource", "PseudonymsUnavailable"]
