"""The HIAL's composition root: configuration, keys, state, the login, the OAuth server, the Flask app.

Routes (all relative to the issuer; see :mod:`hial_mock.routes` and :mod:`hial_mock.pages`):

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

import logging
from dataclasses import replace
from typing import Any

from flask import Flask, request

from . import pages, routes
from .backchannel import LogoutSender
from .config import HialConfig, load_config
from .errors import ConfigError
from .foreign import ForeignCaller, ForeignTokens
from .keys import ALGORITHM, Issuer, KeyStore
from .lockout import Lockout
from .login import Authenticator, Directory
from .oauth.server import OAuthServer
from .passwords import Verifier
from .state import CodeStore, DeviceStore, TokenStore

log = logging.getLogger("hial_mock")

# Largest request body accepted: AuthZEN batches of 1000 items fit well below it.
MAX_BODY = 2 * 1024 * 1024
SCOPES_SUPPORTED = ["openid", "profile", "email", "offline_access", "user/ImagingStudy.rs", "user/ImagingStudy.c",
                    "user/ImagingStudy.crs", "patient/ImagingStudy.rs", "authzen:evaluate"]


class Hial:
    """Everything one running HIAL holds, wired once here (house rule 8)."""

    def __init__(self, config: HialConfig, issuer: str | None = None) -> None:
        self.config = config
        server = config.server
        self.issuer = issuer or server.issuer or f"http://{server.host}:{server.port}"
        longest = max(server.access_token_lifetime, server.id_token_lifetime)
        self.keys = KeyStore(server.state_dir, keep_retired_for=longest + 60)
        self.signer = Issuer(self.issuer, self.keys)
        passwords = Verifier()  # one bound on concurrent scrypt checks: user passwords and client secrets
        self.directory = Directory(config.users, config.clients, check_password=passwords)
        self.lockout = Lockout(config.lockout)
        self.users = Authenticator(self.directory, self.lockout, check_password=passwords)
        self.tokens = TokenStore()
        self.logouts = LogoutSender(self.signer, lambda: self.config.clients)
        self.tokens.on_session_end = self.logouts.session_ended
        self.codes = CodeStore(nonce_lifetime=max(server.authorization_code_lifetime, server.id_token_lifetime))
        self.devices = DeviceStore()
        self.foreign = ForeignTokens(config.foreign)
        self.app = Flask("hial_mock")
        self.app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
        self.server = OAuthServer(self.app, settings=server, clients=self.directory, users=self.users,
                                  signer=self.signer, tokens=self.tokens, codes=self.codes, devices=self.devices,
                                  break_glass_roles=self.break_glass_roles)
        routes.register(self.app, self)
        pages.register(self.app, self)

    def reload(self) -> bool:
        """Re-read every file (SIGHUP). A bad file is refused, named, and the running config stays."""
        try:
            new = load_config(self.config.path)
        except ConfigError as error:
            log.error("reload refused, keeping the running configuration: %s", error)
            return False
        if new.server != self.config.server or new.lockout != self.config.lockout:
            log.warning("reload: [server] and [lockout] changes need a restart; users, clients and policy "
                        "were reloaded")
            new = replace(new, server=self.config.server, lockout=self.config.lockout)
        locked = [name for name, user in self.config.users.items()
                  if not user.disabled and (name not in new.users or new.users[name].disabled)]
        self.config = new
        self.directory.replace(new.users, new.clients)
        self.foreign = ForeignTokens(new.foreign)
        for name in locked:  # OIDC Back-Channel Logout: every session of a locked account ends at the agents
            self.logouts.user_locked(name)
        log.info("reloaded: %d users, %d clients, policy version %s", len(new.users), len(new.clients),
                 new.policy.version)
        return True

    def break_glass_roles(self) -> frozenset[str]:
        """The roles the policy file lets use purpose of use BTG (read per request: SIGHUP reloads it)."""
        return frozenset(name for name, role in self.config.policy.roles.items() if role.break_glass)

    def bearer(self) -> dict[str, Any] | None:
        """The verified claims of the request's unrevoked bearer access token (RFC 6750 2.1), or None."""
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return None
        token = header[7:].strip()
        claims = self.signer.read_access_token(token)
        if claims is None or self.tokens.active_access(token) is None:
            return None
        return claims

    def foreign_caller(self) -> ForeignCaller | None:
        """A PDP caller proven by an access token of a ``[foreign.NAME]`` issuer (issue 14), or None."""
        header = request.headers.get("Authorization", "")
        return self.foreign.caller(header[7:].strip()) if header.startswith("Bearer ") else None

    def metadata(self) -> dict[str, Any]:
        """OpenID Connect Discovery 1.0 section 3 and RFC 8414 section 2 (with RFC 8628 section 4)."""
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
                                      "urn:ietf:params:oauth:grant-type:device_code",
                                      "urn:ietf:params:oauth:grant-type:token-exchange"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [ALGORITHM],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "code_challenge_methods_supported": ["S256"],
            "backchannel_logout_supported": True,  # OIDC Back-Channel Logout 1.0 section 2.1
            "backchannel_logout_session_supported": True,
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "amr", "name", "email",
                                 "preferred_username", "roles", "organization", "sid"],
        }
