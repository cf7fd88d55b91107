"""The pseudonymisation service's HTTP API and its composition root (Flask, like the HIAL).

| method, path | who | does |
|---|---|---|
| ``GET /healthz`` | anyone | ``{"status": "ok"}`` |
| ``POST /v1/projects/{id}/pseudonyms`` | translate client | real Patient IDs, UIDs -> pseudonyms (recorded) |
| ``POST /v1/projects/{id}/originals`` | translate client | pseudonyms -> real values (``null``: unknown) |
| ``POST /v1/projects/{id}/reidentify`` | trustee | one pseudonym -> its real value, with a reason |

Who: an RFC 6750 bearer token of the HIAL with audience ``pseudonymizer``. A *translate client* is a
configured OAuth client (the server agents) with its own token (client credentials), scope
``pseudonyms:translate``; a *trustee* is a user whose token carries a configured re-identification
role and scope ``pseudonyms:reidentify``.

Bodies are JSON objects read strictly (no duplicate members, at most ``max_values`` values, each
checked); errors are ``{"error", "error_description"}`` with the status RFC 6750 section 3.1 gives
(401 ``invalid_token`` with ``WWW-Authenticate``, 403 ``insufficient_scope``), 400 for a malformed
body, 404 for an unknown project or pseudonym, 507 when the reverse mapping is full, 503 when the
HIAL's keys cannot be had. Every answer, refusals included, is written to the access log.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, request

from . import derive
from .accesslog import AccessLog
from .config import SCOPE_REIDENTIFY, SCOPE_TRANSLATE, Project, ServiceConfig
from .keys import KeyRing
from .store import Collision, ReverseMap, StoreFull
from .tokens import AuthError, Caller, ProviderKeys, Verifier, forbidden

MAX_BODY = 4 * 1024 * 1024  # 10,000 values of 64 characters, JSON-quoted, with room to spare
MAX_REASON = 200
# A Patient ID as latin-1 text (LO: 64 characters, up to 4 bytes each in a multi-byte character set);
# a UID (PS3.5 9.1: 64 characters). Backslash is PS3.5's value separator: never inside one value.
LIMITS = {"patient": 256, "uid": 64}


class BadRequest(Exception):
    status = 400


class NotFound(Exception):
    status = 404


class Pseudonymizer:
    """Everything one running service holds, wired once here (house rule 8)."""

    def __init__(self, config: ServiceConfig, *, verifier: Verifier | None = None) -> None:
        self.config = config
        self.keys = KeyRing(config.server.state_dir)
        self.store = ReverseMap(config.server.state_dir / "mapping.sqlite3", config.limits.max_entries)
        self.log = AccessLog(config.server.access_log_path)
        self.verifier = verifier or Verifier(config.identity, ProviderKeys(config.identity))
        self.app = Flask("pseudonymizer")
        self.app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
        self.app.add_url_rule("/healthz", "healthz", lambda: {"status": "ok"})
        for name, handler in (("pseudonyms", self.pseudonyms), ("originals", self.originals),
                              ("reidentify", self.reidentify)):
            self.app.add_url_rule(f"/v1/projects/<project_id>/{name}", name, self._endpoint(name, handler),
                                  methods=["POST"])

    def close(self) -> None:
        self.store.close()
        self.log.close()

    def _endpoint(self, action: str, handler: Callable[[Caller, Project, dict[str, Any]], tuple[dict[str, Any],
                                                                                           dict[str, Any]]]
                  ) -> Callable[[str], Response]:
        def view(project_id: str) -> Response:
            caller: Caller | None = None
            record: dict[str, Any] = {"action": action, "project": project_id[:64],
                                      "source": request.remote_addr or ""}
            try:
                caller = self.verifier.caller(request.headers.get("Authorization"))
                project = self.config.projects.get(project_id)
                if project is None:
                    raise NotFound(f"no project {project_id[:64]!r}")
                body, logged = handler(caller, project, _body())
                record.update(logged)
                return self._answer(200, body, record, caller)
            except AuthError as error:
                return self._answer(error.status, _error(error.error, error.description), record, caller,
                                    authenticate=error.status == 401)
            except (BadRequest, NotFound) as error:
                return self._answer(error.status, _error("invalid_request" if error.status == 400 else "not_found",
                                                         str(error)), record, caller)
            except StoreFull as error:
                return self._answer(507, _error("insufficient_storage", str(error)), record, caller)
            except Collision as error:
                return self._answer(500, _error("server_error", str(error)), record, caller)
        return view

    def _answer(self, status: int, body: dict[str, Any], record: dict[str, Any], caller: Caller | None, *,
                authenticate: bool = False) -> Response:
        record["status"] = status
        record["who"] = caller.describe() if caller else None
        if status != 200:
            record["error"] = body.get("error_description", "")[:200]
        self.log.write(record)
        response = Response(json.dumps(body, separators=(",", ":")), status=status, mimetype="application/json")
        response.headers["Cache-Control"] = "no-store"  # real values in answers: never cached (RFC 9111 5.2.2.5)
        if authenticate:
            response.headers["WWW-Authenticate"] = f'Bearer error="invalid_token", scope="{SCOPE_TRANSLATE}"'
        return response

    # ---- the three actions --------------------------------------------------------------------------------
    def _translator(self, caller: Caller) -> None:
        if caller.is_user or caller.client_id not in self.config.access.translate_clients:
            raise forbidden("only the server agents' own clients may translate pseudonyms")
        if SCOPE_TRANSLATE not in caller.scopes:
            raise forbidden(f"the token lacks scope {SCOPE_TRANSLATE}")

    def pseudonyms(self, caller: Caller, project: Project, body: dict[str, Any]) -> tuple[dict[str, Any],
                                                                                         dict[str, Any]]:
        self._translator(caller)
        patient_ids, uids = self._values(body, ("patient_ids", "uids"))
        key = self.keys.key(project.scope)
        patients = {real: derive.patient(key, real, project.prefix) for real in patient_ids}
        new_uids = {real: derive.uid(key, real, project.uid_root) for real in uids}
        self.store.record(project.scope, [*(("patient", p.patient_id, real) for real, p in patients.items()),
                                          *(("uid", new, real) for real, new in new_uids.items())])
        answer = {"patients": {real: {"patient_id": p.patient_id, "patient_name": p.patient_name,
                                      "date_offset_days": p.date_offset_days} for real, p in patients.items()},
                  "uids": new_uids}
        return answer, {"patient_ids": len(patients), "uids": len(new_uids)}

    def originals(self, caller: Caller, project: Project, body: dict[str, Any]) -> tuple[dict[str, Any],
                                                                                        dict[str, Any]]:
        self._translator(caller)
        patient_ids, uids = self._values(body, ("patient_ids", "uids"))
        found_patients = self.store.originals(project.scope, "patient", patient_ids)
        found_uids = self.store.originals(project.scope, "uid", uids)
        answer = {"patient_ids": {p: found_patients.get(p) for p in patient_ids},
                  "uids": {u: found_uids.get(u) for u in uids}}
        return answer, {"patient_ids": len(patient_ids), "uids": len(uids),
                        "unknown": len(patient_ids) + len(uids) - len(found_patients) - len(found_uids)}

    def reidentify(self, caller: Caller, project: Project, body: dict[str, Any]) -> tuple[dict[str, Any],
                                                                                         dict[str, Any]]:
        """A separate, audited action (issue 16 item 4): a person with the role, one value, a reason."""
        trustees = project.reidentify_roles or self.config.access.reidentify_roles  # a project's own, if named
        if not caller.is_user or not set(caller.roles) & trustees:
            raise forbidden(f"re-identification in project {project.project_id} is for users with its "
                            "re-identification role")
        if SCOPE_REIDENTIFY not in caller.scopes:
            raise forbidden(f"the token lacks scope {SCOPE_REIDENTIFY}")
        if set(body) - {"patient_id", "uid", "reason"} or len(set(body) & {"patient_id", "uid"}) != 1:
            raise BadRequest("give one of patient_id or uid, and a reason")
        kind, field = ("patient", "patient_id") if "patient_id" in body else ("uid", "uid")
        pseudonym = _value(body[field], kind)
        reason = body.get("reason")
        if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON:
            raise BadRequest(f"a reason of 1-{MAX_REASON} characters is required")
        logged = {"pseudonym": pseudonym, "kind": kind, "reason": reason}
        real = self.store.originals(project.scope, kind, [pseudonym]).get(pseudonym)
        if real is None:
            raise NotFound(f"project {project.project_id} handed out no such {kind} pseudonym")
        return {field: real}, logged

    def _values(self, body: dict[str, Any], names: tuple[str, str]) -> tuple[list[str], list[str]]:
        if set(body) - set(names):
            raise BadRequest(f"unknown members; known: {', '.join(names)}")
        lists = []
        for name, kind in zip(names, ("patient", "uid"), strict=True):
            values = body.get(name, [])
            if not isinstance(values, list):
                raise BadRequest(f"{name} must be an array")
            lists.append(list(dict.fromkeys(_value(v, kind) for v in values)))
        if sum(len(values) for values in lists) > self.config.limits.max_values:
            raise BadRequest(f"more than {self.config.limits.max_values} values in one call")
        return lists[0], lists[1]


def _value(value: object, kind: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= LIMITS[kind]:
        raise BadRequest(f"a {kind} value must be a string of 1-{LIMITS[kind]} characters")
    top = "\x7e" if kind == "uid" else "\xff"
    if any(not " " <= c <= top or c in "\\\x7f" for c in value):
        raise BadRequest(f"a {kind} value holds a character it may not")
    return value


def _body() -> dict[str, Any]:
    if request.mimetype != "application/json":
        raise BadRequest("the body must be application/json")
    try:
        data = json.loads(request.get_data(cache=False), object_pairs_hook=_no_duplicates,
                          parse_constant=_no_constant)
    except (ValueError, RecursionError) as error:
        raise BadRequest(f"not a JSON object: {str(error)[:80]}") from None
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    return data


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"member {key[:40]!r} appears twice")  # one reading (house style)
        seen[key] = value
    return seen


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _error(code: str, description: str) -> dict[str, Any]:
    return {"error": code, "error_description": description[:300]}
