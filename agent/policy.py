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

from dicomwire.commands import Notice, NoticeKind
from dicomwire.dimse import CommandField, Tag, command_values, encode_command
from dicomwire.errors import RejectReason
from dicomwire.identity import UserIdentity, UserIdentityType, insert_user_identity, strip_user_identity
from dicomwire.policy import NO_REQUEST, Asks, ConnectionInfo, Ending, Forwarding
from dicomwire.questions import (
    AcceptQuestion,
    AcceptVerdict,
    AssociationQuestion,
    AssociationVerdict,
    ForwardAccept,
    ForwardAssociation,
    Permit,
    RejectAssociation,
    RequestQuestion,
    RequestVerdict,
    ResponseQuestion,
    ResponseVerdict,
    Rewrite,
)
from dicomwire.tls import certificate_names
from dicomwire.upstream import AddressHealth, Upstream

from . import messages
from .config import Route, WorkstationConfig
from .notices import Notifier
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
    """Opens one :class:`WorkstationAssociation` per app connection (asks about C-MOVE only, so that
    C-STORE data sets keep the relay's pass-through path)."""

    asks: Asks = frozenset({CommandField.C_MOVE_RQ})

    def __init__(self, config: WorkstationConfig, credentials: Callable[[], Credentials | None],
                 client_ssl: ssl.SSLContext, journal: AssociationLog, owner_uid: int | None = None,
                 notifier: Notifier | None = None) -> None:
        self.config = config
        self.notifier = notifier or Notifier(desktop=False)  # refusals, told to the person (agent.notices)
        self.credentials = credentials
        self.client_ssl = client_ssl
        self.journal = journal
        self.owner_uid = os.getuid() if owner_uid is None and hasattr(os, "getuid") else owner_uid
        self._health: dict[str, AddressHealth] = {}

    def open(self, connection: ConnectionInfo) -> WorkstationAssociation:
        return WorkstationAssociation(self, connection)

    def upstream(self, route: Route) -> Upstream:
        """The route's server agent, with its other addresses to fail over to (``[routes.X] addresses``)."""
        health = self._health.setdefault(route.name, AddressHealth())  # one backoff table per route
        if not route.tls:  # loopback only (the configuration checks), for measuring TLS's cost
            return Upstream(host=route.host, port=route.port, warm=route.warm, fallbacks=route.addresses,
                            connect_timeout=route.connect_timeout, health=health)
        return Upstream(host=route.host, port=route.port, ssl=self.client_ssl, server_hostname=route.server_name,
                        warm=route.warm, fallbacks=route.addresses, connect_timeout=route.connect_timeout,
                        health=health)


class WorkstationAssociation:
    """One app's association: every answer needs no I/O but the owner lookup (one netlink round trip,
    ~30 us, see :mod:`agent.peercred`), so every verdict is given at once."""

    def __init__(self, factory: WorkstationPolicy, connection: ConnectionInfo) -> None:
        self.factory = factory
        self.config = factory.config
        self.connection = connection
        self.app = ""  # the app's own calling AE title, once it asked
        self.owner: int | None = None  # the launch whose app this is (agent.notices), once it asked
        self.route: Route | None = None

    def associate(self, question: AssociationQuestion) -> AssociationVerdict:
        config, connection = self.config, self.connection
        rq = question.rq
        self.app = messages.printable(rq.calling_ae, 16)  # shown on the terminal: never a control character
        record: dict[str, Any] = {"app": rq.calling_ae, "called": rq.called_ae,
                                  "association": connection.association_id,
                                  "peer": f"{connection.peer[0]}:{connection.peer[1]}" if connection.peer else None}

        def refuse(text: str, reason: int = RejectReason.NO_REASON) -> RejectAssociation:
            self.factory.journal.write(**record, result="refused", reason=text)
            return _reject(text, reason)

        if config.check_owner:
            uid = peer_uid(connection.peer, connection.local) if connection.peer and connection.local else None
            record["uid"] = uid
            if uid is None:
                return refuse("the owner of the connecting process could not be determined")
            if uid != self.factory.owner_uid:
                return refuse(f"connection from a process of uid {uid}, not of the logged-in user "
                              f"(uid {self.factory.owner_uid})")
        self.owner = self.factory.notifier.owner(connection.peer, connection.local)  # whose terminal hears
        name, at, route_name = rq.called_ae.partition("@")
        route = config.routes.get(route_name if at else (config.default_route or ""))
        record["route"] = route.name if route else route_name or None
        if route is None or not name:
            self._tell(messages.Refusal(app=self.app, what="the connection", reason=f"the called AE title "
                                        f"{rq.called_ae!r} names no route of this workstation",
                                        step="check the called AE title in the app's settings (PACS@ROUTE)"))
            return refuse(f"called AE title {rq.called_ae!r} names no known route",
                          RejectReason.CALLED_AE_NOT_RECOGNIZED)
        self.route = route
        credentials = self.factory.credentials()
        if credentials is None or credentials.tokens.remaining <= 0:
            self._tell(messages.Refusal(app=self.app, what="the connection", reason="no valid login on this "
                                        "workstation", step=messages.LOG_IN_AGAIN))
            return refuse("no user is logged in (or the session expired)")
        record["user"] = credentials.tokens.username
        identity = self._identity(credentials)
        if identity is None:
            return refuse("identity mode 'password' needs the password: use `dicom-agent launch`")
        app = rq.calling_ae
        calling = app if "@" in app else f"{app}@{config.name}"
        if len(calling) > 16:
            return refuse(f"calling AE title {calling!r} would exceed 16 characters",
                          RejectReason.CALLING_AE_NOT_RECOGNIZED)
        forwarded = insert_user_identity(rq, identity).with_ae_titles(calling=calling)
        self.factory.journal.write(**record, result="forwarded", calling=calling)
        return ForwardAssociation(target=self.factory.upstream(route), rq=forwarded, review_ac=True)

    def _identity(self, credentials: Credentials) -> UserIdentity | None:
        """The User Identity sub-item (PS3.7 D.3.3.7): a JWT, or user and password in password mode."""
        positive = self.config.positive_response
        if self.config.identity == "password":
            if credentials.password is None:
                return None
            return UserIdentity(type=UserIdentityType.USERNAME_AND_PASSCODE,
                                primary=credentials.tokens.username.encode(), secondary=credentials.password.encode(),
                                positive_response_requested=positive)
        return UserIdentity(type=UserIdentityType.JWT, primary=credentials.tokens.access_token.encode(),
                            positive_response_requested=positive)

    def accept(self, question: AcceptQuestion) -> AcceptVerdict:
        stripped = strip_user_identity(question.ac)  # the app never sees 0x59
        return ForwardAccept(ac=stripped if stripped is not question.ac else None)

    def request(self, question: RequestQuestion) -> RequestVerdict:
        """A C-MOVE's Move Destination ``APP`` becomes ``APP@WS``, naming this workstation."""
        destination = question.command.move_destination
        if not destination or "@" in destination:
            return Permit()
        composed = f"{destination}@{self.config.name}"
        if len(composed) > 16:
            return Permit()  # left as the app wrote it: the server side refuses an unknown destination
        values = command_values(question.command)
        values[Tag.MOVE_DESTINATION] = composed
        return Rewrite(command=encode_command(values))

    def response(self, question: ResponseQuestion) -> ResponseVerdict:
        return Permit()  # no response is reviewed here

    def notice(self, notice: Notice) -> None:
        log.info("association %s: %s from the %s: %s", self.connection.association_id, notice.kind.value,
                 notice.side.value, notice.detail)
        if notice.side.value != "server":  # the app's own failures (its storage SCP) are the app's to tell
            return
        route = self.route.name if self.route else "?"
        if notice.kind is NoticeKind.FAILED and notice.command is not None:
            command = notice.command
            failed = command.get(Tag.NUMBER_OF_FAILED_SUBOPERATIONS)
            self._tell(messages.from_comment(self.app, command.name.removesuffix("-RSP"), command.status or 0,
                                             command.error_comment, failed if isinstance(failed, int) else 0))
        elif notice.kind is NoticeKind.REJECTED:
            self._tell(messages.from_reject(self.app, route, notice.code))
        elif notice.kind is NoticeKind.ABORTED:
            self._tell(messages.from_abort(self.app, route))

    def close(self, ending: Ending) -> None:
        if not ending.established and ending.reason.startswith("rejected: upstream unreachable") and self.route:
            where = f"{self.route.host}:{self.route.port}"
            self._tell(messages.unreachable(self.app, self.route.name, where, ending.reason))

    def _tell(self, refusal: messages.Refusal) -> None:
        self.factory.notifier.refused(refusal, self.owner)


class ReturnPolicy:
    """The return listener: C-STORE sub-operations from a server agent to an app's storage SCP.
    Asks about the association only; the C-STOREs stream through (the server agent decided them)."""

    asks: Asks = NO_REQUEST

    def __init__(self, config: WorkstationConfig, journal: AssociationLog) -> None:
        self.config = config
        self.journal = journal

    def open(self, connection: ConnectionInfo) -> ReturnAssociation:
        return ReturnAssociation(self, connection)


class ReturnAssociation(Forwarding):
    """The server agent decided each C-STORE sub-operation: here only where the association goes."""

    def __init__(self, factory: ReturnPolicy, connection: ConnectionInfo) -> None:
        self.factory = factory
        self.connection = connection

    def associate(self, question: AssociationQuestion) -> AssociationVerdict:
        config = self.factory.config
        rq = question.rq
        names = certificate_names(self.connection.peer_certificate)
        record = {"direction": "return", "called": rq.called_ae, "calling": rq.calling_ae, "server_agent": names,
                  "association": self.connection.association_id}
        if not set(names) & set(config.allowed_server_agents):
            self.factory.journal.write(**record, result="refused", reason="not a configured server agent")
            return _reject(f"certificate {names} is not a configured server agent",
                           RejectReason.CALLING_AE_NOT_RECOGNIZED)
        app, _, workstation = rq.called_ae.partition("@")
        entry = config.apps.get(app)
        if workstation != config.name or entry is None:
            self.factory.journal.write(**record, result="refused", reason="unknown destination")
            return _reject(f"{rq.called_ae!r} is not an app of workstation {config.name}",
                           RejectReason.CALLED_AE_NOT_RECOGNIZED)
        scp = entry.store_scp
        self.factory.journal.write(**record, result="forwarded", store_scp=f"{scp[0]}:{scp[1]}")
        return ForwardAssociation(target=Upstream(host=scp[0], port=scp[1]), rq=rq.with_ae_titles(called=app))

    def notice(self, notice: Notice) -> None:
        log.info("return association %s: %s from the %s: %s", self.connection.association_id, notice.kind.value,
                 notice.side.value, notice.detail)

