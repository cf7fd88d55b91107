"""The HIAL's composition root: configuration, keys, state and the Flask application.

Routes (all relative to the issuer):

| path | spec |
|---|---|
| ``/.well-known/openid-configuration`` | OpenID Connect Discovery 1.0 section 4 |
| ``/.well-known/oauth-authorization-server`` | RFC 8414 section 3 |
| ``/.well-known/authzen-configuration`` | AuthZEN 1.0 section 9 (PDP metadata) |
| ``/jwks`` | RFC 7517 |
| ``/token`` | RFC 6749 section 3.2 (grants: see :mod:`hial_mock.oauth`) |
| ``/authorize`` | RFC 6749 section 3.1, with a login form |
| ``/device_authorization``, ``/device`` | RFC 8628 sections 3.1 and 3.3 |
| ``/introspect``, ``/revoke`` | RFC 7662, RFC 7009 |
| ``/userinfo`` | OpenID Connect Core 1.0 section 5.3 |
| ``/access/v1/evaluation(s)`` | AuthZEN 1.0 sections 6 and 7 |
"""

from __future__ import annotations

import html
import logging
import threading
import time
from dataclasses import replace
from typing import Any

import jwt
from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749.errors import InvalidGrantError
from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from . import authzen, oauth
from .config import HialConfig, User, load_config
from .errors import ConfigError
from .keys import ALGORITHM, KeyStore
from .passwords import DUMMY_HASH, verify_password
from .state import Lockout, State

log = logging.getLogger("hial_mock")
audit = logging.getLogger("hial_mock.auth")

# Largest request body accepted: AuthZEN batches of 1000 items fit well below it.
MAX_BODY = 2 * 1024 * 1024
SCOPES_SUPPORTED = ["openid", "profile", "email", "offline_access", "user/ImagingStudy.rs", "user/ImagingStudy.c",
                    "user/ImagingStudy.crs", "patient/ImagingStudy.rs", "authzen:evaluate"]


class Hial:
    """Everything one running HIAL holds; the Flask app and authlib's server are built from it."""

    def __init__(self, config: HialConfig, issuer: str | None = None) -> None:
        self.config = config
        self.issuer = issuer or config.server.issuer or f"http://{config.server.host}:{config.server.port}"
        longest = max(config.server.access_token_lifetime, config.server.id_token_lifetime)
        self.keys = KeyStore(config.server.state_dir, keep_retired_for=longest + 60)
        self.state = State()
        self.lockout = Lockout(config.lockout)
        self.tokens = oauth.TokenGenerator(self)
        self._used_otps: dict[str, int] = {}
        self._otp_lock = threading.Lock()
        self.app = self._build_app()

    # ---- configuration ----------------------------------------------------------------------------
    def reload(self) -> bool:
        """Re-read every file (SIGHUP). A bad file is refused, named, and the running config stays."""
        try:
            new = load_config(self.config.path)
        except ConfigError as error:
            log.error("reload refused, keeping the running configuration: %s", error)
            return False
        if new.server != self.config.server:
            log.warning("reload: [server] changes need a restart; users, clients and policy were reloaded")
            new = replace(new, server=self.config.server)
        self.config = new
        log.info("reloaded: %d users, %d clients, policy version %s", len(new.users), len(new.clients),
                 new.policy.version)
        return True

    # ---- authentication -----------------------------------------------------------------------------
    def login(self, username: str, password: str, otp: str | None, *, client_id: str, how: str) -> oauth.Authenticated:
        """Check a user's password (and TOTP if flagged), with lockout; raises invalid_grant on failure."""
        keys = (f"user:{username}", f"client:{client_id}")
        delay = 0.0
        for key in keys:
            locked, wait = self.lockout.status(key)
            if locked:
                audit.warning("login refused (%s locked) user=%s client=%s via %s from %s", key.split(":")[0],
                              username, client_id, how, request.remote_addr)
                raise InvalidGrantError("too many failed logins: temporarily locked, try again later")
            delay = max(delay, wait)
        if delay:
            time.sleep(delay)  # slow down guessing (bounded in Lockout.status)
        user: User | None = self.config.users.get(username)
        good = verify_password(password, user.password_hash if user else DUMMY_HASH)
        if not good or user is None or user.disabled:
            self._failed(keys, username, client_id, how, "unknown user" if user is None else
                         "account disabled" if user.disabled and good else "wrong password")
            raise InvalidGrantError("invalid username or password")
        amr = ["pwd"]
        if user.totp_secret:
            if not otp:
                audit.info("login needs a one-time password user=%s client=%s via %s", username, client_id, how)
                raise oauth.MfaRequiredError("this user must also give a one-time password (otp)")
            if not oauth.verify_totp(user.totp_secret, otp) or not self._fresh_otp(username, otp):
                self._failed(keys, username, client_id, how, "wrong one-time password")
                raise InvalidGrantError("invalid one-time password")
            amr += ["otp", "mfa"]
        for key in keys:
            self.lockout.success(key)
        audit.info("login ok user=%s client=%s via %s amr=%s", username, client_id, how, ",".join(amr))
        return oauth.Authenticated(user, tuple(amr), int(time.time()), self.state.sessions.new())

    def _failed(self, keys: tuple[str, ...], username: str, client_id: str, how: str, why: str) -> None:
        locked = [k.split(":")[0] for k in keys if self.lockout.failure(k)]
        audit.warning("login failed user=%s client=%s via %s from %s: %s%s", username, client_id, how,
                      request.remote_addr, why, f"; now locked: {', '.join(locked)}" if locked else "")

    def _fresh_otp(self, username: str, code: str) -> bool:
        """Refuse a TOTP code already used (RFC 6238 section 5.2: one use per time step)."""
        key = f"{username}:{code}"
        now = int(time.time())
        with self._otp_lock:
            self._used_otps = {k: t for k, t in self._used_otps.items() if now - t < 120}
            if key in self._used_otps:
                return False
            self._used_otps[key] = now
            return True

    # ---- token checks for our own resource endpoints ---------------------------------------------
    def decode_own_token(self, token: str, *, verify_exp: bool = True) -> dict[str, Any] | None:
        try:
            header = jwt.get_unverified_header(token)
            key = self.keys.public_key(str(header.get("kid", "")))
            if key is None:
                return None
            claims: dict[str, Any] = jwt.decode(token, key, algorithms=[ALGORITHM], issuer=self.issuer,
                                                options={"verify_aud": False, "verify_exp": verify_exp,
                                                         "require": ["exp", "iat", "jti", "sub"]})
            return claims
        except jwt.PyJWTError:
            return None

    def bearer(self) -> dict[str, Any] | None:
        """The verified, unrevoked claims of the request's bearer access token (RFC 6750 2.1)."""
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return None
        claims = self.decode_own_token(header[7:].strip())
        if claims is None:
            return None
        record = self.state.access.get(str(claims["jti"]))
        if record is None or record.is_revoked():
            return None
        return claims

    # ---- the application -----------------------------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        i = self.issuer
        return {
            "issuer": i,
            "authorization_endpoint": f"{i}/authorize",
            "token_endpoint": f"{i}/token",
            "userinfo_endpoint": f"{i}/userinfo",
            "jwks_uri": f"{i}/jwks",
            "introspection_endpoint": f"{i}/introspect",
            "revocation_endpoint": f"{i}/revoke",
            "device_authorization_endpoint": f"{i}/device_authorization",
            "scopes_supported": SCOPES_SUPPORTED,
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "password", "client_credentials", "refresh_token",
                                      "urn:ietf:params:oauth:grant-type:device_code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [ALGORITHM],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "code_challenge_methods_supported": ["S256"],
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "amr", "name", "email",
                                 "preferred_username", "roles", "organization"],
        }

    def _build_app(self) -> Flask:
        app = Flask("hial_mock")
        app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
        hial = self

        server = AuthorizationServer(app, query_client=self._query_client, save_token=lambda token, req: None)
        server.hial = self  # the grants reach the HIAL through their server
        server.register_token_generator("default", self.tokens)
        server.register_grant(oauth.PasswordGrant)
        server.register_grant(oauth.ClientCredentialsGrant)
        server.register_grant(oauth.CodeGrant, [oauth.pkce()])
        server.register_grant(oauth.RotatingRefreshGrant)
        server.register_grant(oauth.DeviceGrant)
        server.register_endpoint(oauth.DeviceAuthorization(server))
        server.register_endpoint(oauth.Introspection)
        server.register_endpoint(oauth.Revocation)
        server.scopes_supported = None  # checked per client (get_allowed_scope)
        self.server = server

        def code_grant_hooks(grant: Any) -> None:
            grant.register_hook("after_create_token_response", oauth._nonce_hook)

        # authlib builds a grant per request; hook our nonce handling into each code grant.
        original = server.get_token_grant

        def get_token_grant(req: Any) -> Any:
            grant = original(req)
            if isinstance(grant, oauth.CodeGrant):
                code_grant_hooks(grant)
            return grant

        server.get_token_grant = get_token_grant

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

        @app.route("/device", methods=["GET", "POST"])
        def device() -> Any:
            return hial._device_page()

        @app.route("/authorize", methods=["GET", "POST"])
        def authorize() -> Any:
            return hial._authorize_page()

        @app.route("/userinfo", methods=["GET", "POST"])
        def userinfo() -> Any:
            claims = hial.bearer()
            if claims is None or "openid" not in str(claims.get("scope", "")).split():
                response = jsonify(error="invalid_token")
                response.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
                return response, 401
            user = hial.config.users.get(str(claims["sub"]))
            if user is None:
                return jsonify(error="invalid_token"), 401
            info = {"sub": user.username, "preferred_username": user.username, "roles": list(user.roles),
                    "organization": user.organization}
            if user.name:
                info["name"] = user.name
            if user.email and "email" in str(claims.get("scope", "")).split():
                info["email"] = user.email
            return jsonify(info)

        @app.post("/access/v1/evaluation")
        def evaluation() -> Any:
            return hial._pdp(authzen.evaluation)

        @app.post("/access/v1/evaluations")
        def evaluations() -> Any:
            return hial._pdp(authzen.evaluations)

        return app

    def _query_client(self, client_id: str) -> oauth.Client | None:
        config = self.config.clients.get(client_id)
        return None if config is None else oauth.Client(config)

    def _pdp(self, handler: Any) -> Any:
        claims = self.bearer()
        if claims is None:
            response = jsonify(error="invalid_token", error_description="a valid client-credentials token is required")
            response.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
            return response, 401
        client = self.config.clients.get(str(claims.get("client_id", "")))
        if client is None or not client.may_evaluate:
            return jsonify(error="insufficient_scope", error_description="this client may not ask the PDP"), 403
        body = request.get_json(silent=True)
        if body is None:
            return jsonify(error="invalid_request", error_description="the body must be JSON"), 400
        try:
            return jsonify(handler(body, self.config.policy, self.config.users))
        except authzen.BadRequest as error:
            return jsonify(error="invalid_request", error_description=str(error)), 400

    # ---- pages for people -------------------------------------------------------------------------------
    def _form_login(self, client_id: str, how: str) -> tuple[oauth.Authenticated | None, str]:
        form = request.form
        try:
            return self.login(form.get("username", ""), form.get("password", ""), form.get("otp") or None,
                              client_id=client_id, how=how), ""
        except OAuth2Error as error:
            return None, str(error.description)

    def _authorize_page(self) -> Any:
        try:
            grant = self.server.get_consent_grant(end_user=None)
        except OAuth2Error as error:
            return jsonify(dict(error.get_body())), error.status_code
        if request.method == "POST":
            user, problem = self._form_login(grant.client.client_id, "authorization code")
            if user is not None:
                return self.server.create_authorization_response(grant_user=user)
        else:
            problem = ""
        query = html.escape(request.query_string.decode(), quote=True)
        return _page("Sign in", f"""
            <p>{html.escape(grant.client.config.name or grant.client.client_id)} asks to act for you
            (scopes: {html.escape(grant.request.payload.scope or "")}).</p>
            <p class="error">{html.escape(problem)}</p>
            <form method="post" action="/authorize?{query}">{_LOGIN_FIELDS}
            <button type="submit">Sign in</button></form>""")

    def _device_page(self) -> Any:
        form = request.form if request.method == "POST" else request.args
        user_code = (form.get("user_code") or "").strip().upper()
        problem = ""
        if request.method == "POST":
            entry = self.state.user_codes.get(user_code)
            if entry is None:
                problem = "unknown or expired code"
            else:
                device = self.state.devices.get(entry["device_code"]) or {}
                approve = form.get("action", "approve") == "approve"
                user, problem = self._form_login(str(device.get("client_id", "?")), "device flow")
                if user is not None:
                    entry["grant"] = (user, approve)
                    return _page("Done", f"<p>{'Approved' if approve else 'Denied'}. You may close this page.</p>")
        return _page("Device sign-in", f"""
            <p class="error">{html.escape(problem)}</p>
            <form method="post" action="/device">
            <label>Code <input name="user_code" value="{html.escape(user_code)}" autocomplete="off"></label>
            {_LOGIN_FIELDS}
            <button name="action" value="approve" type="submit">Approve</button>
            <button name="action" value="deny" type="submit">Deny</button></form>""")


_LOGIN_FIELDS = """
    <label>User <input name="username" autocomplete="username"></label>
    <label>Password <input name="password" type="password" autocomplete="current-password"></label>
    <label>One-time code (if asked) <input name="otp" inputmode="numeric" autocomplete="one-time-code"></label>"""


def _page(title: str, body: str) -> Response:
    text = f"""<!doctype html><html><head><meta charset="utf-8"><title>HIAL - {html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:28em;margin:3em auto}}label{{display:block;margin:.6em 0}}
input{{width:100%}}.error{{color:#a00}}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>"""
    response = Response(text, mimetype="text/html")
    response.headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"
    response.headers["X-Frame-Options"] = "DENY"
    return response
