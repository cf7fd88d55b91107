"""The workstation agent's answers to the relay core's questions (no sockets here but the owner lookup).

For each association from an app: only processes of the logged-in OS user; the called AE title
``NAME@ROUTE`` picks the server agent (the default route when there is no ``@``); the user's
identity goes into the A-ASSOCIATE-RQ (type 5 JWT, or type 2 user + password); the calling AE title
becomes ``APP@WS`` so the PACS side knows the workstation; the identity response (0x59) is removed
from the A-ASSOCIATE-AC before the app sees it; a C-MOVE Move Destination ``APP`` becomes ``APP@WS``.

The return listener's policy accepts C-STORE sub-operation associations only from the configured
server agents (by certificate name) for ``APP@WS`` titles of this workstation, and relays them to
the app's own storage SCP.
"""

from __future__ import annotations

import json
import logging
import os
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dicomwire.aio import ConnectionInfo, Upstream
from dicomwire.dimse import Tag, command_values, encode_command
from dicomwire.errors import RejectReason
from dicomwire.identity import UserIdentity, UserIdentityType, insert_user_identity, strip_user_identity
from dicomwire.relay import (
    AcceptQuestion,
    AssociationQuestion,
    DimseQuestion,
    ForwardAccept,
    ForwardAssociation,
    Permit,
    Question,
    RejectAssociation,
    Rewrite,
    Verdict,
)

from .config import Route, WorkstationConfig
from .oidc import Tokens
from .peercred import peer_uid

log = logging.getLogger("dicom_agent")


@dataclass(frozen=True, slots=True)
class Credentials:
    """What the agent injects: the current tokens, and the password only in password mode."""

    tokens: Tokens
    password: str | None = None


class AssociationLog:
    """One JSON line per association the agent carried or refused (who, app, route, result)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, **record: Any) -> None:
        record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **record}
        line = json.dumps(record, sort_keys=True)
        log.info("association %s", line)
        if self.path is not None:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "a") as out:
                out.write(line + "\n")


def _reject(text: str, reason: int = RejectReason.NO_REASON) -> RejectAssociation:
    return RejectAssociation(reason_text=text, result=1, source=1, reason=reason)


class WorkstationPolicy:
    def __init__(self, config: WorkstationConfig, credentials: Callable[[], Credentials | None],
                 client_ssl: ssl.SSLContext, journal: AssociationLog, owner_uid: int | None = None) -> None:
        self.config = config
        self.credentials = credentials
        self.client_ssl = client_ssl
        self.journal = journal
        self.owner_uid = os.getuid() if owner_uid is None and hasattr(os, "getuid") else owner_uid

    def decide_now(self, question: Question, connection: ConnectionInfo | None = None) -> Verdict | None:
        if isinstance(question, AcceptQuestion):
            stripped = strip_user_identity(question.ac)  # the app never sees 0x59
            return ForwardAccept(ac=stripped if stripped is not question.ac else None)
        if isinstance(question, DimseQuestion):
            return self._move_destination(question)
        return None  # AssociationQuestion: needs the connection, see decide()

    async def decide(self, question: Question, connection: ConnectionInfo) -> Verdict:
        now = self.decide_now(question)
        if now is not None:
            return now
        assert isinstance(question, AssociationQuestion)
        # Answered on the loop: the owner lookup is one netlink round trip (~30 us, see peercred).
        return self._associate(question, connection)

    def _associate(self, question: AssociationQuestion, connection: ConnectionInfo) -> Verdict:
        rq = question.rq
        record: dict[str, Any] = {"app": rq.calling_ae, "called": rq.called_ae,
                                  "peer": f"{connection.peer[0]}:{connection.peer[1]}" if connection.peer else None}

        def refuse(text: str, reason: int = RejectReason.NO_REASON) -> RejectAssociation:
            self.journal.write(**record, result="refused", reason=text)
            return _reject(text, reason)

        if self.config.check_owner:
            uid = peer_uid(connection.peer, connection.local) if connection.peer and connection.local else None
            record["uid"] = uid
            if uid is None:
                return refuse("the owner of the connecting process could not be determined")
            if uid != self.owner_uid:
                return refuse(f"connection from a process of uid {uid}, not of the logged-in user "
                              f"(uid {self.owner_uid})")
        name, at, route_name = rq.called_ae.partition("@")
        route = self.config.routes.get(route_name if at else (self.config.default_route or ""))
        record["route"] = route.name if route else route_name or None
        if route is None or not name:
            return refuse(f"called AE title {rq.called_ae!r} names no known route",
                          RejectReason.CALLED_AE_NOT_RECOGNIZED)
        credentials = self.credentials()
        if credentials is None or credentials.tokens.remaining <= 0:
            return refuse("no user is logged in (or the session expired)")
        record["user"] = credentials.tokens.username
        if self.config.identity == "password":
            if credentials.password is None:
                return refuse("identity mode 'password' needs the password: use `dicom-agent launch`")
            identity = UserIdentity(type=UserIdentityType.USERNAME_AND_PASSCODE,
                                    primary=credentials.tokens.username.encode(),
                                    secondary=credentials.password.encode(),
                                    positive_response_requested=self.config.positive_response)
        else:
            identity = UserIdentity(type=UserIdentityType.JWT, primary=credentials.tokens.access_token.encode(),
                                    positive_response_requested=self.config.positive_response)
        app = rq.calling_ae
        calling = app if "@" in app else f"{app}@{self.config.name}"
        if len(calling) > 16:
            return refuse(f"calling AE title {calling!r} would exceed 16 characters",
                          RejectReason.CALLING_AE_NOT_RECOGNIZED)
        forwarded = insert_user_identity(rq, identity).with_ae_titles(calling=calling)
        self.journal.write(**record, result="forwarded", calling=calling)
        return ForwardAssociation(target=self.upstream(route), rq=forwarded, review_ac=True)

    def upstream(self, route: Route) -> Upstream:
        if not route.tls:  # loopback only (the configuration checks), for measuring TLS's cost
            return Upstream(host=route.host, port=route.port, warm=route.warm)
        return Upstream(host=route.host, port=route.port, ssl=self.client_ssl, server_hostname=route.server_name,
                        warm=route.warm)

    def _move_destination(self, question: DimseQuestion) -> Verdict:
        destination = question.command.move_destination
        if not destination or "@" in destination:
            return Permit()
        composed = f"{destination}@{self.config.name}"
        if len(composed) > 16:
            return Permit()  # left as the app wrote it: the server side refuses an unknown destination
        values = command_values(question.command)
        values[Tag.MOVE_DESTINATION] = composed
        return Rewrite(command=encode_command(values))


class ReturnPolicy:
    """The return listener: C-STORE sub-operations from a server agent to an app's storage SCP."""

    def __init__(self, config: WorkstationConfig, journal: AssociationLog) -> None:
        self.config = config
        self.journal = journal

    def decide_now(self, question: Question, connection: ConnectionInfo | None = None) -> Verdict | None:
        if isinstance(question, AcceptQuestion):
            return ForwardAccept()
        if isinstance(question, DimseQuestion):
            return Permit()
        return None

    async def decide(self, question: Question, connection: ConnectionInfo) -> Verdict:
        now = self.decide_now(question)
        if now is not None:
            return now
        assert isinstance(question, AssociationQuestion)
        rq = question.rq
        names = certificate_names(connection.peer_certificate)
        record = {"direction": "return", "called": rq.called_ae, "calling": rq.calling_ae, "server_agent": names}
        if not set(names) & set(self.config.allowed_server_agents):
            self.journal.write(**record, result="refused", reason="not a configured server agent")
            return _reject(f"certificate {names} is not a configured server agent",
                           RejectReason.CALLING_AE_NOT_RECOGNIZED)
        app, _, workstation = rq.called_ae.partition("@")
        scp = self.config.apps.get(app)
        if workstation != self.config.name or scp is None:
            self.journal.write(**record, result="refused", reason="unknown destination")
            return _reject(f"{rq.called_ae!r} is not an app of workstation {self.config.name}",
                           RejectReason.CALLED_AE_NOT_RECOGNIZED)
        self.journal.write(**record, result="forwarded", store_scp=f"{scp[0]}:{scp[1]}")
        return ForwardAssociation(target=Upstream(host=scp[0], port=scp[1]), rq=rq.with_ae_titles(called=app))


def certificate_names(cert: dict[str, Any] | None) -> list[str]:
    """Subject CN and DNS subject-alternative names of a peer certificate (ssl.getpeercert form)."""
    if not cert:
        return []
    names = [value for rdn in cert.get("subject", ()) for key, value in rdn if key == "commonName"]
    names += [value for kind, value in cert.get("subjectAltName", ()) if kind == "DNS"]
    return names
