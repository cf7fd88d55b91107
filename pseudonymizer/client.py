"""The Python client of the pseudonymisation service, on :mod:`oauthclient`'s executors (httpx).

:class:`AsyncPseudonymizerClient` is what the server agent calls from its event loop: it gets its own
client-credentials token from the HIAL (scope ``pseudonyms:translate``, kept until shortly before it
expires, fetched again once on a 401), and asks in batches:

    wanted = deid.needs(header, ts, profile) | deid.needs(other, ts, profile)
    pseudonyms = await client.pseudonyms("STUDY-A", wanted)      # -> deid.Pseudonyms
    reals = await client.originals("STUDY-A", patient_ids=[...], uids=[...])   # -> Originals

:class:`PseudonymizerClient` is the same over the synchronous executor (the CLI, tests), and has
:meth:`~PseudonymizerClient.reidentify` for a trustee's own user token. Requests are built and
answers read by pure functions (``*_request``, ``parse_*``), so both clients share them; an answer
that is not what the API says (a missing value, a wrong type) is a :class:`PseudonymizerError`,
never a partial result: the caller fails closed.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from deid import Needs, PatientPseudonym, Pseudonyms
from oauthclient import (
    AsyncExecutor,
    AsyncOAuthClient,
    ClientCredentialsGrant,
    HttpRequest,
    HttpResponse,
    OAuthClient,
    SyncExecutor,
)

SCOPE_TRANSLATE = "pseudonyms:translate"
SCOPE_REIDENTIFY = "pseudonyms:reidentify"
MAX_ANSWER = 8 * 1024 * 1024  # 10,000 UIDs and their pseudonyms, JSON-quoted
EARLY = 30.0  # seconds before a token's expiry when a new one is fetched


class PseudonymizerError(Exception):
    """The service refused, could not be reached, or answered something else than the API says."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True, kw_only=True)
class Originals:
    """Real values of pseudonyms (absent: the project handed out no such pseudonym)."""

    patient_ids: Mapping[str, str] = field(default_factory=dict)
    uids: Mapping[str, str] = field(default_factory=dict)


def _url(base: str, project: str, action: str) -> str:
    return f"{base.rstrip('/')}/v1/projects/{urllib.parse.quote(project, safe='')}/{action}"


def _post(url: str, token: str, body: dict[str, Any]) -> HttpRequest:
    return HttpRequest(method="POST", url=url, body=json.dumps(body).encode(), max_response=MAX_ANSWER,
                       headers=(("Authorization", f"Bearer {token}"), ("Content-Type", "application/json"),
                                ("Accept", "application/json")))


def pseudonyms_request(base: str, project: str, wanted: Needs, token: str) -> HttpRequest:
    return _post(_url(base, project, "pseudonyms"), token,
                 {"patient_ids": sorted(wanted.patient_ids), "uids": sorted(wanted.uids)})


def originals_request(base: str, project: str, patient_ids: Iterable[str], uids: Iterable[str],
                      token: str) -> HttpRequest:
    return _post(_url(base, project, "originals"), token, {"patient_ids": sorted(set(patient_ids)),
                                                           "uids": sorted(set(uids))})


def reidentify_request(base: str, project: str, token: str, *, reason: str, patient_id: str | None = None,
                       uid: str | None = None) -> HttpRequest:
    body: dict[str, Any] = {"reason": reason}
    body.update({"patient_id": patient_id} if patient_id is not None else {"uid": uid})
    return _post(_url(base, project, "reidentify"), token, body)


def _object(response: HttpResponse) -> dict[str, Any]:
    try:
        data = json.loads(response.body)
    except ValueError:
        data = None
    if response.status != 200:
        detail = data.get("error_description", "") if isinstance(data, dict) else ""
        raise PseudonymizerError(f"HTTP {response.status}: {str(detail)[:200]}", response.status)
    if not isinstance(data, dict):
        raise PseudonymizerError("the answer is not a JSON object", response.status)
    return data


def parse_pseudonyms(response: HttpResponse, wanted: Needs) -> Pseudonyms:
    data = _object(response)
    patients, uids = data.get("patients"), data.get("uids")
    if not isinstance(patients, dict) or not isinstance(uids, dict):
        raise PseudonymizerError("the answer lacks patients or uids")
    found: dict[str, PatientPseudonym] = {}
    for real in wanted.patient_ids:
        entry = patients.get(real)
        if not isinstance(entry, dict) or not isinstance(entry.get("patient_id"), str) or not isinstance(
                entry.get("patient_name"), str) or type(entry.get("date_offset_days")) is not int:
            raise PseudonymizerError("the answer lacks a patient that was asked for")
        found[real] = PatientPseudonym(patient_id=entry["patient_id"], patient_name=entry["patient_name"],
                                       date_offset_days=entry["date_offset_days"])
    if not all(isinstance(uids.get(real), str) for real in wanted.uids):
        raise PseudonymizerError("the answer lacks a UID that was asked for")
    return Pseudonyms(patients=found, uids={real: uids[real] for real in wanted.uids})


def parse_originals(response: HttpResponse) -> Originals:
    data = _object(response)
    patients, uids = data.get("patient_ids"), data.get("uids")
    if not isinstance(patients, dict) or not isinstance(uids, dict):
        raise PseudonymizerError("the answer lacks patient_ids or uids")
    return Originals(patient_ids={k: v for k, v in patients.items() if isinstance(v, str)},
                     uids={k: v for k, v in uids.items() if isinstance(v, str)})


def parse_reidentified(response: HttpResponse) -> str:
    data = _object(response)
    value = data.get("patient_id", data.get("uid"))
    if not isinstance(value, str):
        raise PseudonymizerError("the answer holds no value")
    return value


@dataclass(slots=True)
class _Token:
    value: str = ""
    until: float = 0.0


class AsyncPseudonymizerClient:
    """The server agent's client: its own token (client credentials at the HIAL), one executor per loop."""

    def __init__(self, base_url: str, oauth: AsyncOAuthClient, executor: AsyncExecutor, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.base_url = base_url
        self._oauth = oauth
        self._executor = executor
        self._clock = clock
        self._token = _Token()

    async def _bearer(self, fresh: bool = False) -> str:
        if fresh or not self._token.value or self._clock() >= self._token.until:
            answer = await self._oauth.run(ClientCredentialsGrant(scope=SCOPE_TRANSLATE))
            self._token = _Token(answer.access_token, self._clock() + max((answer.expires_in or 60) - EARLY, 1))
        return self._token.value

    async def _send(self, build: Callable[[str], HttpRequest]) -> HttpResponse:
        response = await self._executor.send(build(await self._bearer()))
        if response.status == 401:  # revoked or rotated: one new token, once
            response = await self._executor.send(build(await self._bearer(fresh=True)))
        return response

    async def pseudonyms(self, project: str, wanted: Needs) -> Pseudonyms:
        if not wanted:
            return Pseudonyms()
        response = await self._send(lambda token: pseudonyms_request(self.base_url, project, wanted, token))
        return parse_pseudonyms(response, wanted)

    async def originals(self, project: str, *, patient_ids: Iterable[str] = (), uids: Iterable[str] = ()) -> Originals:
        patient_ids, uids = list(patient_ids), list(uids)
        response = await self._send(lambda token: originals_request(self.base_url, project, patient_ids, uids, token))
        return parse_originals(response)


class PseudonymizerClient:
    """The same over the synchronous executor; ``oauth`` may be None for :meth:`reidentify` alone."""

    def __init__(self, base_url: str, oauth: OAuthClient | None, executor: SyncExecutor, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.base_url = base_url
        self._oauth = oauth
        self._executor = executor
        self._clock = clock
        self._token = _Token()

    def _bearer(self) -> str:
        if self._oauth is None:
            raise PseudonymizerError("no OAuth client to get a translate token with")
        if not self._token.value or self._clock() >= self._token.until:
            answer = self._oauth.run(ClientCredentialsGrant(scope=SCOPE_TRANSLATE))
            self._token = _Token(answer.access_token, self._clock() + max((answer.expires_in or 60) - EARLY, 1))
        return self._token.value

    def pseudonyms(self, project: str, wanted: Needs) -> Pseudonyms:
        if not wanted:
            return Pseudonyms()
        return parse_pseudonyms(self._executor.send(pseudonyms_request(self.base_url, project, wanted,
                                                                       self._bearer())), wanted)

    def originals(self, project: str, *, patient_ids: Iterable[str] = (), uids: Iterable[str] = ()) -> Originals:
        request = originals_request(self.base_url, project, patient_ids, uids, self._bearer())
        return parse_originals(self._executor.send(request))

    def reidentify(self, project: str, user_token: str, *, reason: str, patient_id: str | None = None,
                   uid: str | None = None) -> str:
        """Re-identify one pseudonym with a trustee's own access token (scope ``pseudonyms:reidentify``)."""
        if (patient_id is None) == (uid is None):
            raise ValueError("give one of patient_id or uid")
        request = reidentify_request(self.base_url, project, user_token, reason=reason, patient_id=patient_id,
                                     uid=uid)
        return parse_reidentified(self._executor.send(request))
