"""Checkpoint signatures: Ed25519 (RFC 8032) by the agent's private key, checked with its public key.

A checkpoint (``audit/chain.py``) signs the chain head. Until 2026-12 it carried an HMAC-SHA256
(RFC 2104) under a secret key: whoever could check a log could also re-sign a forged one. Now the
agent signs with an Ed25519 private key that never leaves it, and ``decision-log verify`` needs only
the public key: anyone can check a checkpoint, nobody without the private key can make one.

What a checkpoint carries:

- Ed25519: ``"alg": "Ed25519"``, ``"key_id"`` (the first 16 hex digits of the SHA-256 of the raw
  32-byte public key, RFC 8032 5.1.5: it says which key to check with, and it is signed too) and
  ``"sig"``, the 64-byte signature (RFC 8032 5.1.6) in hex over the record as written without ``sig``.
- HMAC-SHA256 (logs of earlier versions): ``"mac"``, no ``alg``. Read only: the agent never writes
  one again (:func:`server_agent.decisions.load_key` moves an old HMAC key aside on upgrade).

Key files are PEM: the private key PKCS #8 (RFC 5958), the public key SubjectPublicKeyInfo
(RFC 8410), so ``openssl pkey -pubin -in FILE -noout -text`` reads it too. An old HMAC key file is
the key's 32 bytes in hex.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ED25519 = "Ed25519"
HMAC_SHA256 = "HMAC-SHA256"
SIGNATURE_FIELDS = ("sig", "mac")  # not part of what is signed
_HEX_KEY = re.compile(r"[0-9a-fA-F]{32,128}")
MAX_KEY_FILE = 16_384  # a key file is a few hundred bytes: anything larger is not one (read no more)


class KeyFileError(ValueError):
    """A key file that cannot be used: the message names the file and what to do."""


class Signer(Protocol):
    """What a :class:`audit.chain.ChainWriter` signs its checkpoints with."""

    @property
    def header(self) -> dict[str, str]:
        """Fields that go into the checkpoint before it is signed (and so are signed too)."""
        ...

    def sign(self, body: bytes) -> tuple[str, str]:
        """The signature field's name and value for ``body``, the checkpoint as written without it."""
        ...


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Ed25519Signer:
    """The agent's private key; two signers are equal when their keys are (the same ``key_id``)."""

    private: Ed25519PrivateKey
    key_id: str

    @classmethod
    def of(cls, private: Ed25519PrivateKey) -> Ed25519Signer:
        return cls(private, key_id(private.public_key()))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Ed25519Signer) and other.key_id == self.key_id

    def __hash__(self) -> int:
        return hash(self.key_id)

    @property
    def header(self) -> dict[str, str]:
        return {"alg": ED25519, "key_id": self.key_id}

    def sign(self, body: bytes) -> tuple[str, str]:
        return "sig", self.private.sign(body).hex()

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo)

    def private_pem(self) -> bytes:
        return self.private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption())


@dataclass(frozen=True, slots=True)
class HmacSigner:
    """How versions before 2026-12 signed (a shared secret). The agent no longer writes such
    checkpoints; tests use this to write logs as those versions did."""

    key: bytes

    @property
    def header(self) -> dict[str, str]:
        return {}

    def sign(self, body: bytes) -> tuple[str, str]:
        return "mac", hmac.new(self.key, body, hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True, kw_only=True)
class Keys:
    """What ``verify`` checks checkpoints with: public keys (Ed25519), old HMAC keys, or both (a log
    that switched from HMAC to Ed25519 at an upgrade)."""

    public: tuple[Ed25519PublicKey, ...] = ()
    hmac: tuple[bytes, ...] = ()

    @classmethod
    def of(cls, key: Keys | bytes | Ed25519PublicKey) -> Keys:
        if isinstance(key, Keys):
            return key
        if isinstance(key, bytes):
            return cls(hmac=(key,))
        if isinstance(key, Ed25519PublicKey):
            return cls(public=(key,))
        raise TypeError(f"verify takes a public key or an HMAC key, not {type(key).__name__}")

    def key_ids(self) -> tuple[str, ...]:
        return tuple(key_id(public) for public in self.public)


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    """What a checkpoint's signature showed. ``problem`` is empty when it holds or was not checked;
    ``checked`` False: an HMAC checkpoint and no HMAC key given (a later Ed25519 one may cover it)."""

    algorithm: str
    key_id: str = ""
    checked: bool = True
    problem: str = ""
    unverifiable: bool = False  # no key of this kind was given: not damage found, but nothing proven


def check(record: dict[str, Any], body: bytes, keys: Keys) -> Verdict:
    """Check one checkpoint ``record``; ``body`` is the record as written without its signature."""
    if "sig" in record or "alg" in record:
        if record.get("alg") != ED25519 or "mac" in record:
            return Verdict(algorithm=str(record.get("alg")), problem=f"checkpoint signed with an algorithm this "
                           f"version does not accept ({str(record.get('alg'))[:40]!r}): forged")
        return _check_ed25519(record, body, keys)
    if "mac" not in record:
        return Verdict(algorithm="none", problem="checkpoint without a signature: forged")
    if not keys.hmac:
        return Verdict(algorithm=HMAC_SHA256, checked=False)
    mac = str(record["mac"]).encode("utf-8", "replace")  # bytes: compare_digest refuses non-ASCII text
    if any(hmac.compare_digest(mac, hmac.new(key, body, hashlib.sha256).hexdigest().encode()) for key in keys.hmac):
        return Verdict(algorithm=HMAC_SHA256)
    return Verdict(algorithm=HMAC_SHA256, problem="checkpoint signature does not match (wrong key or forged)")


def _check_ed25519(record: dict[str, Any], body: bytes, keys: Keys) -> Verdict:
    named = str(record.get("key_id", ""))[:64]
    if not keys.public:
        return Verdict(algorithm=ED25519, key_id=named, unverifiable=True,
                       problem=f"checkpoint signed with Ed25519 key {named}: give its public key (--public-key)")
    try:
        signature = bytes.fromhex(str(record.get("sig", "")))
    except ValueError:
        signature = b""
    public = next((candidate for candidate in keys.public if key_id(candidate) == named), None)
    if public is None:
        return Verdict(algorithm=ED25519, key_id=named,
                       problem=f"checkpoint signed by key {named}, not by the public key(s) given "
                               f"({', '.join(keys.key_ids())}): another key or forged")
    try:
        public.verify(signature, body)
    except InvalidSignature:
        return Verdict(algorithm=ED25519, key_id=named, problem="checkpoint signature does not match (forged)")
    return Verdict(algorithm=ED25519, key_id=named)


# ---- key files -------------------------------------------------------------------------------------------


def _read(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_KEY_FILE + 1)
    except OSError as error:
        raise KeyFileError(f"{path}: cannot read the key file ({error.strerror or error})") from error
    if len(data) > MAX_KEY_FILE:
        raise KeyFileError(f"{path}: not a key file (over {MAX_KEY_FILE} bytes)")
    return data


def is_hmac_key(data: bytes) -> bool:
    """Whether a key file's content is an old HMAC key (hex digits, nothing else)."""
    return _HEX_KEY.fullmatch(data.strip().decode("ascii", "replace")) is not None


def read_public_key(path: Path) -> Ed25519PublicKey:
    data = _read(path)
    if b"PRIVATE KEY" in data:
        raise KeyFileError(f"{path} is a private key: verify with the public key next to it ({path}.pub); "
                           "the private key stays with the agent")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as error:
        raise KeyFileError(f"{path}: not a PEM public key ({error})") from error
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path}: a {type(key).__name__}, not an Ed25519 public key")
    return key


def read_hmac_key(path: Path) -> bytes:
    data = _read(path)
    if b"PRIVATE KEY" in data:
        raise KeyFileError(f"{path} is the agent's Ed25519 private key: verify with its public key "
                           f"(--public-key {path}.pub); --key-file is for the HMAC key of older logs")
    if not is_hmac_key(data):
        raise KeyFileError(f"{path}: not an HMAC key file (hex digits expected)")
    return bytes.fromhex(data.strip().decode("ascii"))


def read_private_key(path: Path) -> Ed25519Signer:
    data = _read(path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as error:
        raise KeyFileError(f"{path}: not an unencrypted PEM private key ({error})") from error
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: a {type(key).__name__}, not an Ed25519 private key")
    return Ed25519Signer.of(key)


def public_key_path(private: Path) -> Path:
    """Where the agent writes its public key: next to the private key, ``NAME.pub`` (as OpenSSH does)."""
    return private.with_name(private.name + ".pub")
