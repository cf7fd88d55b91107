"""The HIAL's machine-facing HTTP endpoints (the table in :mod:`hial_mock.app`), on Flask.

The OAuth endpoints hand the request to authlib's server (:mod:`hial_mock.oauth.server`); discovery
and JWKS answer from the composition root; ``/userinfo`` (OpenID Connect Core 1.0 section 5.3) and the
AuthZEN PDP (sections 6 and 7) take RFC 6750 bearer tokens we issued. Every answer is ``no-store``;
an unexpected error is a JSON ``server_error``, never a stack trace.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from . import authzen
from .config import User
from .policy import Policy

if TYPE_CHECKING:
    from .app import Hial

log = logging.getLogger("hial_mock")

Handler = Callable[[Any, Policy, Mapping[str, User]], Any]


def register(app: Flask, hial: Hial) -> None:
    _register_common(app)
    _register_metadata(app, hial)
    _register_oauth(app, hial)

    @app.route("/userinfo", methods=["GET", "POST"])
    def userinfo() -> Any:
        return _userinfo(hial)

    @app.post("/access/v1/evaluation")
    def evaluation() -> Any:
        return _pdp(hial, authzen.evaluation)

    @app.post("/access/v1/evaluations")
    def evaluations() -> Any:
        return _pdp(hial, authzen.evaluations)


def _register_common(app: Flask) -> None:
    @app.after_request
    def no_store(response: Response) -> Response:
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        if request.headers.get("X-Request-ID"):
            response.headers["X-Request-ID"] = request.headers["X-Request-ID"][:128]
        return response

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> tuple[Response, int]:
        return jsonify(error="invalid_request", error_description=error.description), error.code or 400

    @app.errorhandler(Exception)
    def crash(error: Exception) -> tuple[Response, int]:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return jsonify(error="server_error", error_description="internal error"), 500


def _register_metadata(app: Flask, hial: Hial) -> None:
    @app.get("/.well-known/openid-configuration")
    def discovery() -> Response:
        return jsonify(hial.metadata())

    @app.get("/.well-known/oauth-authorization-server")
    def as_metadata() -> Response:
        return jsonify(hial.metadata())

    @app.get("/.well-known/authzen-configuration")
    def authzen_metadata() -> Response:
        return jsonify({"policy_decision_point": hial.issuer,
                        "access_evaluation_endpoint": f"{hial.issuer}/access/v1/evaluation",
                        "access_evaluations_endpoint": f"{hial.issuer}/access/v1/evaluations"})

    @app.get("/jwks")
    def jwks() -> Response:
        response = jsonify(hial.keys.jwks())
        response.headers["Cache-Control"] = "public, max-age=60"
        return response

    @app.get("/health")
    def health() -> Response:
        return jsonify(status="ok", policy_version=hial.config.policy.version)


def _register_oauth(app: Flask, hial: Hial) -> None:
    server = hial.server

    @app.post("/token")
    def token() -> Response:
        return server.create_token_response()  # type: ignore[no-any-return]

    @app.post("/introspect")
    def introspect() -> Response:
        return server.create_endpoint_response("introspection")  # type: ignore[no-any-return]

    @app.post("/revoke")
    def revoke() -> Response:
        return server.create_endpoint_response("revocation")  # type: ignore[no-any-return]

    @app.post("/device_authorization")
    def device_authorization() -> Response:
        return server.create_endpoint_response("device_authorization")  # type: ignore[no-any-return]


def _invalid_token(description: str | None = None) -> tuple[Response, int]:
    body = {"error": "invalid_token"} if description is None else \
        {"error": "invalid_token", "error_description": description}
    response = jsonify(body)
    response.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'  # RFC 6750 3.1
    return response, 401


def _userinfo(hial: Hial) -> Any:
    claims = hial.bearer()
    if claims is None or "openid" not in str(claims.get("scope", "")).split():
        return _invalid_token()
    user = hial.directory.active(str(claims["sub"]))
    if user is None:
        return _invalid_token()
    info = {"sub": user.username, "preferred_username": user.username, "roles": list(user.roles),
            "organization": user.organization}
    if user.name:
        info["name"] = user.name
    if user.email and "email" in str(claims.get("scope", "")).split():
        info["email"] = user.email
    return jsonify(info)


def _pdp(hial: Hial, handler: Handler) -> Any:
    claims = hial.bearer()
    if claims is None:  # not ours: perhaps a trusted foreign issuer's, for one of its listed clients
        if hial.foreign_caller() is None:
            return _invalid_token("a valid client-credentials token is required")
    else:
        client = hial.directory.client(str(claims.get("client_id", "")))
        if client is None or not client.config.may_evaluate:
            return jsonify(error="insufficient_scope", error_description="this client may not ask the PDP"), 403
    body = request.get_json(silent=True)
    if body is None:
        return jsonify(error="invalid_request", error_description="the body must be JSON"), 400
    try:
        return jsonify(handler(body, hial.config.policy, hial.config.users))
    except authzen.BadRequest as error:
        return jsonify(error="invalid_request", error_description=str(error)), 400
