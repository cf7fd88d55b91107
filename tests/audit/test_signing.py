"""Checkpoints anyone can check but nobody else can make: Ed25519 by the agent's private key, checked
with its public key; HMAC logs of earlier versions still verify, across the switch too."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit.chain import ChainWriter, encode, line_hash, log_files, verify
from audit.signing import Ed25519Signer, KeyFileError, Keys, read_public_key
from devtools.peers import PROJECT
from server_agent.decisions import load_key

HMAC_KEY = b"k" * 32


def write(path: Path, key: Ed25519Signer | bytes, count: int = 12, *, close: bool = True) -> None:
    writer = ChainWriter(path, key, checkpoint_interval=3600)
    for n in range(count):
        writer.write({"event": "authorization", "user": {"username": f"u{n % 3}"}, "action": "C-FIND",
                      "resource": {"patient_id": f"PAT-{n}"}, "decision": "permit"})
        if n % 5 == 4:
            writer.checkpoint()
    if close:
        writer.close()


def agent_key(folder: Path) -> tuple[Ed25519Signer, Path]:
    """The key the agent makes at its first start, and the public key it writes next to it."""
    signer = load_key(folder / "decision-log.key")
    return signer, folder / "decision-log.key.pub"


def cli(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "audit.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=PROJECT)


def rewrite(path: Path, change: dict[int, dict[str, object]], sign: object = None) -> None:
    """Change records (by line) and re-chain everything after them, as a forger with the file would;
    ``sign(record) -> record`` re-signs each checkpoint (else they keep their old signatures)."""
    file = log_files(path)[-1]
    head = "0" * 64
    out = []
    for number, raw in enumerate(file.read_bytes().splitlines()):
        record = json.loads(raw) | change.get(number, {})
        record["prev"] = head
        if record["event"] == "checkpoint":
            record["head"] = head
            if callable(sign):
                record = sign(record)
        line = encode(record)
        head = line_hash(line)
        out.append(line)
    file.write_bytes(b"\n".join(out) + b"\n")


def test_the_agent_makes_its_key_pair_once_with_the_right_modes(tmp_path: Path) -> None:
    signer, public = agent_key(tmp_path)
    assert (tmp_path / "decision-log.key").stat().st_mode & 0o777 == 0o600
    assert public.stat().st_mode & 0o777 == 0o644
    assert load_key(tmp_path / "decision-log.key") == signer  # the same key at the next start
    assert b"BEGIN PUBLIC KEY" in public.read_bytes() and b"PRIVATE" not in public.read_bytes()
    public.unlink()  # lost: written again at the next start
    load_key(tmp_path / "decision-log.key")
    assert read_public_key(public).public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw) == \
        signer.private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def test_a_private_key_others_can_read_is_refused(tmp_path: Path) -> None:
    agent_key(tmp_path)
    os.chmod(tmp_path / "decision-log.key", 0o640)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_key(tmp_path / "decision-log.key")


def test_verify_needs_only_the_public_key_and_refuses_another(tmp_path: Path) -> None:
    signer, public = agent_key(tmp_path)
    path = tmp_path / "decisions.jsonl"
    write(path, signer)
    report = verify(path, read_public_key(public))
    assert report.ok and report.final and report.checkpoints == 4 and report.signature == "Ed25519"  # one at the start
    assert report.key_id == signer.key_id and report.hmac_checkpoints == 0
    done = cli("verify", "--log", path, "--public-key", public)
    assert done.returncode == 0 and f"Ed25519 key {signer.key_id}" in done.stdout
    other = tmp_path / "other"
    other.mkdir()
    _, other_public = agent_key(other)
    refused = cli("verify", "--log", path, "--public-key", other_public)
    assert refused.returncode == 1 and "BROKEN: edited" in refused.stdout and signer.key_id in refused.stdout


def test_an_edit_re_signed_with_what_a_verifier_holds_is_refused(tmp_path: Path) -> None:
    """The forger has the log and the public key: re-chaining is easy, a checkpoint they can make is not."""
    signer, public = agent_key(tmp_path)
    path = tmp_path / "decisions.jsonl"
    write(path, signer)
    raw_public = read_public_key(public).public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    pem = public.read_bytes()

    def hmac_with_public_key(record: dict[str, object]) -> dict[str, object]:
        body = {k: v for k, v in record.items() if k not in ("sig", "mac", "alg", "key_id")}
        return body | {"mac": hmac.new(pem, encode(body), hashlib.sha256).hexdigest()}

    def ed25519_own_key_same_id(record: dict[str, object]) -> dict[str, object]:
        body = {k: v for k, v in record.items() if k != "sig"}
        return body | {"sig": Ed25519PrivateKey.generate().sign(encode(body)).hex()}

    def public_key_as_signature(record: dict[str, object]) -> dict[str, object]:
        return record | {"sig": (raw_public * 2).hex()}

    for forge in (hmac_with_public_key, ed25519_own_key_same_id, public_key_as_signature):
        write(path.with_name("fresh.jsonl"), signer)
        os.replace(path.with_name("fresh.jsonl"), path)
        rewrite(path, {3: {"decision": "deny"}}, forge)
        report = verify(path, read_public_key(public))
        assert not report.ok, forge.__name__
        assert report.damage is not None and report.damage.kind in ("edited", "unverifiable"), forge.__name__
    rewrite(path, {3: {"decision": "deny"}})  # not re-signed at all: the old signature no longer matches
    assert not verify(path, read_public_key(public)).ok


def test_hmac_logs_of_earlier_versions_still_verify_with_the_old_key(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    write(path, HMAC_KEY)
    (tmp_path / "old.key").write_text(HMAC_KEY.hex())
    done = cli("verify", "--log", path, "--key-file", tmp_path / "old.key")
    assert done.returncode == 0 and "HMAC-SHA256" in done.stdout
    assert verify(path, HMAC_KEY).hmac_checkpoints == 4
    assert not verify(path, b"another key" * 3).ok
    _, public = agent_key(tmp_path)
    unproven = cli("verify", "--log", path, "--public-key", public)  # no HMAC key: nothing is proven
    assert unproven.returncode == 1 and "BROKEN: unverifiable" in unproven.stdout and "--key-file" in unproven.stdout


def test_a_log_that_switches_from_hmac_to_ed25519_at_a_restart_verifies_across_it(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    key_file = tmp_path / "decision-log.key"
    key_file.write_text(HMAC_KEY.hex())  # an agent of an earlier version wrote the log with this key
    os.chmod(key_file, 0o600)
    write(path, HMAC_KEY)
    signer = load_key(key_file)  # the upgraded agent starts: the HMAC key moves aside, a new key pair
    kept = tmp_path / "decision-log.key.hmac"
    assert kept.read_text() == HMAC_KEY.hex() and b"PRIVATE KEY" in key_file.read_bytes()
    write(path, signer)  # ... and the same chain goes on
    public = read_public_key(tmp_path / "decision-log.key.pub")
    both = verify(path, Keys(public=(public,), hmac=(HMAC_KEY,)))
    assert both.ok and both.checkpoints == 7 and both.hmac_checkpoints == 4 and both.signature == "Ed25519"
    alone = verify(path, public)  # the Ed25519 checkpoints sign a chain that holds the HMAC part
    assert alone.ok and alone.checkpoints == 3 and alone.unchecked == 4
    assert load_key(key_file) == signer and kept.read_text() == HMAC_KEY.hex()  # next starts: nothing moves


def test_an_hmac_checkpoint_after_ed25519_ones_is_a_forgery(tmp_path: Path) -> None:
    """Whoever kept the old HMAC key cannot append to (or rewrite the end of) a log signed since."""
    signer, public = agent_key(tmp_path)
    path = tmp_path / "decisions.jsonl"
    write(path, signer)
    write(path, HMAC_KEY)
    report = verify(path, Keys(public=(read_public_key(public),), hmac=(HMAC_KEY,)))
    assert report.damage is not None and report.damage.kind == "edited" and "never goes back" in report.damage.detail


def test_verify_says_which_key_is_needed(tmp_path: Path) -> None:
    signer, _ = agent_key(tmp_path)
    path = tmp_path / "decisions.jsonl"
    write(path, signer, 3)
    assert cli("verify", "--log", path).returncode == 2
    wrong = cli("verify", "--log", path, "--key-file", tmp_path / "decision-log.key")
    assert wrong.returncode == 2 and "--public-key" in wrong.stderr and "Traceback" not in wrong.stderr
    private = cli("verify", "--log", path, "--public-key", tmp_path / "decision-log.key")
    assert private.returncode == 2 and "is a private key" in private.stderr


def test_a_log_stripped_of_every_checkpoint_and_re_chained_is_not_passed_as_intact(tmp_path: Path) -> None:
    """A forger with the file and no key can still rebuild the hash chain if he drops every checkpoint:
    what remains proves nothing. ``verify`` holds the chain but must not exit 0 on it (a script
    checking the exit status would read "intact"): it exits 3, the warning a security officer sees."""
    signer, public = agent_key(tmp_path)
    path = tmp_path / "decisions.jsonl"
    write(path, signer)
    file = log_files(path)[-1]
    head, out = "0" * 64, []
    for raw in file.read_bytes().splitlines():
        record = json.loads(raw)
        if record["event"] == "checkpoint":
            continue
        record |= {"prev": head, "seq": len(out) + 1} if "seq" in record else {"prev": head}
        if record["event"] == "authorization":
            record["user"] = {"username": "someone-else"}
        line = encode(record)
        head = line_hash(line)
        out.append(line)
    file.write_bytes(b"\n".join(out) + b"\n")
    report = verify(path, read_public_key(public))
    assert report.ok and report.checkpoints == 0 and report.records
    done = cli("verify", "--log", path, "--public-key", public)
    assert done.returncode == 3, done.stdout
    assert "WARNING: no signed checkpoint" in done.stdout
