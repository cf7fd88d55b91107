"""HTTPS when a certificate is configured; plain HTTP refused off loopback."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from devtools.hial import HialProcess
from hial_mock.config import load_config
from hial_mock.errors import ConfigError
from tomlconf import write


def _self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "hial.crt", folder / "hial.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_https_with_a_configured_certificate(tmp_path: Path) -> None:
    folder = tmp_path / "hial"
    folder.mkdir()
    cert, key = _self_signed(folder)
    hial = HialProcess(folder, server={"tls_certificate": str(cert), "tls_key": str(key)}).start()
    try:
        assert hial.issuer.startswith("https://127.0.0.1:")
        meta = requests.get(f"{hial.issuer}/.well-known/openid-configuration", verify=str(cert), timeout=10).json()
        assert meta["issuer"] == hial.issuer and meta["token_endpoint"].startswith("https://")
        token = requests.post(meta["token_endpoint"], verify=str(cert), timeout=10,
                              data={"grant_type": "password", "client_id": "workstation-agent", "username": "rad",
                                    "password": "demo-rad"})
        assert token.status_code == 200
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"{hial.issuer}/jwks", timeout=10)  # not trusted without the certificate
    finally:
        hial.stop()


def test_plain_http_off_loopback_is_a_config_error(tmp_path: Path) -> None:
    hial = HialProcess(tmp_path / "h")
    hial.write_config()
    with pytest.raises(ValidationError):  # such a configuration cannot even be built
        hial.config().server.replace(host="0.0.0.0")
    data = hial.config().model_dump(mode="json", exclude_defaults=True)
    data["server"]["host"] = "0.0.0.0"
    path = write(hial.folder / "hial.toml", data)  # so it is written as a plain table
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert raised.value.key == "server.host" and str(path) in str(raised.value)
