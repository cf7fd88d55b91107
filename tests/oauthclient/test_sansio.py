"""The sans-I/O layer as tables: the request each operation builds, byte for byte, and what each
response reads as: a typed result, or the RFC error with its code, description, status and extras."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from oauthclient import (
    AuthMethod,
    ClientAuth,
    ClientCredentialsGrant,
    DeviceAuthorizationRequest,
    DeviceCodeGrant,
    DevicePolling,
    IntrospectionRequest,
    JwksRequest,
    OAuthError,
    PasswordGrant,
    Pending,
    ProviderMetadata,
    RefreshGrant,
    ResponseError,
    RevocationRequest,
    TokenExchangeGrant,
    TokenResponse,
    discovery,
    forwarded_for,
)
from oauthclient.device import parse_device_authorization
from oauthclient.discovery import parse_jwks
from oauthclient.http import HttpResponse
from oauthclient.introspection import parse_introspection, parse_revocation
from oauthclient.token import parse_token_response

ISSUER = "https://idp.example.org"
META = ProviderMetadata(issuer=ISSUER, token_endpoint=f"{ISSUER}/token", jwks_uri=f"{ISSUER}/jwks",
                        device_authorization_endpoint=f"{ISSUER}/device", introspection_endpoint=f"{ISSUER}/introspect",
                        revocation_endpoint=f"{ISSUER}/revoke")
AGENT = ClientAuth(client_id="server-agent", method=AuthMethod.CLIENT_SECRET_BASIC, secret="s3cret")
PUBLIC = ClientAuth(client_id="workstation-agent", method=AuthMethod.NONE)
POSTED = ClientAuth(client_id="server-agent", method=AuthMethod.CLIENT_SECRET_POST, secret="s3cret")
MTLS = ClientAuth(client_id="ct01", method=AuthMethod.TLS_CLIENT_AUTH)
BASIC = "Basic " + base64.b64encode(b"server-agent:s3cret").decode()
FORM = "application/x-www-form-urlencoded"


def respond(status: int, body: Any, raw: bytes | None = None) -> HttpResponse:
    return HttpResponse(status=status, headers=(("Content-Type", "application/json"),),
                        body=raw if raw is not None else json.dumps(body).encode())


# ---- requests ---------------------------------------------------------------------------------------------

REQUESTS = [
    ("password, basic, Forwarded IPv4", PasswordGrant(username="rad", password="pw d&", scope="openid",
                                                      forwarded_for="192.0.2.43"), AGENT,
     f"{ISSUER}/token", b"grant_type=password&username=rad&password=pw+d%26&scope=openid",
     {"Authorization": BASIC, "Forwarded": 'for="192.0.2.43"', "Content-Type": FORM}),
    ("password with otp, public", PasswordGrant(username="mfarad", password="p", scope="openid", otp="123456"),
     PUBLIC, f"{ISSUER}/token",
     b"grant_type=password&username=mfarad&password=p&scope=openid&otp=123456&client_id=workstation-agent",
     {"Authorization": None, "Forwarded": None}),
    ("refresh, public", RefreshGrant(refresh_token="r-1"), PUBLIC, f"{ISSUER}/token",
     b"grant_type=refresh_token&refresh_token=r-1&client_id=workstation-agent", {"Authorization": None}),
    ("client credentials, post", ClientCredentialsGrant(scope="authzen:evaluate"), POSTED, f"{ISSUER}/token",
     b"grant_type=client_credentials&scope=authzen%3Aevaluate&client_id=server-agent&client_secret=s3cret",
     {"Authorization": None}),
    ("device authorization", DeviceAuthorizationRequest(scope="openid"), PUBLIC, f"{ISSUER}/device",
     b"scope=openid&client_id=workstation-agent", {}),
    ("device code poll", DeviceCodeGrant(device_code="dc"), PUBLIC, f"{ISSUER}/token",
     b"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Adevice_code&device_code=dc&client_id=workstation-agent",
     {}),
    ("introspection, basic", IntrospectionRequest(token="a.b.c"), AGENT, f"{ISSUER}/introspect",
     b"token=a.b.c&token_type_hint=access_token", {"Authorization": BASIC}),
    ("revocation, public", RevocationRequest(token="r-1", token_type_hint="refresh_token"), PUBLIC,
     f"{ISSUER}/revoke", b"token=r-1&token_type_hint=refresh_token&client_id=workstation-agent", {}),
    ("token exchange, break-glass, public", TokenExchangeGrant(subject_token="a.b.c", purpose_of_use="BTG",
                                                               reason="stroke, 3 a.m."), PUBLIC, f"{ISSUER}/token",
     b"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token=a.b.c"
     b"&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token"
     b"&requested_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token"
     b"&purpose_of_use=BTG&reason=stroke%2C+3+a.m.&client_id=workstation-agent", {"Authorization": None}),
    ("tls_client_auth: client_id only", ClientCredentialsGrant(scope="x"), MTLS, f"{ISSUER}/token",
     b"grant_type=client_credentials&scope=x&client_id=ct01", {"Authorization": None}),
]


@pytest.mark.parametrize(("name", "operation", "client", "url", "body", "headers"), REQUESTS,
                         ids=[r[0] for r in REQUESTS])
def test_request_built(name: str, operation: Any, client: ClientAuth, url: str, body: bytes,
                       headers: dict[str, str | None]) -> None:
    request = operation.exchange(META, client).request
    assert (request.method, request.url, request.body) == ("POST", url, body)
    for key, value in headers.items():
        assert request.header(key) == value, key


def test_discovery_and_jwks_requests() -> None:
    request = discovery(ISSUER + "/").request
    assert (request.method, request.url, request.body) == ("GET", f"{ISSUER}/.well-known/openid-configuration", b"")
    assert JwksRequest().exchange(META, PUBLIC).request.url == f"{ISSUER}/jwks"


def test_basic_credentials_are_form_encoded_first() -> None:
    """RFC 6749 2.3.1: id and secret are form-urlencoded before Basic; ``:`` must not split the secret."""
    client = ClientAuth(client_id="a:b c", method=AuthMethod.CLIENT_SECRET_BASIC, secret="p%ss+w:rd é")
    header = ClientCredentialsGrant(scope="x").exchange(META, client).request.header("Authorization")
    assert header is not None
    assert base64.b64decode(header.removeprefix("Basic ")) == b"a%3Ab%20c:p%25ss%2Bw%3Ard%20%C3%A9"


def test_secrets_stay_out_of_repr() -> None:
    request = PasswordGrant(username="rad", password="hunter2", scope="openid").exchange(META, AGENT).request
    for shown in (repr(request), repr(AGENT), repr(PasswordGrant(username="rad", password="hunter2", scope="o")),
                  repr(parse_token_response(respond(200, {"access_token": "AT-1", "token_type": "Bearer",
                                                          "refresh_token": "RT-1"})))):
        assert "hunter2" not in shown and "s3cret" not in shown and "AT-1" not in shown and "RT-1" not in shown


@pytest.mark.parametrize(("method", "secret"), [(AuthMethod.CLIENT_SECRET_BASIC, ""), (AuthMethod.NONE, "x"),
                                                (AuthMethod.TLS_CLIENT_AUTH, "x")])
def test_client_auth_refuses_a_secret_it_cannot_use(method: AuthMethod, secret: str) -> None:
    with pytest.raises(ValueError):
        ClientAuth(client_id="c", method=method, secret=secret)


@pytest.mark.parametrize(("address", "value"), [
    ("192.0.2.43", 'for="192.0.2.43"'),
    ("2001:db8:cafe::17", 'for="[2001:db8:cafe::17]"'),
    ("::ffff:192.0.2.43", 'for="192.0.2.43"'),
    ("fe80::1%eth0", 'for="[fe80::1]"'),
    ("not an address\r\nX-Evil: 1", "for=unknown"),
    ("", "for=unknown"),
])
def test_forwarded_for(address: str, value: str) -> None:
    assert forwarded_for(address) == value


def test_an_operation_on_an_endpoint_the_provider_lacks_is_refused() -> None:
    bare = ProviderMetadata(issuer=ISSUER, token_endpoint=f"{ISSUER}/token", jwks_uri=f"{ISSUER}/jwks")
    for operation in (DeviceAuthorizationRequest(scope="o"), IntrospectionRequest(token="t"),
                      RevocationRequest(token="t")):
        with pytest.raises(ResponseError, match=r"no [a-z ]+endpoint"):
            operation.exchange(bare, AGENT)


# ---- responses ------------------------------------------------------------------------------------------

TOKEN = {"access_token": "AT", "token_type": "Bearer", "expires_in": 300, "refresh_token": "RT", "scope": "openid",
         "id_token": "ID"}


@pytest.mark.parametrize(("body", "expected"), [
    (TOKEN, TokenResponse(access_token="AT", token_type="Bearer", expires_in=300.0, refresh_token="RT",
                          scope="openid", id_token="ID")),
    ({"access_token": "AT", "token_type": "bearer"}, TokenResponse(access_token="AT", token_type="Bearer")),
])
def test_token_response_read(body: dict[str, Any], expected: TokenResponse) -> None:
    assert parse_token_response(respond(200, body)) == expected


@pytest.mark.parametrize(("body", "problem"), [
    ({**TOKEN, "token_type": "mac"}, "not Bearer"),
    ({"token_type": "Bearer"}, "access_token"),
    ({**TOKEN, "access_token": 12}, "access_token"),
    ({**TOKEN, "expires_in": "300"}, "expires_in"),
    ({**TOKEN, "expires_in": True}, "expires_in"),
    ({**TOKEN, "expires_in": -1}, "expires_in"),
    ({**TOKEN, "scope": ["openid"]}, "scope"),
    ([TOKEN], "not an object"),
])
def test_malformed_token_responses_are_refused(body: Any, problem: str) -> None:
    with pytest.raises(ResponseError, match=problem):
        parse_token_response(respond(200, body))


def test_duplicate_members_are_refused_not_read_one_way() -> None:
    raw = b'{"access_token": "AT", "token_type": "Bearer", "access_token": "OTHER"}'
    with pytest.raises(ResponseError, match="twice"):
        parse_token_response(respond(200, None, raw))
    with pytest.raises(ResponseError, match="twice"):
        parse_introspection(respond(200, None, b'{"active": false, "active": true}'))


ERRORS = [
    (400, {"error": "invalid_grant", "error_description": "this user must also give a one-time password (otp)",
           "mfa_required": True}, "invalid_grant", "this user must also give a one-time password (otp)",
     {"mfa_required": True}),
    (401, {"error": "invalid_client"}, "invalid_client", "", {}),
    (400, {"error": "invalid_scope", "error_description": "bad\x1b[31mred\nline", "error_uri": "https://x/e"},
     "invalid_scope", "bad?[31mred?line", {}),
    (400, {"error": "invalid_request", "nested": {"x": 1}, "n": 3}, "invalid_request", "", {"n": 3}),
]


@pytest.mark.parametrize(("status", "body", "code", "description", "extra"), ERRORS, ids=[e[2] for e in ERRORS])
def test_error_responses_keep_code_description_status_and_extras(status: int, body: dict[str, Any], code: str,
                                                                 description: str, extra: dict[str, Any]) -> None:
    with pytest.raises(OAuthError) as raised:
        parse_token_response(respond(status, body))
    error = raised.value
    assert (error.error, error.description, error.status, dict(error.extra)) == (code, description, status, extra)
    assert error.mfa_required is (extra.get("mfa_required") is True)


@pytest.mark.parametrize(("status", "raw"), [(500, b"<html>oops</html>"), (400, b'{"error": 3}'),
                                             (400, b'{"error": "bad\\"code"}'), (302, b""), (200, b"[1, 2"),
                                             (200, b'{"x": NaN}'), (200, b"[" * 100000)])
def test_answers_no_rfc_allows_are_response_errors(status: int, raw: bytes) -> None:
    with pytest.raises(ResponseError) as raised:
        parse_token_response(respond(status, None, raw))
    assert raised.value.status == status


@pytest.mark.parametrize(("code", "result"), [("authorization_pending", Pending.AUTHORIZATION_PENDING),
                                              ("slow_down", Pending.SLOW_DOWN)])
def test_device_poll_pending_codes(code: str, result: Pending) -> None:
    # The descriptions say nothing a word-matcher would find: only the code decides (RFC 8628 3.5).
    parse = DeviceCodeGrant(device_code="dc").exchange(META, PUBLIC).parse
    assert parse(respond(400, {"error": code, "error_description": "Please wait."})) is result


@pytest.mark.parametrize("code", ["access_denied", "expired_token", "invalid_grant"])
def test_device_poll_final_codes_raise_with_their_code(code: str) -> None:
    parse = DeviceCodeGrant(device_code="dc").exchange(META, PUBLIC).parse
    with pytest.raises(OAuthError) as raised:
        parse(respond(400, {"error": code, "error_description": "authorization_pending slow"}))
    assert raised.value.error == code


def test_device_polling_interval_grows_by_five_on_slow_down_and_expires() -> None:
    start = parse_device_authorization(respond(200, {"device_code": "dc", "user_code": "WDJB-MJHT",
                                                     "verification_uri": "https://idp/device", "expires_in": 30}))
    assert start.interval == 5.0  # RFC 8628 3.2: 5 when the provider names none
    polling = DevicePolling(start, now=100.0)
    assert polling.delay(100.0) == 5.0
    assert polling.answered(Pending.SLOW_DOWN) is None and polling.delay(105.0) == 10.0
    assert polling.answered(Pending.AUTHORIZATION_PENDING) is None and polling.delay(115.0) == 10.0
    with pytest.raises(OAuthError) as raised:
        polling.delay(121.0)  # the next poll would come after the code expired
    assert raised.value.error == "expired_token" and raised.value.status == 0
    tokens = TokenResponse(access_token="AT", token_type="Bearer")
    assert polling.answered(tokens) is tokens


@pytest.mark.parametrize("change", [{"user_code": "\x1b]0;owned\x07"}, {"verification_uri": "javascript:alert(1)"},
                                    {"verification_uri": "https://a b"}, {"expires_in": None},
                                    {"device_code": None}, {"interval": 0}])
def test_device_authorization_shown_to_the_user_is_checked(change: dict[str, Any]) -> None:
    body = {"device_code": "dc", "user_code": "WDJB-MJHT", "verification_uri": "https://idp/device",
            "expires_in": 600, "interval": 5, **change}
    with pytest.raises(ResponseError):
        parse_device_authorization(respond(200, {k: v for k, v in body.items() if v is not None}))


@pytest.mark.parametrize(("body", "active"), [({"active": True, "sub": "rad"}, True), ({"active": False}, False)])
def test_introspection_read(body: dict[str, Any], active: bool) -> None:
    assert parse_introspection(respond(200, body)).active is active


@pytest.mark.parametrize("body", [{"active": "false"}, {"active": 1}, {"sub": "rad"}])
def test_introspection_without_a_boolean_active_is_malformed(body: dict[str, Any]) -> None:
    with pytest.raises(ResponseError, match="active"):
        parse_introspection(respond(200, body))


def test_revocation_answers() -> None:
    parse_revocation(HttpResponse(status=200, body=b""))  # done: no exception
    with pytest.raises(OAuthError) as raised:
        parse_revocation(respond(400, {"error": "unsupported_token_type"}))
    assert raised.value.error == "unsupported_token_type"
    with pytest.raises(ResponseError):
        parse_revocation(HttpResponse(status=503, headers=(("Retry-After", "5"),), body=b""))


DOCUMENT = {"issuer": ISSUER, "authorization_endpoint": f"{ISSUER}/authorize", "token_endpoint": f"{ISSUER}/token",
            "jwks_uri": f"{ISSUER}/jwks", "introspection_endpoint": f"{ISSUER}/introspect",
            "response_types_supported": ["code"], "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"]}


def test_discovery_read() -> None:
    meta = discovery(ISSUER).parse(respond(200, DOCUMENT))
    assert (meta.token_endpoint, meta.jwks_uri, meta.introspection_endpoint, meta.revocation_endpoint) == (
        f"{ISSUER}/token", f"{ISSUER}/jwks", f"{ISSUER}/introspect", None)


@pytest.mark.parametrize(("issuer", "change", "problem"), [
    (ISSUER, {"issuer": ISSUER + "/"}, "names issuer"),  # section 4.3: identical, not "equivalent"
    (ISSUER, {"issuer": "https://evil.example"}, "names issuer"),
    (ISSUER, {"token_endpoint": "http://idp.example.org/token"}, "https|may not be used"),
    ("http://127.0.0.1:8800", {"issuer": "http://127.0.0.1:8800", "token_endpoint": "http://10.0.0.1/token"},
     "https|may not be used"),
    (ISSUER, {"jwks_uri": None}, "jwks_uri"),
    (ISSUER, {"response_types_supported": None}, "response_types_supported"),  # authlib's member table
    (ISSUER, {"id_token_signing_alg_values_supported": "RS256"}, "array"),
    (ISSUER, {"introspection_endpoint": "https://user:pw@idp.example.org/i"}, "https|may not be used"),
])
def test_discovery_refused(issuer: str, change: dict[str, Any], problem: str) -> None:
    document = {k: v for k, v in {**DOCUMENT, **change}.items() if v is not None}
    with pytest.raises(ResponseError, match=problem):
        discovery(issuer).parse(respond(200, document))


def test_plain_http_endpoints_refused_even_where_authlib_would_allow_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """authlib's check allows http to loopback whatever the issuer, and anything under an environment
    variable; credentials for an https issuer never go over plain http."""
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")
    for endpoint in ("http://127.0.0.1:9/token", "http://idp.example.org/token"):
        with pytest.raises(ResponseError, match="may not be used"):
            discovery(ISSUER).parse(respond(200, {**DOCUMENT, "token_endpoint": endpoint}))


def test_discovery_on_loopback_may_be_plain_http() -> None:
    issuer = "http://127.0.0.1:8800"
    document = {**DOCUMENT, "issuer": issuer, "token_endpoint": f"{issuer}/token", "jwks_uri": f"{issuer}/jwks",
                "introspection_endpoint": f"{issuer}/introspect", "authorization_endpoint": f"{issuer}/authorize"}
    assert discovery(issuer).parse(respond(200, document)).token_endpoint == f"{issuer}/token"


def test_jwks_read() -> None:
    keys = parse_jwks(respond(200, {"keys": [{"kid": "k1", "kty": "EC"}, "junk"]}))
    assert [dict(k) for k in keys] == [{"kid": "k1", "kty": "EC"}]
    with pytest.raises(ResponseError, match="keys"):
        parse_jwks(respond(200, {"keys": {"kid": "k1"}}))
