"""Client authentication at the token, introspection and revocation endpoints (RFC 6749 section 2.3).

* ``client_secret_basic`` (section 2.3.1): HTTP Basic with the client id and secret each
  form-urlencoded first. authlib's client (``authlib.oauth2.auth.encode_client_secret_basic``) skips
  that encoding, so a secret holding ``:`` or ``%`` would be read differently by a strict server;
  this is why the encoding is ours. Spaces are sent as ``%20``, which a strict form decoder and
  authlib's own server (``unquote``) both read back as a space (``+`` would not survive the latter).
* ``client_secret_post`` (section 2.3.1): ``client_id`` and ``client_secret`` in the form body.
* ``none`` (section 2.1, a public client such as the workstation wrapper): ``client_id`` only.
* ``tls_client_auth`` (RFC 8705 section 2.1): ``client_id`` in the body; the proof is the client
  certificate the executor presents (see :class:`oauthclient.executors.TlsFiles`).
"""

from __future__ import annotations

import base64
import enum
import urllib.parse
from dataclasses import dataclass, field


class AuthMethod(enum.StrEnum):
    """``token_endpoint_auth_method`` values (RFC 7591 section 2, RFC 8705 section 2.1.1)."""

    CLIENT_SECRET_BASIC = "client_secret_basic"
    CLIENT_SECRET_POST = "client_secret_post"
    NONE = "none"
    TLS_CLIENT_AUTH = "tls_client_auth"


_WITH_SECRET = frozenset({AuthMethod.CLIENT_SECRET_BASIC, AuthMethod.CLIENT_SECRET_POST})


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientAuth:
    """Who the client is and how it proves it; the secret never appears in ``repr``."""

    client_id: str
    method: AuthMethod
    secret: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        if not self.client_id:
            raise ValueError("a client id is required")
        if (self.method in _WITH_SECRET) != bool(self.secret):
            raise ValueError(f"{self.method} {'needs' if self.method in _WITH_SECRET else 'takes no'} client secret")

    def apply(self, form: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], tuple[tuple[str, str], ...]]:
        """The form and headers of a request with this client's authentication added."""
        if self.method == AuthMethod.CLIENT_SECRET_BASIC:
            pair = f"{_encode(self.client_id)}:{_encode(self.secret)}".encode()
            return form, (("Authorization", "Basic " + base64.b64encode(pair).decode("ascii")),)
        if self.method == AuthMethod.CLIENT_SECRET_POST:
            return [*form, ("client_id", self.client_id), ("client_secret", self.secret)], ()
        return [*form, ("client_id", self.client_id)], ()


def _encode(text: str) -> str:
    return urllib.parse.quote(text, safe="")
