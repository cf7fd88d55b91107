"""Claim mapping (issue 14 item 2): each recipe of docs/identity-providers.md, read from that file, with
tokens signed in the shape its provider issues them, a user's and a client's own; and what a mapping
refuses (a value it cannot read one way)."""

from __future__ import annotations

import json
import re
import time
import tomllib
from pathlib import Path
from typing import Any

import jwt
import pydantic
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from audit.events import Reason
from server_agent.authn import AuthenticationFailed, Subject
from server_agent.claims import ClaimMapping, parse_path, read_claims
from server_agent.config import IdentityConfig

from .test_authn import CONFIG, ISSUER, FakeProvider, jwt_identity, run

RECIPES = Path(__file__).parents[2] / "docs" / "identity-providers.md"
RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_JWK = {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(RSA.public_key())), "kid": "rsa1", "use": "sig"}


def recipe(name: str) -> IdentityConfig:
    """The ``[identity]`` of the recipe block ``# recipe: NAME``, at this test's provider and with a secret."""
    blocks = dict(re.findall(r"```toml\n# recipe: (\w+)\n(.*?)```", RECIPES.read_text(), re.S))
    identity = tomllib.loads(blocks[name])["identity"]
    identity.pop("client_secret_file")
    return IdentityConfig.model_validate({**identity, "issuer": ISSUER, "client_secret": "s3cret"})


def signed(claims: dict[str, Any], config: IdentityConfig, typ: str | None) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": config.audience, "iat": now, "nbf": now, "exp": now + 300, **claims}
    headers = {"kid": "rsa1", "typ": typ or ""}  # PyJWT leaves an empty typ out of the header
    return jwt.encode(body, RSA, algorithm="RS256", headers=headers)


def authenticate(value: str, config: IdentityConfig) -> Subject | Reason:
    provider = FakeProvider()
    provider.keys = [RSA_JWK]

    async def use(authn: Any) -> Subject | Reason:
        try:
            return await authn.authenticate(jwt_identity(value), [], "127.0.0.1")  # type: ignore[no-any-return]
        except AuthenticationFailed as error:
            return error.reason

    return run(provider, use, config)


def seen(subject: Subject | Reason) -> tuple[Any, ...]:
    assert isinstance(subject, Subject), subject
    return (subject.kind, subject.username, subject.roles, sorted(subject.scopes), subject.organization,
            subject.purpose_of_use, subject.client_id)


# ---- the shapes each provider issues (from their documentation and tokens seen in the wild) -----------------

KEYCLOAK_USER = {
    "jti": "onrtac:1f0c", "sub": "5b9f1d9e-2c0a-4c1e-9d55-3f0e4c1b7a10", "typ": "Bearer", "azp": "dicom-viewer",
    "sid": "a3c2", "acr": "1", "allowed-origins": ["https://viewer.hospital.example"],
    "realm_access": {"roles": ["radiologist", "offline_access", "default-roles-hospital"]},
    "resource_access": {"dicom-server-agent": {"roles": ["study-reader"]}, "account": {"roles": ["manage-account"]}},
    "scope": "openid profile user/ImagingStudy.rs", "email_verified": True, "preferred_username": "rad",
    "organization": ["st-elsewhere"], "name": "Rita Rad", "email": "rad@hospital.example"}
KEYCLOAK_SERVICE_ACCOUNT = {
    "jti": "trrtcc:9a1", "sub": "0c1d2e3f-4a5b-6c7d-8e9f-a0b1c2d3e4f5", "typ": "Bearer", "azp": "ai-node",
    "realm_access": {"roles": ["radiologist"]}, "scope": "user/ImagingStudy.rs", "client_id": "ai-node",
    "clientHost": "192.0.2.7", "clientAddress": "192.0.2.7", "preferred_username": "service-account-ai-node"}
ENTRA_USER = {
    "aio": "AXQAi/8", "azp": "22222222-2222-2222-2222-222222222222", "azpacr": "0", "name": "Rita Rad",
    "oid": "6e2b0f6a-0000-4000-8000-000000000001", "preferred_username": "rad@hospital.example",
    "rh": "0.AR8A", "roles": ["radiologist"], "scp": "user_impersonation user/ImagingStudy.rs",
    "sub": "pairwise-sub-of-rad", "tid": "00000000-0000-0000-0000-000000000000", "uti": "k1", "ver": "2.0"}
ENTRA_APP = {
    "azp": "22222222-2222-2222-2222-222222222222", "azpacr": "1", "idtyp": "app",
    "oid": "7f3c1e7b-0000-4000-8000-000000000002", "roles": ["radiologist"],
    "sub": "7f3c1e7b-0000-4000-8000-000000000002", "tid": "00000000-0000-0000-0000-000000000000", "ver": "2.0"}
OKTA_USER = {
    "ver": 1, "jti": "AT.0mP4JNAkfYqeJX5-lQbR", "cid": "0oa1viewer", "uid": "00u1rad", "scp": ["openid",
                                                                                             "user/ImagingStudy.rs"],
    "auth_time": 1_700_000_000, "sub": "rad@hospital.example", "groups": ["radiologist", "Everyone"]}
OKTA_CLIENT = {"ver": 1, "jti": "AT.x1", "cid": "0oa1ainode", "scp": ["user/ImagingStudy.rs"], "sub": "0oa1ainode"}
IUA_USER = {
    "sub": "rad", "client_id": "workstation-agent", "jti": "j1", "scope": "user/ImagingStudy.rs",
    "extensions": {"ihe_iua": {
        "subject_name": "Dr. Rita Rad", "subject_organization": "St. Elsewhere",
        "subject_organization_id": "urn:oid:1.2.3.4",
        "subject_role": [{"system": "http://snomed.info/sct", "code": "radiologist"}],
        "purpose_of_use": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "BTG"}]}}}


@pytest.mark.parametrize(("name", "typ", "claims", "expected"), [
    ("keycloak", "JWT", KEYCLOAK_USER,
     ("user", "rad", ("radiologist", "offline_access", "default-roles-hospital", "study-reader"),
      ["openid", "profile", "user/ImagingStudy.rs"], "st-elsewhere", "TREAT", "dicom-viewer")),
    ("entra", "JWT", ENTRA_USER,
     ("user", "rad@hospital.example", ("radiologist",), ["user/ImagingStudy.rs", "user_impersonation"],
      "00000000-0000-0000-0000-000000000000", "TREAT", "22222222-2222-2222-2222-222222222222")),
    ("okta", None, OKTA_USER,
     ("user", "rad@hospital.example", ("radiologist", "Everyone"), ["openid", "user/ImagingStudy.rs"], "", "TREAT",
      "0oa1viewer")),
    ("iua", "IUA-JWT", IUA_USER,
     ("user", "Dr. Rita Rad", ("radiologist",), ["user/ImagingStudy.rs"], "urn:oid:1.2.3.4", "BTG",
      "workstation-agent")),
])
def test_each_recipe_reads_its_providers_user_token(name: str, typ: str | None, claims: dict[str, Any],
                                                    expected: tuple[Any, ...]) -> None:
    config = recipe(name)
    assert seen(authenticate(signed(claims, config, typ), config)) == expected


ENTRA_APP_WITHOUT_IDTYP = {k: v for k, v in ENTRA_APP.items() if k != "idtyp"}


@pytest.mark.parametrize(("name", "typ", "claims"), [
    ("keycloak", "JWT", KEYCLOAK_SERVICE_ACCOUNT), ("entra", "JWT", ENTRA_APP),
    ("entra", "JWT", ENTRA_APP_WITHOUT_IDTYP), ("okta", None, OKTA_CLIENT)])
def test_each_recipe_refuses_a_clients_own_token(name: str, typ: str | None, claims: dict[str, Any]) -> None:
    config = recipe(name)
    assert authenticate(signed(claims, config, typ), config) == Reason.NOT_A_USER


@pytest.mark.parametrize(("name", "typ", "claims"), [
    ("keycloak", "JWT", KEYCLOAK_SERVICE_ACCOUNT), ("okta", None, OKTA_CLIENT)])
def test_a_recipes_client_token_is_a_configured_node(name: str, typ: str | None, claims: dict[str, Any]) -> None:
    client = claims.get("client_id") or claims["cid"]
    config = recipe(name).replace(node_clients={client: "AINODE"})
    subject = authenticate(signed(claims, config, typ), config)
    assert isinstance(subject, Subject) and (subject.kind, subject.id, subject.roles) == ("node", "AINODE", ())


def test_without_the_recipe_the_providers_tokens_are_not_read_as_the_recipe_reads_them() -> None:
    keycloak = recipe("keycloak").replace(claims=ClaimMapping())
    assert seen(authenticate(signed(KEYCLOAK_USER, keycloak, "JWT"), keycloak))[2] == ()  # no nested roles
    okta = recipe("okta")
    strict = okta.replace(token_types=("at+jwt", "application/at+jwt"))
    assert authenticate(signed(OKTA_USER, strict, None), strict) == Reason.TOKEN_REJECTED  # no typ
    cid_unread = okta.replace(claims=ClaimMapping(username=("sub",), roles=("groups",), scopes=("scp",)))
    assert seen(authenticate(signed(OKTA_CLIENT, cid_unread, None), cid_unread))[0] == "user"  # why cid matters
    entra = recipe("entra")
    no_marker = entra.replace(claims=entra.claims.replace(user_token=()))
    assert seen(authenticate(signed(ENTRA_APP_WITHOUT_IDTYP, no_marker, "JWT"), no_marker))[0] == "user"


def test_the_defaults_read_rfc_9068_and_the_hials_tokens() -> None:
    claims = {"sub": "u1", "preferred_username": "rad", "roles": ["radiologist"], "organization": "",
              "scope": "openid user/ImagingStudy.rs", "client_id": "workstation-agent",
              "purpose_of_use": {"code": "HOPERAT"}}
    mapped = read_claims(claims, ClaimMapping())
    assert (mapped.username, mapped.roles, mapped.scopes, mapped.organization, mapped.purpose_of_use,
            mapped.client_id, mapped.client_token) == ("rad", ("radiologist",), {"openid", "user/ImagingStudy.rs"},
                                                       "", "HOPERAT", "workstation-agent", False)
    assert read_claims({"sub": "u1"}, ClaimMapping()).username == "u1"


# ---- paths --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "parts"), [
    ("roles", ("roles",)), ("realm_access.roles", ("realm_access", "roles")),
    ('resource_access."dicom.example".roles', ("resource_access", "dicom.example", "roles")),
    ('"https://hospital.example/roles"', ("https://hospital.example/roles",)),
])
def test_claim_paths(text: str, parts: tuple[str, ...]) -> None:
    assert parse_path(text) == parts


@pytest.mark.parametrize("text", ["", ".roles", "roles.", "a..b", '"a"b', '"unclosed', "a b", ".".join("x" * 9)])
def test_a_bad_claim_path_is_a_configuration_error(text: str) -> None:
    with pytest.raises(ValueError, match="claim path"):
        parse_path(text)
    with pytest.raises(pydantic.ValidationError, match=r"claims\.roles"):
        CONFIG.replace(claims={"roles": [text]})


def test_a_dotted_member_is_read_only_when_quoted() -> None:
    claims = {"sub": "u", "https://hospital.example/roles": ["radiologist"]}
    quoted = ClaimMapping(roles=('"https://hospital.example/roles"',))
    assert read_claims(claims, quoted).roles == ("radiologist",)
    assert read_claims(claims, ClaimMapping(roles=("https://hospital.example/roles",))).roles == ()


# ---- what a mapping refuses ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("claims", "mapping", "why"), [
    ({"roles": 7}, ClaimMapping(), "roles"),
    ({"roles": ["a", {"system": "x"}]}, ClaimMapping(), "roles"),  # a Coding without code
    ({"realm_access": {"roles": "x" * 257}}, ClaimMapping(roles=("realm_access.roles",)), "roles"),
    ({"roles": [f"r{n}" for n in range(257)]}, ClaimMapping(), "roles"),
    ({"roles": ["a"] * 200, "groups": ["b"] * 100}, ClaimMapping(roles=("roles", "groups")), "roles"),
    ({"organization": ["one", "two"]}, ClaimMapping(), "organization"),
    ({"purpose_of_use": ["TREAT", "BTG"]}, ClaimMapping(), "purpose_of_use"),
    ({"purpose_of_use": 1}, ClaimMapping(), "purpose_of_use"),
    ({"preferred_username": ["a", "b"]}, ClaimMapping(), "username"),
    ({"scope": {"read": True}}, ClaimMapping(), "scopes"),
])
def test_a_value_that_cannot_be_read_one_way_refuses_the_token(claims: dict[str, Any], mapping: ClaimMapping,
                                                                 why: str) -> None:
    with pytest.raises(AuthenticationFailed) as raised:
        read_claims({"sub": "u", **claims}, mapping)
    assert raised.value.reason == Reason.TOKEN_REJECTED and raised.value.detail.endswith(f"[identity.claims] {why})")


def test_a_path_through_a_non_object_reads_as_absent() -> None:
    claims = {"sub": "u", "realm_access": ["radiologist"], "roles": ["tech"]}
    assert read_claims(claims, ClaimMapping(roles=("realm_access.roles", "roles"))).roles == ("tech",)
