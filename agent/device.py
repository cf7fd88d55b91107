"""Sign-in by the OAuth 2.0 device authorization grant (RFC 8628) with the user's browser opened for them.

Used by ``--device``, by ``login = "device"`` in ``[identity_provider]``, and by ``launch`` when there is
neither a terminal nor a display for the dialog (issue 17 item 3). The verification URI (RFC 8628
section 3.2; ``verification_uri_complete`` when the provider gives one, section 3.3.1) is printed with
the user code, so that the user can compare the code the page shows (section 5.4, remote phishing),
and opened in a browser when there is one to open: a graphical session (``DISPLAY`` or
``WAYLAND_DISPLAY``) or a browser the user named in ``BROWSER``. On a bare terminal (an SSH session)
nothing is opened: a text browser would take the terminal over while we poll.

The URI is the provider's (discovered from the configured issuer), already checked by
:func:`oauthclient.device.parse_device_authorization` to be a printable ``https://`` or ``http://``
address without spaces: no ``file:`` address or other scheme handler is ever opened from it.
"""

from __future__ import annotations

import os
import sys
import threading
import webbrowser
from collections.abc import Callable, Mapping
from typing import TextIO

from .oidc import OidcClient, Tokens


def can_open_browser(environ: Mapping[str, str] = os.environ) -> bool:
    """A browser can be shown: a graphical session, or one the user named (``BROWSER``)."""
    return any(environ.get(name) for name in ("DISPLAY", "WAYLAND_DISPLAY", "BROWSER"))


def open_in_background(url: str, opener: Callable[[str], bool] = webbrowser.open) -> threading.Thread:
    """Open ``url`` without waiting for the browser: some (a ``BROWSER`` command) run until closed,
    and the device code must be polled for meanwhile (RFC 8628 section 3.4)."""

    def run() -> None:
        try:
            if not opener(url):
                print("dicom-agent: no browser could be opened: open the address above yourself",
                      file=sys.stderr, flush=True)
        except (webbrowser.Error, OSError) as error:  # a launcher that is not there or will not start
            print(f"dicom-agent: the browser could not be opened ({error}): open the address above yourself",
                  file=sys.stderr, flush=True)

    thread = threading.Thread(target=run, name="browser", daemon=True)
    thread.start()
    return thread


def device_login(client: OidcClient, *, browser: bool, out: TextIO | None = None,
                 opener: Callable[[str], bool] = webbrowser.open) -> Tokens:
    """RFC 8628 sections 3.1 to 3.5: ask for a device code, show (and open) where to approve it, poll
    until the user approves (tokens) or denies or lets it expire (:class:`agent.oidc.LoginError`)."""
    out = out or sys.stderr
    start = client.device_start()
    where = start.verification_uri_complete or start.verification_uri
    print(f"To sign in, open {where} and enter the code {start.user_code}", file=out, flush=True)
    if browser:
        open_in_background(where, opener)
    return client.device_poll(start)
