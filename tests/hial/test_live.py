"""Every grant against a live ``hial-mock serve`` on loopback, with authlib's client and pyjwt."""

from __future__ import annotations

import base64
import hashlib
import signal
import time
import urllib.parse

import jwt
import pyotp
import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7636 import create_s256_code_challenge

from devtools.hial import HialProcess

WS = "workstation-agent"
TEST, TEST_SECRET = "test-confidential", "demo-test-secret"
AGENT, AGENT_SECRET = "server-agent", "demo-server-agent-secret"
MFA_SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
REDIRECT = "http://127.0.0.1:8765/callback"


def meta(hial: HialProcess) -> dict:
    return requests.get(f"{hial.issuer}/.well-known/openid-configuration", timeout=10).json()


def verify(hial: HialProcess, token: str, audience: str = "dicom-server-agent") -> dict:
    """What any resource server does: keys from the JWKS found by discovery, iss, aud, exp, alg."""
    jwks = jwt.PyJWKClient(meta(hial)["jwks_uri"], cache_keys=False)
    key = jwks.get_signing_key_from_jwt(token)
    return jwt.decode(token, key.key, algorithms=["RS256"], audience=audience, issuer=hial.issuer,
                      options={"require": ["exp", "iat", "iss", "sub", "aud"]})


def password_token(hial: HialProcess, user: str = "rad", password: str | None = None,
                   scope: str = "openid user/ImagingStudy.rs offline_access", **extra: str) -> dict:
    session = OAuth2Session(WS, scope=scope, token_endpoint_auth_method="none")
    return session.fetch_token(meta(hial)["token_endpoint"], username=user, password=password or f"demo-{user}",
                               **extra)


def test_discovery_and_rfc8414_metadata(hial: HialProcess) -> None:
    oidc = meta(hial)
    assert oidc["issuer"] == hial.issuer
    for key in ("authorization_endpoint", "token_endpoint", "jwks_uri", "userinfo_endpoint", "introspection_endpoint",
                "revocation_endpoint", "device_authorization_endpoint"):
        assert oidc[key].startswith(hial.issuer + "/")
    assert "S256" in oidc["code_challenge_methods_supported"]
    rfc8414 = requests.get(f"{hial.issuer}/.well-known/oauth-authorization-server", timeout=10).json()
    assert rfc8414["issuer"] == hial.issuer and rfc8414["token_endpoint"] == oidc["token_endpoint"]
    keys = requests.get(oidc["jwks_uri"], timeout=10).json()["keys"]
    assert keys and all(k["kty"] == "RSA" and k["alg"] == "RS256" and "d" not in k for k in keys)


def test_password_grant_gives_rfc9068_access_token_and_id_token(hial: HialProcess) -> None:
    token = password_token(hial)
    header = jwt.get_unverified_header(token["access_token"])
    assert header["typ"] == "at+jwt" and header["kid"]
    claims = verify(hial, token["access_token"])
    for claim in ("iss", "sub", "aud", "exp", "iat", "jti", "client_id", "scope"):
        assert claim in claims
    assert (claims["sub"], claims["preferred_username"], claims["roles"], claims["organization"]) == \
        ("rad", "rad", ["radiologist"], "hospital-a")
    assert claims["client_id"] == WS and "user/ImagingStudy.rs" in claims["scope"].split()
    assert claims["exp"] - claims["iat"] == 300  # the configured default lifetime
    id_claims = verify(hial, token["id_token"], audience=WS)
    digest = hashlib.sha256(token["access_token"].encode()).digest()[:16]
    assert id_claims["at_hash"] == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert "password" not in hial.log.lower().replace("password grant", "")


def test_client_credentials(hial: HialProcess) -> None:
    session = OAuth2Session(AGENT, AGENT_SECRET, scope="authzen:evaluate")
    token = session.fetch_token(meta(hial)["token_endpoint"], grant_type="client_credentials")
    claims = verify(hial, token["access_token"])
    assert claims["sub"] == AGENT and "refresh_token" not in token


def test_authorization_code_with_pkce_and_nonce(hial: HialProcess) -> None:
    oidc = meta(hial)
    session = OAuth2Session(TEST, TEST_SECRET, scope="openid profile", redirect_uri=REDIRECT,
                            code_challenge_method="S256")
    verifier = "v" * 20 + base64.urlsafe_b64encode(hashlib.sha256(b"x").digest()).decode().rstrip("=")
    url, state = session.create_authorization_url(oidc["authorization_endpoint"], code_verifier=verifier,
                                                  nonce="n-0S6_WzA2Mj")
    page = requests.get(url, timeout=10)
    assert page.status_code == 200 and "Sign in" in page.text
    query = urllib.parse.urlsplit(url).query
    login = requests.post(f"{hial.issuer}/authorize?{query}", data={"username": "rad", "password": "demo-rad"},
                          allow_redirects=False, timeout=10)
    assert login.status_code == 302, login.text
    location = login.headers["Location"]
    assert location.startswith(REDIRECT)
    token = session.fetch_token(oidc["token_endpoint"], authorization_response=location, code_verifier=verifier,
                                state=state)
    id_claims = verify(hial, token["id_token"], audience=TEST)
    assert id_claims["nonce"] == "n-0S6_WzA2Mj" and id_claims["sub"] == "rad"
    # The code is single use.
    code = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)["code"][0]
    again = requests.post(oidc["token_endpoint"], auth=(TEST, TEST_SECRET), timeout=10,
                          data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
                                "code_verifier": verifier})
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


def test_authorization_code_without_pkce_or_with_wrong_verifier_fails(hial: HialProcess) -> None:
    oidc = meta(hial)
    plain = requests.get(oidc["authorization_endpoint"], params={"response_type": "code", "client_id": TEST,
                                                                 "redirect_uri": REDIRECT, "scope": "openid"},
                         timeout=10)
    assert plain.status_code == 400 and plain.json()["error"] == "invalid_request"
    verifier = "a" * 50
    params = {"response_type": "code", "client_id": TEST, "redirect_uri": REDIRECT, "scope": "openid",
              "code_challenge": create_s256_code_challenge(verifier), "code_challenge_method": "S256"}
    login = requests.post(f"{oidc['authorization_endpoint']}?{urllib.parse.urlencode(params)}",
                          data={"username": "rad", "password": "demo-rad"}, allow_redirects=False, timeout=10)
    code = urllib.parse.parse_qs(urllib.parse.urlsplit(login.headers["Location"]).query)["code"][0]
    wrong = requests.post(oidc["token_endpoint"], auth=(TEST, TEST_SECRET), timeout=10,
                          data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
                                "code_verifier": "b" * 50})
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"


def test_refresh_tokens_rotate(hial: HialProcess) -> None:
    first = password_token(hial)
    session = OAuth2Session(WS, token=first, token_endpoint_auth_method="none")
    second = session.refresh_token(meta(hial)["token_endpoint"], refresh_token=first["refresh_token"])
    assert second["refresh_token"] != first["refresh_token"]
    assert verify(hial, second["access_token"])["sub"] == "rad"
    reuse = requests.post(meta(hial)["token_endpoint"], timeout=10, data={
        "grant_type": "refresh_token", "refresh_token": first["refresh_token"], "client_id": WS})
    assert reuse.status_code == 400 and reuse.json()["error"] == "invalid_grant"
    # RFC 9700 4.14.2: a rotated refresh token came back, so two parties hold the session: it ends.
    after = requests.post(meta(hial)["token_endpoint"], timeout=10, data={
        "grant_type": "refresh_token", "refresh_token": second["refresh_token"], "client_id": WS})
    assert after.status_code == 400 and after.json()["error"] == "invalid_grant"


def test_a_token_carries_only_scopes_its_client_may_have(hial: HialProcess) -> None:
    asked = "openid user/ImagingStudy.rs user/ImagingStudy.crs system/*.cruds authzen:evaluate patient/ImagingStudy.rs"
    token = password_token(hial, scope=asked)
    assert token["scope"].split() == ["openid", "user/ImagingStudy.rs"]
    assert verify(hial, token["access_token"])["scope"] == "openid user/ImagingStudy.rs"


def test_tokens_name_the_current_key_and_one_session(hial: HialProcess) -> None:
    token = password_token(hial)
    kids = [k["kid"] for k in requests.get(meta(hial)["jwks_uri"], timeout=10).json()["keys"]]
    assert jwt.get_unverified_header(token["access_token"])["kid"] == kids[-1]
    assert jwt.get_unverified_header(token["id_token"])["kid"] == kids[-1]
    access, id_token = verify(hial, token["access_token"]), verify(hial, token["id_token"], audience=WS)
    assert access["sid"] == id_token["sid"] and access["auth_time"] == id_token["auth_time"]
    assert access["amr"] == id_token["amr"] == ["pwd"]
    other = password_token(hial)
    assert verify(hial, other["access_token"])["sid"] != access["sid"], "each login is its own session"


def test_device_flow_with_verification_page(hial: HialProcess) -> None:
    oidc = meta(hial)
    start = requests.post(oidc["device_authorization_endpoint"], timeout=10,
                          data={"client_id": WS, "scope": "openid user/ImagingStudy.rs"}).json()
    assert start["verification_uri"] == f"{hial.issuer}/device" and start["interval"] == 1
    poll = {"grant_type": "urn:ietf:params:oauth:grant-type:device_code", "device_code": start["device_code"],
            "client_id": WS}
    pending = requests.post(oidc["token_endpoint"], data=poll, timeout=10)
    assert pending.status_code == 400 and pending.json()["error"] == "authorization_pending"
    too_fast = requests.post(oidc["token_endpoint"], data=poll, timeout=10)
    assert too_fast.json()["error"] == "slow_down"
    page = requests.get(start["verification_uri_complete"], timeout=10)
    assert start["user_code"] in page.text
    # The MFA user approves on the page with a TOTP code.
    approve = requests.post(start["verification_uri"], timeout=10, data={
        "user_code": start["user_code"], "username": "mfarad", "password": "demo-mfarad",
        "otp": pyotp.TOTP(MFA_SECRET).now(), "action": "approve"})
    assert "Approved" in approve.text
    time.sleep(1.1)
    token = requests.post(oidc["token_endpoint"], data=poll, timeout=10).json()
    claims = verify(hial, token["access_token"])
    assert claims["sub"] == "mfarad" and "otp" in claims["amr"]


def test_mfa_in_password_grant(hial: HialProcess) -> None:
    endpoint = meta(hial)["token_endpoint"]
    data = {"grant_type": "password", "client_id": WS, "username": "mfarad", "password": "demo-mfarad"}
    missing = requests.post(endpoint, data=data, timeout=10)
    assert missing.status_code == 400 and missing.json()["mfa_required"] is True
    wrong = requests.post(endpoint, data={**data, "otp": "000000"}, timeout=10)
    assert wrong.json()["error"] == "invalid_grant" and "mfa_required" not in wrong.json()
    code = pyotp.TOTP(MFA_SECRET).at(time.time() + 30)  # the next step's code: not used by another test
    ok = requests.post(endpoint, data={**data, "otp": code}, timeout=10)
    assert ok.status_code == 200, ok.text
    assert verify(hial, ok.json()["access_token"])["amr"] == ["pwd", "otp", "mfa"]
    replay = requests.post(endpoint, data={**data, "otp": code}, timeout=10)
    assert replay.status_code == 400, "a TOTP code must not work twice"


def test_introspection_and_revocation(hial: HialProcess) -> None:
    oidc = meta(hial)
    token = password_token(hial)
    introspect = lambda t, **kw: requests.post(oidc["introspection_endpoint"], auth=(AGENT, AGENT_SECRET),  # noqa: E731
                                               data={"token": t, **kw}, timeout=10).json()
    active = introspect(token["access_token"])
    assert active["active"] is True and active["username"] == "rad" and active["client_id"] == WS
    assert introspect(token["refresh_token"], token_type_hint="refresh_token")["active"] is True
    # A client that may not introspect learns nothing.
    other = requests.post(oidc["introspection_endpoint"], auth=(TEST, TEST_SECRET),
                          data={"token": token["access_token"]}, timeout=10).json()
    assert other == {"active": False}
    # Logout: the workstation revokes its access token; the whole session goes.
    revoked = requests.post(oidc["revocation_endpoint"], data={"token": token["access_token"], "client_id": WS},
                            timeout=10)
    assert revoked.status_code == 200
    assert introspect(token["access_token"]) == {"active": False}
    assert introspect(token["refresh_token"]) == {"active": False}
    refresh = requests.post(oidc["token_endpoint"], timeout=10, data={
        "grant_type": "refresh_token", "refresh_token": token["refresh_token"], "client_id": WS})
    assert refresh.json()["error"] == "invalid_grant"
    # RFC 7009 2.2: an unknown token is still 200.
    assert requests.post(oidc["revocation_endpoint"], data={"token": "nonsense", "client_id": WS},
                         timeout=10).status_code == 200


def test_userinfo(hial: HialProcess) -> None:
    token = password_token(hial)
    info = requests.get(meta(hial)["userinfo_endpoint"], timeout=10,
                        headers={"Authorization": f"Bearer {token['access_token']}"}).json()
    assert info["sub"] == "rad" and info["roles"] == ["radiologist"]
    bad = requests.get(meta(hial)["userinfo_endpoint"], headers={"Authorization": "Bearer x.y.z"}, timeout=10)
    assert bad.status_code == 401


def test_wrong_audience_and_expired_tokens_fail(fresh_hial: HialProcess) -> None:
    token = password_token(fresh_hial)
    with pytest.raises(jwt.InvalidAudienceError):
        verify(fresh_hial, token["access_token"], audience="some-other-service")
    time.sleep(3)  # the fixture's lifetime is 2 s
    with pytest.raises(jwt.ExpiredSignatureError):
        verify(fresh_hial, token["access_token"])
    info = requests.post(meta(fresh_hial)["introspection_endpoint"], auth=(AGENT, AGENT_SECRET), timeout=10,
                         data={"token": token["access_token"]}).json()
    assert info == {"active": False}


def test_key_rotation_keeps_old_tokens_valid(fresh_hial: HialProcess) -> None:
    before = password_token(fresh_hial)["access_token"]
    old_kid = jwt.get_unverified_header(before)["kid"]
    fresh_hial.signal(signal.SIGUSR1)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        after = password_token(fresh_hial)["access_token"]
        if jwt.get_unverified_header(after)["kid"] != old_kid:
            break
        time.sleep(0.1)
    assert jwt.get_unverified_header(after)["kid"] != old_kid
    kids = {k["kid"] for k in requests.get(meta(fresh_hial)["jwks_uri"], timeout=10).json()["keys"]}
    assert old_kid in kids and len(kids) == 2
    verify(fresh_hial, before)
    verify(fresh_hial, after)


def test_lockout_after_repeated_failures(hial: HialProcess) -> None:
    endpoint = meta(hial)["token_endpoint"]
    data = {"grant_type": "password", "client_id": WS, "username": "tech"}
    for _ in range(3):
        bad = requests.post(endpoint, data={**data, "password": "guess-Xy7"}, timeout=10)
        assert bad.json()["error"] == "invalid_grant"
    locked = requests.post(endpoint, data={**data, "password": "demo-tech"}, timeout=10)
    assert locked.status_code == 400 and "locked until" in locked.json()["error_description"]
    time.sleep(0.3)
    assert hial.log.count("login failed user=tech client=workstation-agent source=127.0.0.1") == 3
    assert "now locked: too many failed logins for this user from this address until" in hial.log
    assert "login refused user=tech client=workstation-agent source=127.0.0.1" in hial.log
    assert "guess-Xy7" not in hial.log and "demo-tech" not in hial.log


@pytest.mark.parametrize(("data", "auth", "error"), [
    ({}, None, "unsupported_grant_type"),
    ({"grant_type": "password", "client_id": WS, "username": "rad"}, None, "invalid_request"),
    ({"grant_type": "password", "client_id": "nobody-knows", "username": "rad", "password": "x"}, None,
     "invalid_client"),
    ({"grant_type": "client_credentials"}, (TEST, "wrong-secret"), "invalid_client"),
    ({"grant_type": "client_credentials", "client_id": WS}, None, "invalid_client"),  # public client
    ({"grant_type": "authorization_code", "code": "nope", "redirect_uri": REDIRECT}, (TEST, TEST_SECRET),
     "invalid_grant"),
    ({"grant_type": "refresh_token", "refresh_token": "nope"}, (TEST, TEST_SECRET), "invalid_grant"),
    ({"grant_type": "urn:ietf:params:oauth:grant-type:device_code", "client_id": WS}, None, "invalid_request"),
    ({"grant_type": "password", "username": "rad", "password": "demo-rad"}, (AGENT, "demo-server-agent-secret"),
     None),  # allowed: the server agent's type-2 flow
    ({"grant_type": "client_credentials"}, (AGENT, AGENT_SECRET), None),
])
def test_bad_token_requests_get_rfc6749_errors(hial: HialProcess, data: dict, auth: tuple | None,
                                               error: str | None) -> None:
    response = requests.post(meta(hial)["token_endpoint"], data=data, auth=auth, timeout=10)
    if error is None:
        assert response.status_code == 200, response.text
        return
    assert response.status_code in (400, 401), response.text
    assert response.json()["error"] == error


def test_unauthorized_client_for_grant(hial: HialProcess) -> None:
    # server-agent is not allowed the device grant.
    response = requests.post(meta(hial)["device_authorization_endpoint"], auth=(AGENT, AGENT_SECRET),
                             data={"scope": "openid"}, timeout=10)
    start = response.json()
    poll = requests.post(meta(hial)["token_endpoint"], auth=(AGENT, AGENT_SECRET), timeout=10, data={
        "grant_type": "urn:ietf:params:oauth:grant-type:device_code", "device_code": start.get("device_code", "x")})
    assert poll.json()["error"] == "unauthorized_client"


def test_garbage_never_gives_a_500(hial: HialProcess) -> None:
    cases = [
        ("post", "/token", {"data": b"\xff\xfe\x00garbage",
                            "headers": {"Content-Type": "application/x-www-form-urlencoded"}}),
        ("post", "/token", {"data": "grant_type=password&username=" + "a" * 100000}),
        ("post", "/introspect", {"data": {"token": "x"}}),
        ("post", "/revoke", {"data": {}}),
        ("post", "/device_authorization", {"data": {"client_id": "nobody"}}),
        ("get", "/authorize", {"params": {"client_id": "nobody"}}),
        ("post", "/device", {"data": {"user_code": "NOPE"}}),
        ("post", "/access/v1/evaluation", {"data": "{not json"}),
        ("get", "/userinfo", {}),
        ("post", "/token", {"data": b"x" * (3 * 1024 * 1024)}),
    ]
    for method, path, kwargs in cases:
        response = getattr(requests, method)(f"{hial.issuer}{path}", timeout=10, **kwargs)
        assert response.status_code < 500, (path, response.status_code, response.text[:200])


def test_sighup_reload_refuses_a_bad_policy_and_keeps_running(hial: HialProcess) -> None:
    policy = hial.folder / "policy.toml"
    original = policy.read_text()
    try:
        policy.write_text(original.replace('actions = ["C-ECHO", "C-STORE"]', 'actions = ["C-FLY"]'))
        hial.signal(signal.SIGHUP)
        time.sleep(0.5)
        assert "reload refused" in hial.log and "roles.technologist.actions" in hial.log
        assert requests.get(f"{hial.issuer}/health", timeout=10).json()["policy_version"] == "demo-2026-11-22"
        policy.write_text(original.replace('version = "demo-2026-11-22"', 'version = "demo-2026-11-23"'))
        hial.signal(signal.SIGHUP)
        time.sleep(0.5)
        assert requests.get(f"{hial.issuer}/health", timeout=10).json()["policy_version"] == "demo-2026-11-23"
    finally:
        policy.write_text(original)
        hial.signal(signal.SIGHUP)
        time.sleep(0.3)
