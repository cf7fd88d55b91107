"""The AuthZEN 1.0 client (standards digest section 8): single and batch evaluations, the agent's own
client-credentials token (RFC 6749 section 4.4, through :mod:`oauthclient`), and a short, bounded
decision cache keyed by the whole request.

All HTTP runs on the agent's event loop (the executor it is given); requests are built and answers
read by the pure functions below. The agent's bearer token comes from its :class:`Credentials`
(issue 14: the PDP need not trust the identity provider): client credentials at some authorization
server (:class:`ClientCredentials`, whichever client authentication its ``AsyncOAuthClient`` uses,
RFC 8705 ``tls_client_auth`` included) or a token an operator placed in a file (:class:`TokenFile`).
Any failure (unreachable, timeout, HTTP error, malformed answer) raises :class:`PdpUnavailable`; the
caller denies (fail closed). A deny is an answer, not an error.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson

from oauthclient import AsyncExecutor, AsyncOAuthClient, ClientCredentialsGrant, OAuthClientError, Timeouts
from oauthclient.errors import printable
from oauthclient.http import HttpRequest, HttpResponse, get_request, json_object, secure_url

from .config import PdpConfig
from .deidview import DeidView, read_obligations

PDP_SCOPE = "authzen:evaluate"
TOKEN_MARGIN = 30.0  # seconds before its expiry our PDP token is replaced
DEFAULT_TOKEN_LIFETIME = 60.0  # when the token response names no expires_in
# A batch answer holds one decision per question (at most the policy's batch size, 64) with its context.
MAX_ANSWER = 1024 * 1024
MAX_TOKEN_FILE = 16 * 1024  # a JWT access token with many claims is a few KiB
TOKEN_FILE_RECHECK = 10.0  # seconds between readings of a token file (and at once after a 401)
# RFC 6750 section 2.1 b64token: anything else (a newline above all) must not reach a header.
B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


class PdpUnavailable(Exception):
    """No decision could be had (the caller denies, 0124H/A801H, reason "authorization service unavailable")."""


class Credentials(Protocol):
    async def bearer(self, timeouts: Timeouts) -> tuple[str, float]:
        """A bearer token for the PDP and the time (``time.time``) it is to be replaced by."""


@dataclass(frozen=True, slots=True)
class ClientCredentials:
    """RFC 6749 section 4.4 at the authorization server ``oauth`` names, as the client it holds."""

    oauth: AsyncOAuthClient
    scope: str = PDP_SCOPE

    async def bearer(self, timeouts: Timeouts) -> tuple[str, float]:
        try:
            response = await self.oauth.run(ClientCredentialsGrant(scope=self.scope), timeouts)
        except OAuthClientError as error:
            raise PdpUnavailable(f"no client-credentials token for the PDP from {self.oauth.issuer}: "
                                 f"{error}") from None
        return _checked(response.access_token), time.time() + (response.expires_in or DEFAULT_TOKEN_LIFETIME)


@dataclass(frozen=True, slots=True)
class TokenFile:
    """A bearer token an operator (or a sidecar renewing it) keeps in a file: read again every
    :data:`TOKEN_FILE_RECHECK` seconds and after the PDP refuses it. Never logged."""

    path: Path

    async def bearer(self, timeouts: Timeouts) -> tuple[str, float]:
        try:  # a few KiB from a local file: not worth a thread
            with self.path.open("rb") as file:
                raw = file.read(MAX_TOKEN_FILE + 1)
        except OSError as error:
            raise PdpUnavailable(f"PDP token file {self.path}: {error.strerror or error}") from None
        if len(raw) > MAX_TOKEN_FILE:
            raise PdpUnavailable(f"PDP token file {self.path} is over {MAX_TOKEN_FILE} bytes")
        try:
            token = _checked(raw.decode("ascii").strip())
        except (UnicodeDecodeError, PdpUnavailable):
            raise PdpUnavailable(f"PDP token file {self.path} holds no bearer token (RFC 6750 b64token)") from None
        return token, time.time() + TOKEN_MARGIN + TOKEN_FILE_RECHECK


def _checked(token: str) -> str:
    if not B64TOKEN.fullmatch(token):
        raise PdpUnavailable("the PDP bearer token is not an RFC 6750 b64token")
    return token


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str = ""
    rule_id: str = ""
    policy_version: str = ""
    message: str = ""
    break_glass: bool = False
    obligations: tuple[str, ...] = ()  # their names (the decision log's list)
    cached: bool = False
    context: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    deid: DeidView | None = None  # the research view a ``de-identify`` obligation asks for
    obligation_problem: str = ""  # an obligation that could not be read: a permit is refused

    @classmethod
    def from_answer(cls, answer: Any) -> Decision:
        if not isinstance(answer, dict) or not isinstance(answer.get("decision"), bool):
            raise PdpUnavailable(f"malformed decision {str(answer)[:200]!r}")
        raw_context = answer.get("context")
        context: dict[str, Any] = raw_context if isinstance(raw_context, dict) else {}
        message = context.get("reason_user", {})
        obligations = read_obligations(context.get("obligations"))
        return cls(allowed=answer["decision"], reason=str(context.get("reason", "")),
                   rule_id=str(context.get("rule_id", "")), policy_version=str(context.get("policy_version", "")),
                   message=str(message.get("en", "")) if isinstance(message, dict) else str(message),
                   break_glass=bool(context.get("break_glass", False)),
                   obligations=obligations.names, context=context, deid=obligations.deid,
                   obligation_problem=obligations.problem)


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoints:
    one: str  # access_evaluation_endpoint (AuthZEN 1.0 section 6)
    many: str  # access_evaluations_endpoint (section 7)


def metadata_request(url: str) -> HttpRequest:
    """AuthZEN 1.0 section 9.1: the PDP's metadata."""
    return get_request(f"{url}/.well-known/authzen-configuration")


def parse_metadata(url: str, response: HttpResponse) -> Endpoints:
    """Section 9.2: the document must name our PDP; its endpoints must be https (or loopback http)."""
    try:
        meta = json_object(response, "PDP metadata")
    except OAuthClientError as error:
        raise PdpUnavailable(str(error)) from None
    if response.status != 200 or meta.get("policy_decision_point") != url:
        raise PdpUnavailable(f"PDP metadata (HTTP {response.status}) names "
                             f"{printable(str(meta.get('policy_decision_point')), 100)!r}, not our PDP")
    base = f"{url}/access/v1"
    endpoints = Endpoints(one=meta.get("access_evaluation_endpoint", f"{base}/evaluation"),
                          many=meta.get("access_evaluations_endpoint", f"{base}/evaluations"))
    for endpoint in (endpoints.one, endpoints.many):
        if not isinstance(endpoint, str) or not secure_url(endpoint, url):
            raise PdpUnavailable(f"PDP metadata names an endpoint our token may not go to: "
                                 f"{printable(str(endpoint), 100)!r}")
    return endpoints


def evaluation_request(endpoint: str, body: dict[str, Any], bearer: str) -> HttpRequest:
    return HttpRequest(method="POST", url=endpoint, body=orjson.dumps(body), max_response=MAX_ANSWER,
                       headers=(("Content-Type", "application/json"), ("Accept", "application/json"),
                                ("Authorization", f"Bearer {bearer}")))


# RFC 6750 section 3.1: what a refusal of our token says to the operator who configured [pdp].
_REFUSED = {401: ": it does not accept our token (does it trust [pdp] auth's issuer and client?)",
            403: ": our client may not ask it"}


def parse_answer(response: HttpResponse) -> Any:
    if response.status != 200:
        raise PdpUnavailable(f"PDP answered HTTP {response.status}{_REFUSED.get(response.status, '')}")
    try:
        return json_object(response, "PDP answer")
    except OAuthClientError as error:
        raise PdpUnavailable(str(error)) from None


class PdpClient:
    def __init__(self, config: PdpConfig, tokens: AsyncOAuthClient | Credentials, http: AsyncExecutor) -> None:
        self.config = config
        # our own token: from an authorization server by client credentials, or from a file
        self.tokens = ClientCredentials(tokens, config.scope) if isinstance(tokens, AsyncOAuthClient) else tokens
        self.http = http
        self.timeouts = Timeouts.within(config.timeout)
        self._token: tuple[str, float] | None = None
        self._token_lock: asyncio.Lock | None = None
        self._endpoints: Endpoints | None = None
        self._cache: OrderedDict[bytes, tuple[float, Decision]] = OrderedDict()

    # ---- plumbing ----------------------------------------------------------------------------------------
    async def _send(self, request: HttpRequest) -> HttpResponse:
        try:
            return await self.http.send(request, self.timeouts)
        except OAuthClientError as error:
            raise PdpUnavailable(f"PDP unreachable: {error}") from None

    async def endpoints(self) -> Endpoints:
        if self._endpoints is None:
            self._endpoints = parse_metadata(self.config.url, await self._send(metadata_request(self.config.url)))
        return self._endpoints

    async def _bearer(self) -> str:
        if self._token_lock is None:
            self._token_lock = asyncio.Lock()
        async with self._token_lock:  # many questions at once: one token request
            if self._token is not None and self._token[1] - time.time() > TOKEN_MARGIN:
                return self._token[0]
            self._token = await self.tokens.bearer(self.timeouts)
            return self._token[0]

    async def _post(self, endpoint: str, body: dict[str, Any]) -> Any:
        for attempt in (1, 2):
            response = await self._send(evaluation_request(endpoint, body, await self._bearer()))
            if response.status == 401 and attempt == 1:
                self._token = None  # our token expired or the key rotated: get a new one, once
                continue
            return parse_answer(response)
        raise PdpUnavailable("PDP refused our credentials")

    # ---- cache ------------------------------------------------------------------------------------------------
    @staticmethod
    def _key(request: dict[str, Any]) -> bytes:
        return orjson.dumps(request, option=orjson.OPT_SORT_KEYS)  # ~1 us; every C-STORE asks

    def _cached(self, key: bytes) -> Decision | None:
        if self.config.cache_seconds <= 0:
            return None
        entry = self._cache.get(key)
        if entry is None:
            return None
        if time.monotonic() - entry[0] > self.config.cache_seconds:
            del self._cache[key]
            return None
        self._cache.move_to_end(key)
        return dataclasses.replace(entry[1], cached=True)

    def _remember(self, key: bytes, decision: Decision) -> None:
        if self.config.cache_seconds <= 0:
            return
        self._cache[key] = (time.monotonic(), decision)
        while len(self._cache) > self.config.cache_size:
            self._cache.popitem(last=False)

    # ---- evaluation -----------------------------------------------------------------------------------------
    def cached(self, request: dict[str, Any]) -> Decision | None:
        return self._cached(self._key(request))

    async def evaluate(self, requests_: list[dict[str, Any]]) -> list[Decision]:
        """One decision per request, from the cache or the PDP (one call: single or batch)."""
        keys = [self._key(r) for r in requests_]
        results: list[Decision | None] = [self._cached(k) for k in keys]
        missing = [n for n, r in enumerate(results) if r is None]
        if missing:
            endpoints = await self.endpoints()
            if len(missing) == 1:
                answers = [await self._post(endpoints.one, requests_[missing[0]])]
            else:
                answer = await self._post(endpoints.many, {"evaluations": [requests_[n] for n in missing],
                                                           "options": {"evaluations_semantic": "execute_all"}})
                batch = answer.get("evaluations") if isinstance(answer, dict) else None
                if not isinstance(batch, list) or len(batch) != len(missing):
                    raise PdpUnavailable("PDP answered a batch with the wrong number of decisions")
                answers = batch
            for n, raw in zip(missing, answers, strict=True):
                decision = Decision.from_answer(raw)
                results[n] = decision
                self._remember(keys[n], decision)
        return [r for r in results if r is not None]


PROBE = {"subject": {"type": "user", "id": "check-config", "properties": {"roles": []}},
         "action": {"name": "C-ECHO"}, "resource": {"type": "service", "id": "*"},
         "context": {"purpose_of_use": "TREAT"}}


async def probe(pdp: PdpClient) -> Decision:
    """For ``check-config`` (issue 14 item 7): metadata, our token and one evaluation, uncached. Its
    answer (permit or deny) proves the chain; :class:`PdpUnavailable` names the broken link."""
    endpoints = await pdp.endpoints()
    return Decision.from_answer(await pdp._post(endpoints.one, PROBE))
