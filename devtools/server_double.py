"""A stand-in for the server agent in tests and benchmarks (issue 4 allows one): built from dicomwire.

Forward side: TLS with a client certificate required; checks that the request carries a User
Identity sub-item (recording it), strips it, routes ``ORTHANC@...`` to Orthanc and rejects any other
called AE title (called AE title not recognized); answers a positive-response request with 0x59.
Return side: a plain listener the PACS sends C-MOVE sub-operations to, relayed over TLS to the
workstation agent's return listener.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from pathlib import Path

from dicomwire.identity import UserIdentity, add_identity_response, extract_user_identity, strip_user_identity
from dicomwire.listener import RelayServer
from dicomwire.policy import NO_REQUEST, Asks, ConnectionInfo, TransparentPolicy
from dicomwire.questions import (
    AcceptQuestion,
    AcceptVerdict,
    AssociationQuestion,
    AssociationVerdict,
    ForwardAccept,
    ForwardAssociation,
    RejectAssociation,
)
from dicomwire.tls import client_context, server_context
from dicomwire.upstream import Upstream


@dataclass
class Seen:
    identity: UserIdentity | None
    called: str
    calling: str


@dataclass
class DoublePolicy(TransparentPolicy):
    """Transparent for DIMSE; checks and strips the identity of each association request."""

    orthanc: Upstream = field(default_factory=lambda: Upstream(host="127.0.0.1", port=0))
    seen: list[Seen] = field(default_factory=list)
    pacs_name: str = "ORTHANC"
    asks: Asks = NO_REQUEST

    def __post_init__(self) -> None:
        super().__init__(self.orthanc)

    def open(self, connection: ConnectionInfo) -> DoublePolicy:
        return self  # it holds nothing per association but what it records for the test

    def associate(self, question: AssociationQuestion) -> AssociationVerdict:
        rq = question.rq
        identity = extract_user_identity(rq)
        self.seen.append(Seen(identity, rq.called_ae, rq.calling_ae))
        if identity is None:
            return RejectAssociation(reason_text="no identity", result=1, source=2, reason=1)
        name = rq.called_ae.partition("@")[0]
        if name != self.pacs_name:
            return RejectAssociation(reason_text="unknown PACS", result=1, source=1, reason=7)
        return ForwardAssociation(target=self.orthanc, rq=strip_user_identity(rq).with_ae_titles(called=name),
                                  review_ac=identity.positive_response_requested)

    def accept(self, question: AcceptQuestion) -> AcceptVerdict:
        return ForwardAccept(ac=add_identity_response(question.ac))


class ServerDouble:
    def __init__(self, pki: Path, orthanc: tuple[str, int], forward_port: int, return_port: int,
                 workstation_return: tuple[str, int], pacs_name: str = "ORTHANC") -> None:
        self.policy = DoublePolicy(orthanc=Upstream(host=orthanc[0], port=orthanc[1]), pacs_name=pacs_name)
        server_ctx = server_context(pki / "gw1.crt", pki / "gw1.key", ca=pki / "ca.crt")
        client_ctx = client_context(ca=pki / "ca.crt", certificate=pki / "gw1.crt", key=pki / "gw1.key")
        self.forward = RelayServer(self.policy, port=forward_port, ssl=server_ctx)
        self.returns = RelayServer(TransparentPolicy(Upstream(host=workstation_return[0], port=workstation_return[1],
                                                              ssl=client_ctx, server_hostname="ws1")),
                                   port=return_port)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> ServerDouble:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    async def _start(self) -> None:
        await self.forward.start()
        await self.returns.start()

    def stop(self) -> None:
        async def _stop() -> None:
            await self.forward.shutdown(1)
            await self.returns.shutdown(1)

        asyncio.run_coroutine_threadsafe(_stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
