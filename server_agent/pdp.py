"""The AuthZEN 1.0 client (standards digest section 8): single and batch evaluations, the agent's own
client-credentials token, and a short, bounded decision cache keyed by the whole request.

Any failure (unreachable, timeout, HTTP error, malformed answer) raises :class:`PdpUnavailable`; the
caller denies (fail closed). A deny is an answer, not an error.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import orjson
import requests

from .config import IdentityConfig, PdpConfig


class PdpUnavailable(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str = ""
    rule_id: str = ""
    policy_version: str = ""
    message: str = ""
    break_glass: bool = False
    obligations: tuple[str, ...] = ()
    cached: bool = False
    context: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_answer(cls, answer: Any) -> Decision:
        if not isinstance(answer, dict) or not isinstance(answer.get("decision"), bool):
            raise PdpUnavailable(f"malformed decision {str(answer)[:200]!r}")
        raw_context = answer.get("context")
        context: dict[str, Any] = raw_context if isinstance(raw_context, dict) else {}
        message = context.get("reason_user", {})
        return cls(allowed=answer["decision"], reason=str(context.get("reason", "")),
                   rule_id=str(context.get("rule_id", "")), policy_version=str(context.get("policy_version", "")),
                   message=str(message.get("en", "")) if isinstance(message, dict) else str(message),
                   break_glass=bool(context.get("break_glass", False)),
                   obligations=tuple(context.get("obligations", ()) or ()), context=context)


class PdpClient:
    def __init__(self, config: PdpConfig, identity: IdentityConfig, http: requests.Session) -> None:
        self.config = config
        self.identity = identity
        self.http = http
        self._token: tuple[str, float] | None = None
        self._token_lock = threading.Lock()
        self._endpoints: dict[str, str] | None = None
        self._cache: OrderedDict[bytes, tuple[float, Decision]] = OrderedDict()
        self._cache_lock = threading.Lock()

    # ---- plumbing ----------------------------------------------------------------------------------------
    def endpoints(self) -> dict[str, str]:
        if self._endpoints is None:
            url = f"{self.config.url}/.well-known/authzen-configuration"
            try:
                meta = self.http.get(url, timeout=self.config.timeout).json()
            except (requests.RequestException, ValueError) as error:
                raise PdpUnavailable(f"PDP metadata unreachable ({url}): {error}") from None
            if meta.get("policy_decision_point") != self.config.url:  # AuthZEN 1.0 section 9.2
                raise PdpUnavailable(f"PDP metadata names {meta.get('policy_decision_point')!r}, not our PDP")
            base = f"{self.config.url}/access/v1"
            self._endpoints = {"one": meta.get("access_evaluation_endpoint", f"{base}/evaluation"),
                               "many": meta.get("access_evaluations_endpoint", f"{base}/evaluations")}
        return self._endpoints

    def _bearer(self) -> str:
        with self._token_lock:
            if self._token is not None and self._token[1] - time.time() > 30:
                return self._token[0]
            try:
                meta = self.http.get(f"{self.identity.issuer}/.well-known/openid-configuration",
                                     timeout=self.config.timeout).json()
                response = self.http.post(meta["token_endpoint"], data={"grant_type": "client_credentials",
                                                                        "scope": "authzen:evaluate"},
                                          auth=(self.identity.client_id, self.identity.client_secret),
                                          timeout=self.config.timeout)
                body = response.json()
                token = body["access_token"]
            except (requests.RequestException, ValueError, KeyError) as error:
                raise PdpUnavailable(f"no client-credentials token for the PDP: {error}") from None
            self._token = (token, time.time() + float(body.get("expires_in", 60)))
            return str(token)

    def _post(self, which: str, body: dict[str, Any]) -> Any:
        endpoint = self.endpoints()[which]
        for attempt in (1, 2):
            try:
                response = self.http.post(endpoint, json=body, timeout=self.config.timeout,
                                          headers={"Authorization": f"Bearer {self._bearer()}"})
            except requests.RequestException as error:
                raise PdpUnavailable(f"PDP unreachable: {error}") from None
            if response.status_code == 401 and attempt == 1:
                self._token = None  # our token expired or the key rotated: get a new one, once
                continue
            if response.status_code != 200:
                raise PdpUnavailable(f"PDP answered HTTP {response.status_code}")
            try:
                return response.json()
            except ValueError:
                raise PdpUnavailable("PDP answered without JSON") from None
        raise PdpUnavailable("PDP refused our credentials")

    # ---- cache ------------------------------------------------------------------------------------------------
    @staticmethod
    def _key(request: dict[str, Any]) -> bytes:
        return orjson.dumps(request, option=orjson.OPT_SORT_KEYS)  # ~1 us; every C-STORE asks

    def _cached(self, key: bytes) -> Decision | None:
        if self.config.cache_seconds <= 0:
            return None
        with self._cache_lock:
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
        with self._cache_lock:
            self._cache[key] = (time.monotonic(), decision)
            while len(self._cache) > self.config.cache_size:
                self._cache.popitem(last=False)

    # ---- evaluation -----------------------------------------------------------------------------------------
    def evaluate_many(self, requests_: list[dict[str, Any]]) -> list[Decision]:
        keys = [self._key(r) for r in requests_]
        results: list[Decision | None] = [self._cached(k) for k in keys]
        missing = [n for n, r in enumerate(results) if r is None]
        if missing:
            if len(missing) == 1:
                answers = [self._post("one", requests_[missing[0]])]
            else:
                answer = self._post("many", {"evaluations": [requests_[n] for n in missing],
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

    def cached(self, request: dict[str, Any]) -> Decision | None:
        return self._cached(self._key(request))

    async def evaluate(self, requests_: list[dict[str, Any]]) -> list[Decision]:
        cached = [self._cached(self._key(r)) for r in requests_]
        if all(c is not None for c in cached):
            return [c for c in cached if c is not None]  # warm cache: no thread hop, no HTTP
        return await asyncio.to_thread(self.evaluate_many, requests_)
