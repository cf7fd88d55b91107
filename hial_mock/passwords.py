"""Password and client-secret hashes: scrypt (RFC 7914) from the standard library.

Stored form: ``scrypt$N$r$p$salt_b64$hash_b64``. Verification runs in constant time. Plain passwords
are never stored or logged; ``hial-mock hash-password`` makes the stored form.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import threading
from collections.abc import Callable

# RFC 7914 section 2 parameters: N=2^14, r=8, p=1 costs ~16 MiB and ~30 ms per check here, which
# bounds online guessing while keeping the password grant fast enough to benchmark.
N, R, P = 2**14, 8, 1


def hash_password(password: str, *, n: int = N, r: int = R, p: int = P) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=32)
    return "$".join(("scrypt", str(n), str(r), str(p), base64.b64encode(salt).decode(),
                     base64.b64encode(digest).decode()))


def is_password_hash(value: str) -> bool:
    parts = value.split("$")
    return len(parts) == 6 and parts[0] == "scrypt" and all(x.isdigit() for x in parts[1:4])


def verify_password(password: str, stored: str) -> bool:
    if not is_password_hash(stored):
        return False
    _, n, r, p, salt, expected = stored.split("$")
    digest = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                            dklen=len(base64.b64decode(expected)))
    return hmac.compare_digest(digest, base64.b64decode(expected))


# scrypt holds ~16 MiB per check: at most this many at once, so a flood of logins or client
# authentications waits in line instead of taking the memory of hundreds of checks.
MAX_CONCURRENT_CHECKS = 4


class Verifier:
    """:func:`verify_password` with at most ``limit`` checks at once (threads waiting hold almost nothing)."""

    def __init__(self, limit: int = MAX_CONCURRENT_CHECKS,
                 check: Callable[[str, str], bool] | None = None) -> None:
        self._slots = threading.BoundedSemaphore(limit)
        self._check = check or verify_password

    def __call__(self, password: str, stored: str) -> bool:
        with self._slots:
            return self._check(password, stored)


# A hash of nothing anyone knows, checked when the user does not exist, so that an unknown user and a
# wrong password take the same time (no user enumeration by timing).
DUMMY_HASH = hash_password(os.urandom(16).hex())
