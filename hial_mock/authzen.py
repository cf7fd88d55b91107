"""OpenID AuthZEN Authorization API 1.0 for DICOM actions (standards digest section 8).

Requests are ``{subject, action, resource, context}``; a deny is HTTP 200 with ``decision: false``.
Batch evaluations take top-level values as defaults for each item, keep request order, and honour
``options.evaluations_semantic``. A malformed item in a batch is a per-item deny with
``context.error``; a malformed single request is HTTP 400.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

from .config import User
from .policy import Decision, Policy, Request, evaluate

SEMANTICS = ("execute_all", "deny_on_first_deny", "permit_on_first_permit")


class BadRequest(ValueError):
    """A request AuthZEN calls invalid (HTTP 400)."""


def _object(value: Any, name: str, required: tuple[str, ...]) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise BadRequest(f"{name} must be an object")
    for key in required:
        if not isinstance(value.get(key), str) or not value[key]:
            raise BadRequest(f"{name}.{key} is required (a non-empty string)")
    props = value.get("properties", {})
    if not isinstance(props, dict):
        raise BadRequest(f"{name}.properties must be an object")
    return value


def to_request(body: Mapping[str, Any], users: Mapping[str, User]) -> Request:
    """Reduce an AuthZEN evaluation to a policy :class:`Request`.

    For a subject this HIAL knows, its roles and organization come from the HIAL's own user store
    (authoritative); for others, from ``subject.properties`` as the PEP verified them from the token.
    """
    subject = _object(body.get("subject"), "subject", ("type", "id"))
    action = _object(body.get("action"), "action", ("name",))
    resource = _object(body.get("resource"), "resource", ("type", "id"))
    context = body.get("context", {})
    if not isinstance(context, dict):
        raise BadRequest("context must be an object")
    sprops = subject.get("properties", {})
    rprops = resource.get("properties", {})
    user = users.get(subject["id"]) or users.get(str(sprops.get("username", "")))
    if user is not None:
        roles, organization = user.roles, user.organization
    else:
        raw_roles = sprops.get("roles", [])
        if not isinstance(raw_roles, list) or not all(isinstance(r, str) for r in raw_roles):
            raise BadRequest("subject.properties.roles must be a list of strings")
        roles, organization = tuple(raw_roles), str(sprops.get("organization", ""))
    patient = rprops.get("patient_id")
    if resource["type"] == "patient" and not patient and resource["id"] != "*":
        patient = resource["id"]
    if patient is not None and not isinstance(patient, str):
        raise BadRequest("resource.properties.patient_id must be a string")
    when = dt.datetime.now(dt.UTC)
    if "time" in context:
        try:
            when = dt.datetime.fromisoformat(str(context["time"]).replace("Z", "+00:00"))
        except ValueError:
            raise BadRequest("context.time must be an ISO 8601 date-time") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
    purpose = context.get("purpose_of_use", "TREAT")
    if isinstance(purpose, dict):  # a FHIR Coding, as IUA tokens carry it
        purpose = purpose.get("code", "")
    return Request(
        subject=user.username if user else subject["id"], roles=roles, organization=organization,
        action=action["name"], patient_id=patient or None,
        patient_id_issuer=str(rprops.get("patient_id_issuer", "")), purpose_of_use=str(purpose), time=when,
    )


def evaluation(body: Any, policy: Policy, users: Mapping[str, User]) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    decision = evaluate(policy, to_request(body, users))
    return {"decision": decision.decision, "context": decision.context()}


def evaluations(body: Any, policy: Policy, users: Mapping[str, User],
                on_decision: Callable[[Request, Decision], None] | None = None) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    items = body.get("evaluations")
    options = body.get("options", {})
    if not isinstance(options, dict):
        raise BadRequest("options must be an object")
    semantic = options.get("evaluations_semantic", "execute_all")
    if semantic not in SEMANTICS:
        raise BadRequest(f"options.evaluations_semantic must be one of {', '.join(SEMANTICS)}")
    defaults = {k: body[k] for k in ("subject", "action", "resource", "context") if k in body}
    if items is None:  # no array: behaves as a single evaluation (AuthZEN 1.0 section 7.1)
        return evaluation(body, policy, users)
    if not isinstance(items, list) or len(items) > 1000:
        raise BadRequest("evaluations must be an array of at most 1000 items")
    results: list[dict[str, Any]] = []
    for item in items:
        if not isinstance(item, dict):
            results.append({"decision": False, "context": {"error": {"status": 400, "message": "not an object"}}})
            continue
        merged = {**defaults, **item}
        try:
            request = to_request(merged, users)
        except BadRequest as error:
            results.append({"decision": False, "context": {"error": {"status": 400, "message": str(error)}}})
            if semantic == "deny_on_first_deny":
                break
            continue
        decision = evaluate(policy, request)
        if on_decision is not None:
            on_decision(request, decision)
        results.append({"decision": decision.decision, "context": decision.context()})
        if (semantic == "deny_on_first_deny" and not decision.decision) or \
                (semantic == "permit_on_first_permit" and decision.decision):
            break
    return {"evaluations": results}
