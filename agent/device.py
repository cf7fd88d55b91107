"""Sign-in by the OAuth 2.0 device authorization grant (RFC 8628) with the user's browser opened for them.

Used by ``--device``, by ``login = "device"`` in ``[identity_provider]``, and by ``launch`` when there is
neither a terminal nor a display for the dialog (issue 17 item 3). The verification URI (RFC 8628
section 3.2; ``verification_uri_complete`` when the provider gives one, section 3.3.1) is printed with
the user code, so that the user can compare the code the page shows (section 5.4, remote phishing),
and opened in a browser when there is one to open: a graphical session (``DISPLAY`` or
``WAYLAND_DISPLAY``) or a browser the user named in ``BROWSER``. On a bare terminal (an SSH session)
nothing is opened: a text browser would take the terminal over while we poll. With no terminal but a
display (``login = "device"`` on a desktop), a small window says the same while the provider is polled:
the address, the code to check, a button to open the page again, and Cancel, which starts nothing.

The URI is the provider's (discovered from the configured issuer), already checked by
:func:`oauthclient.device.parse_device_authorization` to be a printable ``https://`` or ``http://``
address without spaces: no ``file:`` address or other scheme handler is ever opened from it.
"""

from __future__ import annotations

import contextlib
import os
import queue
import sys
import threading
import webbrowser
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, TextIO

from .config import IdentityProvider
from .dialog import Cancelled, NoDisplay, open_root
from .oidc import DeviceStart, LoginError, OidcClient, Tokens

if TYPE_CHECKING:
    import tkinter

WINDOW_TITLE = "Sign in in your browser - DICOM identity agents"
POLL_MS = 200  # how often the window looks for the poll's outcome (the provider is polled every 5 s or so)


def can_open_browser(environ: Mapping[str, str] = os.environ) -> bool:
    """A browser can be shown: a graphical session, or one the user named (``BROWSER``)."""
    return any(environ.get(name) for name in ("DISPLAY", "WAYLAND_DISPLAY", "BROWSER"))


def address(start: DeviceStart) -> str:
    """Where the user signs in, printed, shown and opened alike: ``verification_uri_complete`` (RFC 8628
    section 3.3.1: the code already in it) when the provider gives one, else ``verification_uri``."""
    return start.verification_uri_complete or start.verification_uri


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
                 opener: Callable[[str], bool] = webbrowser.open, window: bool = False) -> Tokens:
    """RFC 8628 sections 3.1 to 3.5: ask for a device code, show (and open) where to approve it, poll
    until the user approves (tokens) or denies or lets it expire (:class:`agent.oidc.LoginError`).

    ``window``: with no terminal, a small window says the same while waiting (the address, the code to
    check, the page opened again on request) and its Cancel ends the sign-in (:class:`agent.dialog.Cancelled`);
    with no display for it, the printed line alone."""
    out = out or sys.stderr
    start = client.device_start()
    where = address(start)
    print(f"To sign in, open {where} and enter the code {start.user_code}", file=out, flush=True)
    if browser:
        open_in_background(where, opener)
    if window:
        with contextlib.suppress(NoDisplay):
            return wait_in_window(client.provider, start, lambda: open_in_background(where, opener))
    return client.device_poll(start)


def wait_in_window(provider: IdentityProvider, start: DeviceStart, reopen: Callable[[], object]) -> Tokens:
    """Poll on a worker thread (with a client of its own: an OidcClient belongs to the thread that made
    it) while the window shows where to sign in; :class:`NoDisplay` before anything is shown."""
    root = open_root()
    answers: queue.SimpleQueue[Tokens | LoginError] = queue.SimpleQueue()

    def poll() -> None:
        try:
            with OidcClient(provider) as own:
                answers.put(own.device_poll(start))
        except LoginError as error:
            answers.put(error)
        except Exception as error:  # a fault of ours or of the platform: the window must not wait forever
            answers.put(LoginError(f"the sign-in failed: {error}"))

    threading.Thread(target=poll, name="device-poll", daemon=True).start()
    view = DeviceWindow(root, provider.issuer, start, reopen, answers)
    try:
        view.run()
    finally:
        with contextlib.suppress(Exception):
            root.destroy()
    if view.answer is None:
        raise Cancelled("sign-in cancelled; nothing was started")  # the poll thread ends with the process
    if isinstance(view.answer, LoginError):
        raise view.answer
    return view.answer


class DeviceWindow:
    """What the desktop shows while the user signs in in the browser."""

    def __init__(self, root: tkinter.Tk, issuer: str, start: DeviceStart, reopen: Callable[[], object],
                 answers: queue.SimpleQueue[Tokens | LoginError]) -> None:
        from tkinter import ttk

        self.root, self.answers = root, answers
        self.answer: Tokens | LoginError | None = None
        root.title(WINDOW_TITLE)
        root.resizable(False, False)
        frame = ttk.Frame(root, padding=16)
        frame.grid(sticky="nsew")
        ttk.Label(frame, text="Sign in in your browser", font=("TkDefaultFont", 12, "bold")).grid(
            row=0, column=0, columnspan=2, sticky="w")
        ttk.Label(frame, text=f"Identity provider: {issuer}").grid(row=1, column=0, columnspan=2, sticky="w",
                                                                  pady=(4, 8))
        # The address the browser was sent to: the complete one (RFC 8628 3.3.1) when the provider gave it,
        # so that what the window says is what was opened, and what to type if nothing was.
        ttk.Label(frame, text=f"Open {address(start)}\nand check that the page shows this code:",
                  justify="left").grid(row=2, column=0, columnspan=2, sticky="w")
        ttk.Label(frame, text=start.user_code, font=("TkFixedFont", 16, "bold")).grid(
            row=3, column=0, columnspan=2, pady=8)
        ttk.Button(frame, text="Open the page again", command=reopen).grid(row=4, column=0, sticky="w")
        ttk.Button(frame, text="Cancel", command=self.cancel).grid(row=4, column=1, sticky="e")
        root.bind("<Escape>", lambda _event: self.cancel())
        root.protocol("WM_DELETE_WINDOW", self.cancel)

    def run(self) -> None:
        self.root.deiconify()
        self.root.lift()
        self.root.after(POLL_MS, self._poll)
        self.root.mainloop()

    def _poll(self) -> None:
        try:
            self.answer = self.answers.get_nowait()
        except queue.Empty:
            self.root.after(POLL_MS, self._poll)
            return
        self.root.quit()

    def cancel(self) -> None:
        self.root.quit()
