"""The HIAL's pages for people: sign-in at the authorization endpoint and the device verification page.

* ``/authorize``: RFC 6749 section 3.1 and 4.1.1-4.1.2 (OpenID Connect Core 1.0 section 3.1.2): the
  request is validated by authlib (client, redirect URI, PKCE, nonce) before any form is shown, and
  the code is issued only after a login.
* ``/device``: RFC 8628 section 3.3: the user enters (or follows a link with) the user code, logs in
  and approves or denies; the decision is made once.

Logins here come from the browser itself, so their source is the HTTP peer (no ``Forwarded``).
Pages are static HTML with every value escaped, no scripts, framing denied (``X-Frame-Options``) and
forms posting only to ourselves (CSP ``form-action 'self'``).
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

from authlib.oauth2 import OAuth2Error
from flask import Flask, Response, jsonify, request

from .config import ClientConfig
from .forwarded import Source, peer_address
from .oauth.models import Authenticated

if TYPE_CHECKING:
    from .app import Hial

_LOGIN_FIELDS = """
    <label>User <input name="username" autocomplete="username"></label>
    <label>Password <input name="password" type="password" autocomplete="current-password"></label>
    <label>One-time code (if asked) <input name="otp" inputmode="numeric" autocomplete="one-time-code"></label>"""


def register(app: Flask, hial: Hial) -> None:
    @app.route("/authorize", methods=["GET", "POST"])
    def authorize() -> Any:
        return authorize_page(hial)

    @app.route("/device", methods=["GET", "POST"])
    def device() -> Any:
        return device_page(hial)


def form_login(hial: Hial, client: ClientConfig, how: str) -> tuple[Authenticated | None, str]:
    """Log in with the posted form; (user, "") or (None, what to tell the person)."""
    form = request.form
    peer = peer_address(request.remote_addr)
    try:
        user = hial.users.login(form.get("username", ""), form.get("password", ""), form.get("otp") or None,
                                client=client, source=Source(address=peer, peer=peer), how=how)
    except OAuth2Error as error:
        return None, str(error.description)
    return user, ""


def authorize_page(hial: Hial) -> Any:
    server = hial.server
    try:
        grant = server.get_consent_grant(end_user=None)
    except OAuth2Error as error:
        return jsonify(dict(error.get_body())), error.status_code
    problem = ""
    if request.method == "POST":
        user, problem = form_login(hial, grant.client.config, "authorization code")
        if user is not None:
            return server.create_authorization_response(grant_user=user, grant=grant)
    query = html.escape(request.query_string.decode("utf-8", "replace"), quote=True)
    return page("Sign in", f"""
        <p>{html.escape(grant.client.config.name or grant.client.client_id)} asks to act for you
        (scopes: {html.escape(grant.request.scope or "")}).</p>
        <p class="error">{html.escape(problem)}</p>
        <form method="post" action="/authorize?{query}">{_LOGIN_FIELDS}
        <button type="submit">Sign in</button></form>""")


def device_page(hial: Hial) -> Any:
    form = request.form if request.method == "POST" else request.args
    user_code = (form.get("user_code") or "").strip().upper()
    problem = ""
    if request.method == "POST":
        device = hial.devices.pending(user_code)
        client = None if device is None else hial.directory.client(device.client_id)
        if device is None or client is None:
            problem = "unknown or expired code"
        else:
            approve = form.get("action", "approve") == "approve"
            user, problem = form_login(hial, client.config, "device flow")
            if user is not None:
                if not hial.devices.decide(user_code, user, approve):
                    problem = "unknown or expired code"
                else:
                    return page("Done", f"<p>{'Approved' if approve else 'Denied'}. You may close this page.</p>")
    return page("Device sign-in", f"""
        <p class="error">{html.escape(problem)}</p>
        <form method="post" action="/device">
        <label>Code <input name="user_code" value="{html.escape(user_code)}" autocomplete="off"></label>
        {_LOGIN_FIELDS}
        <button name="action" value="approve" type="submit">Approve</button>
        <button name="action" value="deny" type="submit">Deny</button></form>""")


def page(title: str, body: str) -> Response:
    text = f"""<!doctype html><html><head><meta charset="utf-8"><title>HIAL - {html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:28em;margin:3em auto}}label{{display:block;margin:.6em 0}}
input{{width:100%}}.error{{color:#a00}}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>"""
    response = Response(text, mimetype="text/html")
    response.headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"
    response.headers["X-Frame-Options"] = "DENY"
    return response
