"""What both agents need to re-read their file on SIGHUP (issue 15 item 1): which keys changed, whether
one of them needs a restart, the file's digest, and the certificate checks that a schema cannot do.

A reload is all or nothing: the new file is read and validated like at start-up (:func:`tomlconf.load`),
its certificates and keys are opened and matched here, and only then is anything swapped. Every
problem is a :class:`~tomlconf.ConfigError` naming the file and the dotted key, as at start-up.
Only key names ever leave this module (for the log line and the decision log), never values: a
changed ``client_secret`` is reported as ``identity.client_secret``.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from pydantic import BaseModel

from . import ConfigError, validate

M = TypeVar("M", bound=BaseModel)
SMALL_FILE = 1024 * 1024  # what a certificate, key or secret file can be; a decision log is not hashed


def flatten(config: BaseModel) -> dict[str, Any]:
    """Every leaf of ``config`` (as the file would say it) by its dotted key; ``path`` (derived) left out."""
    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping) and value:
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), item)
        else:
            out[prefix] = value

    walk("", config.model_dump(mode="json", by_alias=True, exclude={"path"}))
    return out


def changed_keys(old: BaseModel, new: BaseModel) -> list[str]:
    """The dotted keys whose values differ (added and removed ones included), sorted; names only."""
    before, after = flatten(old), flatten(new)
    return sorted(key for key in before.keys() | after.keys() if before.get(key, None) != after.get(key, None))


def needing_restart(changed: Iterable[str], restart_keys: Iterable[str]) -> list[str]:
    """The changed keys that are, or lie under, one of ``restart_keys`` (a table name covers its keys)."""
    prefixes = tuple(restart_keys)
    return [key for key in changed if any(key == p or key.startswith(p + ".") for p in prefixes)]


def file_digests(config: BaseModel, skip: Iterable[str] = (), limit: int = SMALL_FILE) -> dict[str, str]:
    """SHA-256 of each small file the configuration names (certificates, keys, CAs, secret files), by
    key, but for the keys under ``skip`` (files the agent writes, such as its logs): a certificate
    replaced under the same name is a change a reload must see and report."""
    out: dict[str, str] = {}
    keys = flatten(config)
    for key in needing_restart(keys, skip):
        del keys[key]
    for key, value in keys.items():
        if not isinstance(value, str) or not value.startswith("/"):
            continue
        try:
            path = Path(value)
            if path.is_file() and path.stat().st_size <= limit:
                out[key] = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError:
            continue
    return out


def changed_files(before: Mapping[str, str], after: Mapping[str, str], changed: Iterable[str]) -> list[str]:
    """Keys naming the same file as before whose contents changed, as ``KEY (file)``, sorted."""
    renamed = set(changed)
    return sorted(f"{key} (file)" for key in before.keys() & after.keys()
                  if key not in renamed and before[key] != after[key])


def digest(path: Path) -> str:
    """SHA-256 of the file as read (what ``sha256sum FILE`` prints): which file a generation runs; ""
    for a configuration that was not read from a file (tests build them in code)."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return ""


def reread(path: Path, model: type[M]) -> tuple[M, str]:
    """``path`` read once, validated as ``model`` like at start-up, with the SHA-256 of the very bytes
    that were validated (not of a file replaced in between)."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigError(path, "(file)", str(error)) from None
    try:
        table = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(path, "(syntax)", str(error)) from None
    return validate(table, model, path), hashlib.sha256(data).hexdigest()


def check_key_pair(path: Path, certificate_key: str, certificate: Path, key_key: str, key: Path) -> None:
    """The PEM certificate and private key can be read and belong together (a replaced certificate
    whose key was not replaced with it would fail every handshake after the reload)."""
    try:
        public = x509.load_pem_x509_certificate(certificate.read_bytes()).public_key()
    except (OSError, ValueError) as error:
        raise ConfigError(path, certificate_key, f"{certificate}: not a readable PEM certificate ({error})") from None
    try:
        private = load_pem_private_key(key.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as error:
        # TypeError: an encrypted key (the agents take unencrypted keys, protected by file permissions)
        raise ConfigError(path, key_key, f"{key}: not a readable unencrypted PEM private key ({error})") from None
    if private.public_key() != public:
        raise ConfigError(path, key_key, f"{key} is not the private key of {certificate}")


def check_ca(path: Path, key: str, ca: Path) -> None:
    """The CA file holds at least one readable PEM certificate."""
    try:
        if not x509.load_pem_x509_certificates(ca.read_bytes()):
            raise ValueError("no certificate in it")
    except (OSError, ValueError) as error:
        raise ConfigError(path, key, f"{ca}: not a readable PEM CA certificate ({error})") from None


__all__ = ["SMALL_FILE", "changed_files", "changed_keys", "check_ca", "check_key_pair", "digest", "file_digests",
           "flatten", "needing_restart", "reread"]
