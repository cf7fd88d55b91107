"""A virtual X display for tests of desktop windows: Xvfb, driven with xdotool, photographed with Pillow.

:class:`Xvfb` starts Debian's ``Xvfb`` on a display number it picks itself (``-displayfd``: the server
writes the number it could take, so parallel runs never race for one), with no access control from
other hosts (``-nolisten tcp``) and stops it after. ``xdotool`` finds windows by title, focuses them and
types with the XTEST extension, as a person at a keyboard would; :meth:`Xvfb.screenshot` keeps a PNG of
a window (Pillow's ``ImageGrab`` over XCB), and :func:`read_text` reads it back with Tesseract OCR (Debian
``tesseract-ocr``), so that a test asserts the words a person sees on the screen.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import time
from difflib import SequenceMatcher
from pathlib import Path

XVFB = "/usr/bin/Xvfb"
XDOTOOL = "/usr/bin/xdotool"
TESSERACT = "/usr/bin/tesseract"
OCR_SCALE = 3  # Tesseract reads 9-12 pt screen text reliably once enlarged like this
_CONFUSED = str.maketrans({"o": "0", "i": "1", "l": "1"})
OCR_THRESHOLD = 100  # grey levels above are white: text (black, dark grey, dark red) stays, borders go
START_TIMEOUT = 15.0  # seconds for Xvfb to say which display it took


def missing() -> list[str]:
    """The Debian packages a desktop test needs and this machine lacks (`make test` installs them)."""
    return [package for package, path in (("xvfb", XVFB), ("xdotool", XDOTOOL), ("tesseract-ocr", TESSERACT))
            if not shutil.which(path)]


def read_text(png: Path) -> str:
    """The words on a screenshot, by OCR, :func:`squeezed` (OCR reads "User name" as "Username" at times,
    "W" as "W)", "0" as "o"): compare with squeezed text."""
    from PIL import Image

    with Image.open(png) as image:
        grey = image.convert("L")
        large = grey.resize((grey.width * OCR_SCALE, grey.height * OCR_SCALE), Image.Resampling.LANCZOS)
    # Black on white: without it Tesseract skips the text of a field with a focus ring.
    scaled = png.with_name(png.stem + "-ocr.png")
    large.point(lambda v: 255 if v > OCR_THRESHOLD else 0).save(scaled)
    # --psm 11, sparse text: a dialog is labels and fields here and there, not a page of lines.
    result = subprocess.run([TESSERACT, str(scaled), "-", "--psm", "11"], capture_output=True, text=True,
                            timeout=60)
    scaled.unlink()
    if result.returncode != 0:
        raise RuntimeError(f"tesseract: {result.stderr.strip()}")
    return squeezed(result.stdout)


def near(words: str, text: str, ratio: float = 0.85) -> bool:
    """``words`` are on the screen whose :func:`read_text` is ``text``, allowing for a character or two that
    OCR misread, dropped or added (it read "until" as "unti" once in a dozen runs)."""
    want = squeezed(words)
    if want in text:
        return True
    for size in (len(want) - 1, len(want), len(want) + 1):
        for start in range(max(1, len(text) - size + 1)):
            if SequenceMatcher(None, want, text[start:start + size]).ratio() >= ratio:
                return True
    return False


def squeezed(text: str) -> str:
    """Letters and digits only, lower case, with the characters OCR confuses made one (o and 0; i, l and 1):
    "locked until 01:11 (in 15 min)" and an OCR's "lockeduntil o1:11(in15min)" are the same here."""
    return "".join(c for c in text.lower() if c.isalnum()).translate(_CONFUSED)


def _read_line(fd: int, timeout: float) -> str:
    """The display number Xvfb writes, whole: it writes the newline apart, and dies if the pipe is closed
    before ("Cannot write display number")."""
    deadline = time.monotonic() + timeout
    data = b""
    while not data.endswith(b"\n") and len(data) < 32:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        chunk = os.read(fd, 32) if ready else b""
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace").strip()


class Xvfb:
    def __init__(self, log: Path, size: str = "1024x768x24") -> None:
        self.log, self.size = log, size
        self.process: subprocess.Popen[bytes] | None = None
        self.display = ""

    def start(self) -> Xvfb:
        read, write = os.pipe()
        try:
            with self.log.open("wb") as log:  # Xvfb's messages, shown if it does not start
                self.process = subprocess.Popen(
                    [XVFB, "-displayfd", str(write), "-screen", "0", self.size, "-nolisten", "tcp"],
                    pass_fds=(write,), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
            os.close(write)
            number = _read_line(read, START_TIMEOUT)
        finally:
            os.close(read)
        if not number.isdigit() or self.process.poll() is not None:
            self.stop()
            raise RuntimeError(f"Xvfb did not start: {self.log.read_text(errors='replace')[-2000:]}")
        self.display = f":{number}"
        return self

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """An environment whose programs draw on this display (and no other session's)."""
        env = dict(os.environ if base is None else base)
        env.pop("WAYLAND_DISPLAY", None)
        env["DISPLAY"] = self.display
        return env

    def xdotool(self, *args: str, timeout: float = 30) -> str:
        result = subprocess.run([XDOTOOL, *args], capture_output=True, text=True, timeout=timeout, env=self.env())
        if result.returncode != 0:
            raise RuntimeError(f"xdotool {' '.join(args)}: {result.stderr.strip() or result.returncode}")
        return result.stdout

    def find_window(self, title: str, timeout: float = 30) -> str:
        """The id of the visible window whose title is ``title``, once it is mapped."""
        deadline = time.monotonic() + timeout
        while True:
            found = subprocess.run([XDOTOOL, "search", "--onlyvisible", "--name", f"^{title}$"],
                                   capture_output=True, text=True, timeout=timeout, env=self.env())
            ids = found.stdout.split()
            if ids:
                return ids[0]
            if time.monotonic() > deadline:
                raise TimeoutError(f"no window {title!r} appeared on {self.display}")
            time.sleep(0.2)

    def windows(self, title: str) -> list[str]:
        found = subprocess.run([XDOTOOL, "search", "--onlyvisible", "--name", f"^{title}$"], capture_output=True,
                               text=True, timeout=30, env=self.env())
        return found.stdout.split()

    def type_into(self, window: str, text: str) -> None:
        """Focus ``window`` and type ``text`` with XTEST, as from the keyboard (no synthetic events)."""
        self.xdotool("windowfocus", "--sync", window)
        self.xdotool("type", "--delay", "20", text)

    def key(self, window: str, *keys: str) -> None:
        self.xdotool("windowfocus", "--sync", window)
        self.xdotool("key", "--delay", "20", *keys)

    def geometry(self, window: str) -> tuple[int, int, int, int]:
        """x, y, width, height of ``window`` on the screen."""
        values = dict(line.split("=", 1) for line in self.xdotool("getwindowgeometry", "--shell", window).split())
        return int(values["X"]), int(values["Y"]), int(values["WIDTH"]), int(values["HEIGHT"])

    def screenshot(self, window: str, path: Path) -> Path:
        from PIL import ImageGrab

        x, y, width, height = self.geometry(window)
        ImageGrab.grab(bbox=(x, y, x + width, y + height), xdisplay=self.display).save(path)
        return path

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
