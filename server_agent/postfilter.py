"""C-FIND post-filtering: every match is checked before the user sees it (PS3.4 C.4.1).

A C-FIND the PDP permitted with the obligation ``filter-results`` (a query not pinned to one patient)
is forwarded, and each pending response's identifier is decided as a C-FIND of that match's patient;
the matches of patients the user may not see are dropped. Decisions are gathered for a few
milliseconds into one AuthZEN ``evaluations`` call (the relay keeps reading while up to
``RelayLimits.max_pending_reviews`` matches await theirs). A C-FIND pinned to one patient is decided
for that patient; a match of any other patient (a PACS that reads the key as a pattern, or matches
more loosely than the decision assumed) is dropped: a decision covers only what it was made for.
"""

from __future__ import annotations

from dataclasses import dataclass

from .authorization import Facts
from .pdp import Decision, PdpClient, PdpUnavailable
from .window import Window

BATCH_WINDOW = 0.003  # seconds to gather post-filter questions into one PDP call
BATCH_MAX = 64  # = RelayLimits.max_pending_reviews: a full batch goes at once


@dataclass(eq=False, slots=True, kw_only=True)
class FindReview:
    """The review object of one permitted C-FIND (what its responses are checked against)."""

    facts: Facts  # of the request
    pinned: str | None  # the patient the request was decided for; None: each match decided (filtering)
    strip_patient_id: bool = False  # we added Patient ID as a return key: removed from each match again


class Batcher:
    """One association's post-filter evaluations, gathered into AuthZEN batches."""

    def __init__(self, pdp: PdpClient, window: float = BATCH_WINDOW, size: int = BATCH_MAX) -> None:
        self.pdp = pdp
        # The PDP looked up when a window closes, not now (a policy may be given its PDP after this).
        self._window: Window[dict[str, object], Decision] = Window(lambda batch: self.pdp.evaluate(batch), window,
                                                                     size, errors=(PdpUnavailable,))

    async def decide(self, request: dict[str, object]) -> Decision:
        """The PDP's decision on ``request``, made together with the others asked within the window."""
        cached = self.pdp.cached(request)
        if cached is not None:
            return cached
        return await self._window.ask(request)

    def close(self) -> None:
        """The association is over: nothing more is decided for it."""
        self._window.close()


__all__ = ["BATCH_MAX", "BATCH_WINDOW", "Batcher", "FindReview"]
