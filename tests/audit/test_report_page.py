"""The security officer's pages as a reader sees them: rendered by headless Chromium (Debian's
``chromium``, installed by ``make test``) from a realistic log, read back from the DOM Chromium built,
and kept as screenshots under the test's tmp folder (each path is printed)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from audit.chain import ChainWriter, log_files
from devtools.peers import PROJECT
from tests.audit.sample_log import LONG_REASON, write_sample

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is installed by `make test`")


def chromium(page: Path, profile: Path, *action: str, height: int = 2200) -> subprocess.CompletedProcess[str]:
    """Headless Chromium on ``page``, with a profile of its own and nothing that reaches the network."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBUS")}
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                           "--disable-component-update", "--disable-default-apps", "--disable-extensions",
                           "--disable-sync", "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
                           "--hide-scrollbars", "--mute-audio", f"--user-data-dir={profile}",
                           f"--window-size=1280,{height}", *action, page.as_uri()],
                          capture_output=True, text=True, timeout=120, env=env)


class Dom(HTMLParser):
    """What a reader sees: the text of each element with an id, each count card, links, elements."""

    def __init__(self, markup: str) -> None:
        super().__init__()
        self.by_id: dict[str, list[str]] = {}
        self.counts: dict[str, int] = {}
        self.links: list[str] = []
        self.tags: set[str] = set()
        self._open: list[tuple[str, str | None, str | None]] = []  # tag, id, data-count
        self.text: list[str] = []
        self.feed(markup)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        self.tags.add(tag)
        if tag in ("td", "th", "p", "div", "br", "h2", "h3", "tr"):  # where a reader sees a break between words
            for _, ident, _ in self._open:
                if ident:
                    self.by_id[ident].append(" ")
        if tag == "a" and found.get("href"):
            self.links.append(str(found["href"]))
        if tag not in ("br", "meta", "line", "rect", "path", "col"):
            self._open.append((tag, found.get("id"), found.get("data-count")))
            if found.get("id"):
                self.by_id[str(found["id"])] = []

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            if self._open.pop()[0] == tag:
                break

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        for _, ident, _ in self._open:
            if ident:
                self.by_id[ident].append(data)
        cards = [count for _, _, count in self._open if count]
        if cards and data.strip().replace(",", "").isdigit() and cards[-1] not in self.counts:
            self.counts[cards[-1]] = int(data.strip().replace(",", ""))

    def of(self, ident: str) -> str:
        return " ".join("".join(self.by_id[ident]).split())


def render(page: Path, tmp: Path, *colours: tuple[int, int, int]) -> Dom:
    """The DOM Chromium made of ``page``, and its screenshot kept next to it (the path is printed)."""
    dumped = chromium(page, tmp / f"profile-{page.stem}-dom", "--dump-dom")
    assert dumped.returncode == 0 and "</html>" in dumped.stdout, dumped.stderr[-2000:]
    png = page.with_suffix(".png")
    shot = chromium(page, tmp / f"profile-{page.stem}-png", f"--screenshot={png}")
    assert shot.returncode == 0 and png.exists(), shot.stderr[-2000:]
    print(f"screenshot of {page.name}: {png}")
    _looks_rendered(png, colours)
    return Dom(dumped.stdout)


def _looks_rendered(png: Path, wanted: tuple[tuple[int, int, int], ...]) -> None:
    """A real rendering of the page: 1280 pixels wide, with the integrity box's green and ``wanted``."""
    from PIL import Image

    with Image.open(png) as image:
        assert image.size[0] == 1280
        colours = {colour for _, colour in image.convert("RGB").getcolors(maxcolors=1 << 20) or []}
    assert {(0xEE, 0xF8, 0xEE), *wanted} <= colours


def cli(*args: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "audit.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=PROJECT, timeout=120)
    assert done.returncode == 0, done.stderr
    return done


def written(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for file in log_files(path) for line in file.read_bytes().splitlines()]


def test_the_report_as_the_security_officer_sees_it(tmp_path: Path) -> None:
    log = write_sample(tmp_path / "site")
    public = tmp_path / "site" / "decision-log.key.pub"
    page = tmp_path / "report.html"
    cli("report", "--log", log, "--public-key", public, "--html", page, "--timezone", "Europe/Paris")
    assert page.stat().st_mode & 0o777 == 0o600  # it holds what the log holds
    dom = render(page, tmp_path, (0xB5, 0x47, 0x2F))  # and the refusal bars' red
    records = written(log)
    decisions = [r for r in records if r["event"] in ("authorization", "authentication")]
    key_id = next(r["key_id"] for r in records if r["event"] == "checkpoint")
    assert dom.of("integrity").startswith(f"Intact: {len(records)} records in 1 file(s); last signed checkpoint")
    assert f"(Ed25519, key {key_id}); closed cleanly" in dom.of("integrity")
    assert dom.counts["decisions"] == len(decisions)
    assert dom.counts["refused"] == sum(r["decision"] == "deny" for r in decisions) == 26
    assert dom.counts["break-glass"] == sum(r.get("break_glass") is True for r in decisions) == 5
    text = " ".join(dom.text)
    assert "2026-11-30 06:58:00 UTC to 2026-12-02 21:00:00 UTC" in text and "Hospital A (demo)" in text
    assert LONG_REASON in text  # whole, never cut
    reason = next(link for link in dom.links if link.startswith("#reason-"))
    assert dom.of(reason[1:]).startswith("no_role: 7 refusal(s)")  # the drill-down the bar links to
    refusals = {f"r-{r['seq']}" for r in decisions if r["decision"] == "deny"}
    assert refusals <= set(dom.by_id)  # every refused record has its anchor
    assert {link[1:] for link in dom.links if link.startswith("#r-")} <= refusals  # timelines link to them
    assert "mfarad" in dom.of("u-0") and "script" not in dom.tags


def test_the_patients_accounting_as_the_patient_would_read_it(tmp_path: Path) -> None:
    log = write_sample(tmp_path / "site")
    page = tmp_path / "patient.html"
    cli("patient", "PAT-OPTOUT", "--log", log, "--public-key", tmp_path / "site" / "decision-log.key.pub",
        "--html", page)
    dom = render(page, tmp_path)
    assert dom.of("integrity").startswith("Intact:")
    assert (dom.counts["accesses"], dom.counts["refused"], dom.counts["break-glass"], dom.counts["images"]) == (
        7, 1, 5, 3)
    first = next(ident for ident in dom.by_id if ident.startswith("a-"))
    assert dom.of(first).startswith("2026-12-01 02:14:05 UTC erdoc emergency_physician, hospital-a WS2 C-FIND")
    assert "deny consent_denied" in dom.of(first)


def test_hostile_values_are_text_and_a_broken_log_says_so(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    writer = ChainWriter(path, b"k" * 32)
    for n in range(3):
        writer.write({"time": f"2026-12-01T10:00:0{n}.000000+00:00", "event": "authorization", "action": "C-FIND",
                      "decision": "deny", "reason": "<img src=x onerror=alert(1)>",
                      "user": {"username": '"><script>alert(1)</script>'}, "resource": {"patient_id": "P<u>1</u>"}})
    writer.close()
    (tmp_path / "old.key").write_text((b"k" * 32).hex())
    lines = path.read_bytes().splitlines()
    lines[2] = lines[2].replace(b"P<u>1", b"P<u>2")  # an edit
    path.write_bytes(b"\n".join(lines) + b"\n")
    page = tmp_path / "hostile.html"
    done = subprocess.run([sys.executable, "-m", "audit.cli", "report", "--log", str(path), "--key-file",
                           str(tmp_path / "old.key"), "--html", str(page)], capture_output=True, text=True, cwd=PROJECT)
    assert done.returncode == 1 and "BROKEN: edited" in done.stdout  # the report is written, the log is damaged
    dumped = chromium(page, tmp_path / "profile", "--dump-dom")
    dom = Dom(dumped.stdout)
    assert not {"script", "img", "u"} & dom.tags
    assert '"><script>alert(1)</script>' in " ".join(dom.text) and "<img src=x onerror=alert(1)>" in " ".join(dom.text)
    assert dom.of("integrity").startswith("BROKEN: edited at ")
