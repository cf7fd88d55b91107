"""The desktop sign-in dialog: ``dicom-agent launch`` started with no terminal (issue 17 item 3).

A viewer started from a desktop icon has no terminal to type a password into: :func:`ask` shows a small
Tk window (the standard library's toolkit, Debian ``python3-tk``) with the identity provider, the user
name, the password (never echoed: shown as bullets, not exported as the X selection), and the one-time
code when the provider answers ``mfa_required``. Each submission is one RFC 6749 section 4.3 password
grant (:meth:`agent.oidc.OidcClient.password_login`, on a worker thread); a refused one leaves the
dialog open with the provider's description in words (wrong password, "locked until ..."). Cancel or
closing the window returns None: the caller starts nothing. Other clients of the X display cannot
script the dialog through Tk's ``send``.

:class:`SignIn` is the dialog's logic without Tk (what to ask next, what to say), tested on its own;
:class:`DialogView` only draws it and runs each attempt off the Tk thread, so that the window stays
responsive while the provider answers (within the client's timeout).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import queue
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from oauthclient.errors import printable

from .oidc import LoginError, MfaRequired, OidcClient, Tokens

if TYPE_CHECKING:
    import tkinter
    from tkinter import ttk

TITLE = "Sign in - DICOM identity agents"  # what `xdotool search --name` finds, and the task bar shows
MAX_FIELD = 1024  # characters: no user name, password or code is longer; a paste of a whole file is refused here
_RFC3339_UTC = re.compile(r"\b\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\b")
POLL_MS = 50  # how often the Tk loop looks for the answer of an attempt running on its worker thread


class Cancelled(LoginError):
    """The user closed the sign-in dialog: nothing is started."""


class NoDisplay(Exception):
    """No dialog can be shown (no X display, or Tk missing); the caller falls back to the device flow."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Attempt:
    """What the user submitted, once."""

    user: str
    password: str = field(repr=False)
    otp: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """One attempt's answer: tokens, or the words to show and whether a one-time code is now asked for."""

    tokens: Tokens | None = None
    error: str = ""
    otp_needed: bool = False


class SignIn:
    """The dialog's state: whether the one-time code is asked for, and the result once signed in."""

    def __init__(self, login: Callable[[Attempt], Tokens]) -> None:
        self._login = login
        self.otp_needed = False
        self.result: tuple[Tokens, str] | None = None

    def problem(self, attempt: Attempt) -> str | None:
        """Refused before any request: what the user must fix (nothing is sent to the provider)."""
        if not attempt.user.strip():
            return "Enter your user name."
        if not attempt.password:
            return "Enter your password."
        if self.otp_needed and not (attempt.otp or "").strip():
            return "Enter the one-time code from your authenticator."
        if any(len(value or "") > MAX_FIELD for value in (attempt.user, attempt.password, attempt.otp)):
            return f"Too long: at most {MAX_FIELD} characters."
        return None

    def submit(self, attempt: Attempt) -> Outcome:
        """One password grant (RFC 6749 section 4.3, with ``otp`` once asked for); runs off the Tk thread."""
        otp = attempt.otp.strip() if self.otp_needed and attempt.otp else None
        try:
            tokens = self._login(Attempt(user=attempt.user.strip(), password=attempt.password, otp=otp))
        except MfaRequired as error:
            # The password was right: the provider wants the code too (asked once; a wrong code is an error).
            return Outcome(error="" if not otp else str(error), otp_needed=True)
        except LoginError as error:
            return Outcome(error=sentence(str(error)) or "Sign-in refused.", otp_needed=self.otp_needed)
        return Outcome(tokens=tokens)

    def conclude(self, attempt: Attempt, outcome: Outcome) -> None:
        self.otp_needed = outcome.otp_needed
        if outcome.tokens is not None:
            self.result = (outcome.tokens, attempt.password)


def local_times(text: str, now: float | None = None) -> str:
    """RFC 3339 UTC times in a description ("locked until 2026-12-02T00:15:00Z", the HIAL's lockout) in the
    desktop's own time zone, with how long that is from now: what a person at the workstation reads."""

    def shown(match: re.Match[str]) -> str:
        try:
            moment = dt.datetime.strptime(match.group(0), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
            # To the minute, never before the time: "until 01:34" for 01:33:40.
            local = (moment + dt.timedelta(seconds=(60 - moment.second) % 60)).astimezone()
        except (ValueError, OverflowError, OSError):
            return match.group(0)  # not a time after all: shown as the provider wrote it
        when = time.time() if now is None else now
        today = dt.datetime.fromtimestamp(when).astimezone().date()
        clock = local.strftime("%H:%M" if local.date() == today else "%Y-%m-%d %H:%M")
        return f"{clock} ({how_long(moment.timestamp() - when)})"

    return _RFC3339_UTC.sub(shown, text)


def how_long(seconds: float) -> str:
    """A wait in the unit a person counts it in: minutes, then hours, then days, to the nearest (a lock of
    lock_seconds = 900 reads "in 15 min" whether the answer took 0.2 s or 20 s)."""
    if seconds <= 0:
        return "now"
    minutes = max(1, round(seconds / 60))
    if minutes < 120:
        return f"in {minutes} min"
    hours = round(minutes / 60)
    return f"in {hours} hours" if hours < 48 else f"in {round(hours / 24)} days"


def sentence(text: str) -> str:
    """The provider's description as a sentence: capital first letter, a full stop at the end; control and
    bidirectional-override characters replaced and the length bounded (a hostile text must not reshape the dialog)."""
    text = printable(" ".join(local_times(text).split()))
    if not text:
        return ""
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


class DialogView:
    """The Tk window of one :class:`SignIn`; ``run`` returns when signed in, cancelled or closed."""

    def __init__(self, root: tkinter.Tk, state: SignIn, *, issuer: str, user: str | None) -> None:
        import tkinter as tk
        from tkinter import ttk

        self.root, self.state = root, state
        self.cancelled = False
        self._answers: queue.SimpleQueue[tuple[Attempt, Outcome]] = queue.SimpleQueue()
        self.worker: threading.Thread | None = None
        self.finished: tuple[Attempt, Outcome] | None = None  # an answer that came after Cancel
        root.title(TITLE)
        root.resizable(False, False)
        frame = ttk.Frame(root, padding=16)
        frame.grid(sticky="nsew")
        ttk.Label(frame, text="Sign in to open DICOM images", font=("TkDefaultFont", 12, "bold")).grid(
            row=0, column=0, columnspan=2, sticky="w")
        ttk.Label(frame, text=f"Identity provider: {issuer}").grid(row=1, column=0, columnspan=2, sticky="w",
                                                                  pady=(4, 12))
        self.user = tk.StringVar(root, value=user or "")
        self.password = tk.StringVar(root)
        self.otp = tk.StringVar(root)
        self.user_entry = self._field(frame, 2, "User name", self.user)
        self.password_entry = self._field(frame, 3, "Password", self.password, show="\u2022")
        self.otp_label = ttk.Label(frame, text="One-time code")
        self.otp_entry = ttk.Entry(frame, textvariable=self.otp, width=32)
        self.message = ttk.Label(frame, text="", foreground="#b00020", wraplength=420, justify="left")
        self.message.grid(row=5, column=0, columnspan=2, sticky="w", pady=(8, 0))
        buttons = ttk.Frame(frame)
        buttons.grid(row=6, column=0, columnspan=2, sticky="e", pady=(12, 0))
        self.cancel_button = ttk.Button(buttons, text="Cancel", command=self.cancel)
        self.cancel_button.grid(row=0, column=0, padx=(0, 8))
        self.sign_in_button = ttk.Button(buttons, text="Sign in", command=self.submit, default="active")
        self.sign_in_button.grid(row=0, column=1)
        root.bind("<Return>", lambda _event: self.submit())
        root.bind("<KP_Enter>", lambda _event: self.submit())
        root.bind("<Escape>", lambda _event: self.cancel())
        root.protocol("WM_DELETE_WINDOW", self.cancel)
        self.first = self.password_entry if user else self.user_entry  # where typing goes at first

    def _field(self, frame: tkinter.Misc, row: int, label: str, variable: tkinter.StringVar,
               show: str = "") -> ttk.Entry:
        from tkinter import ttk

        ttk.Label(frame, text=label).grid(row=row, column=0, sticky="w", padx=(0, 12), pady=2)
        # exportselection=False: a selected password is never offered to other programs as the X selection.
        entry = ttk.Entry(frame, textvariable=variable, width=32, show=show, exportselection=False)
        entry.grid(row=row, column=1, sticky="ew", pady=2)
        return entry

    def run(self) -> None:
        self.root.deiconify()
        self.root.lift()
        self.first.focus_force()  # a window opened from a desktop icon takes the keyboard at once
        self.root.mainloop()

    def submit(self) -> None:
        if self.worker is not None:
            return  # one attempt at a time
        attempt = Attempt(user=self.user.get(), password=self.password.get(),
                          otp=self.otp.get() if self.state.otp_needed else None)
        problem = self.state.problem(attempt)
        if problem:
            self.message.configure(text=problem)
            return
        self._busy(True)
        self.message.configure(text="Signing in\u2026", foreground="#333333")
        self.worker = threading.Thread(target=self._attempt, args=(attempt,), name="sign-in", daemon=True)
        self.worker.start()
        self.root.after(POLL_MS, self._poll)

    def _attempt(self, attempt: Attempt) -> None:
        """On the worker thread: always answers, so that the dialog never waits for an attempt that died."""
        try:
            outcome = self.state.submit(attempt)
        except Exception as error:  # a fault of ours or of the platform (TLS files): said, and tried again
            outcome = Outcome(error=sentence(f"Sign-in failed: {error}"), otp_needed=self.state.otp_needed)
        self._answers.put((attempt, outcome))

    def _poll(self) -> None:
        try:
            attempt, outcome = self._answers.get_nowait()
        except queue.Empty:
            self.root.after(POLL_MS, self._poll)
            return
        self.worker = None
        if self.cancelled:
            self.finished = (attempt, outcome)  # the caller revokes tokens that came too late
            return
        self.state.conclude(attempt, outcome)
        if self.state.result is not None:
            self.root.quit()
            return
        self._show(outcome)

    def _show(self, outcome: Outcome) -> None:
        self._busy(False)
        self.message.configure(text=outcome.error, foreground="#b00020")
        if outcome.otp_needed:
            self.otp_label.grid(row=4, column=0, sticky="w", padx=(0, 12), pady=2)
            self.otp_entry.grid(row=4, column=1, sticky="ew", pady=2)
            self.otp.set("")
            if not outcome.error:
                self.message.configure(text="Enter the one-time code from your authenticator.", foreground="#333333")
            self.otp_entry.focus_set()
        else:
            self.password.set("")  # a refused password is not kept, nor left to retype over
            self.password_entry.focus_set()

    def _busy(self, busy: bool) -> None:
        for widget in (self.user_entry, self.password_entry, self.otp_entry, self.sign_in_button):
            widget.configure(state="disabled" if busy else "normal")

    def cancel(self) -> None:
        self.cancelled = True
        self.root.quit()

    def drain(self, timeout: float) -> Outcome | None:
        """After Cancel: wait for an attempt still under way (it ends within the client's timeout)."""
        if self.finished is not None:
            return self.finished[1]
        if self.worker is None:
            return None
        self.worker.join(timeout)
        try:
            return self._answers.get_nowait()[1]
        except queue.Empty:
            return None


def open_root() -> tkinter.Tk:
    """The Tk root window, withdrawn until drawn; :class:`NoDisplay` says why there is none."""
    try:
        import tkinter
    except ImportError as error:  # a Python built without _tkinter: Debian's python3-tk provides it
        raise NoDisplay(f"Tk is not available ({error})") from None
    try:
        root = tkinter.Tk(className="dicom-agent")
    except tkinter.TclError as error:  # no DISPLAY, or it cannot be opened
        raise NoDisplay(f"no display ({error})") from None
    root.withdraw()
    # Tk's `send` lets any client of the X display run Tcl in this interpreter (read the password variable,
    # run commands): deleting the command unregisters the interpreter, so that no script is taken in (Tk's
    # send(n), SECURITY). The dialog needs no inter-application messages.
    root.tk.call("rename", "send", "")
    try:
        from tkinter import ttk

        style = ttk.Style(root)
        if "clam" in style.theme_names():
            style.theme_use("clam")  # the most legible of Tk's themes that every build has
    except tkinter.TclError:
        pass  # the default theme, then
    return root


def ask(client: OidcClient, *, user: str | None) -> tuple[Tokens, str] | None:
    """Sign in with the dialog: the tokens and the password, or None when the user cancelled.

    Raises :class:`NoDisplay` before anything is shown when there is no display to show it on.
    """
    import tkinter

    root = open_root()
    def password_login(attempt: Attempt) -> Tokens:
        # On the dialog's worker thread, with a client of its own: an OidcClient (its SyncExecutor) belongs
        # to the thread that made it.
        with OidcClient(client.provider) as own:
            return own.password_login(attempt.user, attempt.password, attempt.otp)

    state = SignIn(password_login)
    view = DialogView(root, state, issuer=client.provider.issuer, user=user)
    try:
        view.run()
    finally:
        with contextlib.suppress(tkinter.TclError):
            root.destroy()
    if state.result is not None:
        return state.result
    late = view.drain(client.provider.timeout + 5)
    if late is not None and late.tokens is not None:
        client.revoke(late.tokens)  # signed in just as the user cancelled: no session is left behind
    return None
