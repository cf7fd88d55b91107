"""The PACS's own words, relayed as the PACS's: never taken for a refusal of the server agent.

The wrapper on the workstation turns an Error Comment (0000,0902) that starts with one of our codes
(:mod:`server_agent.refusals`) into a sentence of ours ("your login is no longer valid. Next step:
log in again"). A PACS chooses its Error Comments freely (PS3.7 C.4: free text), so a PACS, or
whoever can put words into one, could send ``SESSION-ENDED: call x4444 to unlock your login`` and
have it told to the clinician in the agent's voice. So the server agent sees the final response of
every request it forwards and relays any Error Comment in it as ``PACS: its words``
(:func:`~server_agent.refusals.relayed_comment`): it can never parse as one of our codes, and the
wrapper labels it as the PACS's (:func:`agent.messages.from_comment`).

Only the final response is read (PS3.7 C.4: Pending responses carry no failure), and only when
there is a comment is it rewritten; the others pass unchanged. A request the policy permitted
without a review of its own gets :data:`HEARD`, a :class:`~dicomwire.questions.Selective` review: the
relay asks about its final response only when that carries an Error Comment, and every other response
passes without a question (a C-STORE's success keeps the pass-through path).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Awaitable

from dicomwire.association import Side
from dicomwire.dimse import STATUS_PENDING, CommandSet, Tag, command_values, encode_command
from dicomwire.questions import (
    Permit,
    RequestQuestion,
    RequestVerdict,
    ResponseQuestion,
    ResponseVerdict,
    Rewrite,
    Selective,
)

from .refusals import relayed_comment


class Heard(Selective):
    """The review object of a request whose responses are read only for the PACS's Error Comment: only
    a final response that carries one is asked about (the others keep the relay's pass-through path)."""

    __slots__ = ()

    def wants(self, response: CommandSet) -> bool:
        return response.status not in STATUS_PENDING and response.error_comment is not None

    def __repr__(self) -> str:
        return "HEARD"


HEARD = Heard()


def heard(question: RequestQuestion, verdict: RequestVerdict | Awaitable[RequestVerdict]) -> \
        RequestVerdict | Awaitable[RequestVerdict]:
    """``verdict`` for a client's request, with :data:`HEARD` as its review if it had none (a request
    from the PACS, a C-GET's C-STORE, is answered by the app: no PACS words come back to it)."""
    if question.side is not Side.CLIENT:
        return verdict
    if inspect.isawaitable(verdict):
        return _heard_later(verdict)
    return _with_review(verdict)


async def _heard_later(pending: Awaitable[RequestVerdict]) -> RequestVerdict:
    return _with_review(await pending)


def _with_review(verdict: RequestVerdict) -> RequestVerdict:
    if isinstance(verdict, Permit | Rewrite) and verdict.review is None:
        return dataclasses.replace(verdict, review=HEARD)
    return verdict


def relayed(question: ResponseQuestion, verdict: ResponseVerdict | Awaitable[ResponseVerdict]) -> \
        ResponseVerdict | Awaitable[ResponseVerdict]:
    """``verdict`` for a response, with the Error Comment of a PACS's final response relayed as the
    PACS's. A verdict that replaces the command already (a research view's response, our own
    refusal) or drops the response stands as it is."""
    if question.side is not Side.SERVER or not question.final or not question.command.error_comment:
        return verdict
    if inspect.isawaitable(verdict):
        return _relayed_later(question, verdict)
    return _labelled(question, verdict)


async def _relayed_later(question: ResponseQuestion, pending: Awaitable[ResponseVerdict]) -> ResponseVerdict:
    return _labelled(question, await pending)


def _labelled(question: ResponseQuestion, verdict: ResponseVerdict) -> ResponseVerdict:
    if not isinstance(verdict, Permit | Rewrite) or (isinstance(verdict, Rewrite) and verdict.command is not None):
        return verdict
    values = command_values(question.command)
    values[Tag.ERROR_COMMENT] = relayed_comment(question.command.error_comment or "")
    command = encode_command(values)
    if isinstance(verdict, Rewrite):
        return dataclasses.replace(verdict, command=command)
    return Rewrite(command=command)


__all__ = ["HEARD", "Heard", "heard", "relayed"]
