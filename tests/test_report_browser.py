"""The session report in a real browser: headless Chromium (Debian's `chromium`).

What a user gets: the charts and checklists in the rendered DOM, no request to any network
(every request Chromium makes goes to a local trap proxy, which records it; the page's CSP would
also log anything it had to refuse), a screenshot that is not blank, and a printed PDF where
each run starts on a new page. Without Chromium these tests skip, saying how to install it
(`.ci/run` installs it; a failed install must not fail CI).
"""

from __future__ import annotations

import http.server
import re
import shutil
import struct
import subprocess
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from drillui.report.build import write_report
from tests.test_report import NOW, Doc, run_paths, write_session

pytestmark = pytest.mark.slow

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-default-browser-check", "--disable-extensions",
    "--disable-default-apps", "--disable-domain-reliability", "--no-pings", "--dns-prefetch-disable", "--hide-scrollbars",
    "--disable-features=NetworkTimeServiceQuerying,OptimizationHints,MediaRouter,Translate,AutofillServerCommunication,"
    "CertificateTransparencyComponentUpdater,PreconnectToSearch,NetworkPrediction,SignInProfileCreation,ChromeSignin",
]
BROWSER_OWN_HOSTS = frozenset({"accounts.google.com", "www.google.com", "clients2.google.com", "update.googleapis.com",
                               "clientservices.googleapis.com", "safebrowsing.googleapis.com", "redirector.gvt1.com",
                               "optimizationguide-pa.googleapis.com", "content-autofill.googleapis.com"})
"""Chromium's own background calls, whatever page it shows (seen even on about:blank)."""
SESSION = ("passed", "failed", "stopped", "legacy")


@pytest.fixture(scope="module")
def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium; .ci/run installs it)")
    return found


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The session's report, and a report of its first run alone."""
    tmp = tmp_path_factory.mktemp("browser")
    root = write_session(tmp / "snapshots")
    out = {"session": tmp / "session.html", "single": tmp / "single.html"}
    write_report(run_paths(root, *SESSION), out["session"], selection="test", root=root, now=NOW)
    write_report(run_paths(root, "passed"), out["single"], selection="test", root=root, now=NOW)
    return out


class Trap:
    """A proxy that answers nothing and remembers every request sent to it."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        trap = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _record(self) -> None:
                trap.requests.append((self.command, self.path))
                self.send_response(403)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = do_HEAD = do_CONNECT = _record

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def page_requests(self) -> list[tuple[str, str]]:
        def host(target: str) -> str:
            return re.sub(r"^[a-z]+://", "", target).split("/")[0].split(":")[0]

        return [r for r in self.requests if host(r[1]) not in BROWSER_OWN_HOSTS]


@pytest.fixture
def trap() -> Iterator[Trap]:
    t = Trap()
    t.thread.start()
    yield t
    t.server.shutdown()
    t.server.server_close()


def chrome(binary: str, tmp: Path, *args: str, proxy: str | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [binary, *FLAGS, f"--user-data-dir={tmp / 'profile'}", "--enable-logging=stderr", "--v=0"]
    if proxy is not None:
        # Every request goes to the trap, loopback included: nothing reaches a network unseen.
        cmd += [f"--proxy-server={proxy}", "--proxy-bypass-list=<-loopback>"]
    proc = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_the_rendered_dom_has_the_charts_and_checklists_and_needed_no_network(
        chromium: str, pages: dict[str, Path], trap: Trap, tmp_path: Path) -> None:
    proc = chrome(chromium, tmp_path, "--virtual-time-budget=5000", "--dump-dom", pages["session"].as_uri(), proxy=trap.url)
    dom = proc.stdout
    assert dom.count('<svg class="chart"') == 3  # the legacy run has no times to chart: it says so instead
    assert dom.count('<table class="checks"') == 4
    assert len(re.findall(r'<tr class="check row-', dom)) == 10 + 10 + 10 + 2
    assert dom.count('<polyline class="series"') == 3 * 6 and dom.count('class="band"') == 3
    assert "No chart: the run recorded no start time" in dom
    assert len(re.findall(r'<img src="data:image/svg\+xml;base64,', dom)) == 3
    # The hostile strings stayed text: the browser built no element and no handler from them.
    doc = Doc(dom)
    assert not doc.all("script") and not doc.all("iframe")
    assert not [name for _, attrs in doc.tags for name in attrs if name.startswith("on")]
    assert doc.joined.count('<script>alert("x")</script>') >= 6
    assert trap.page_requests() == []
    assert "Content Security Policy" not in proc.stderr, "the page asked for something its CSP refused"


def test_the_trap_does_see_a_page_that_fetches(chromium: str, trap: Trap, tmp_path: Path) -> None:
    """The control: without it, an empty trap could mean a broken trap."""
    page = tmp_path / "fetches.html"
    page.write_text('<!doctype html><img src="http://fetch.example.invalid/x.png">'
                    '<link rel="stylesheet" href="https://fonts.example.invalid/a.css">', encoding="utf-8")
    chrome(chromium, tmp_path, "--virtual-time-budget=3000", "--dump-dom", page.as_uri(), proxy=trap.url)
    targets = {target for _, target in trap.page_requests()}
    assert "http://fetch.example.invalid/x.png" in targets and "fonts.example.invalid:443" in targets


def _png(path: Path) -> tuple[int, int, bytes]:
    """(width, height, the decoded scanlines) of a PNG Chromium wrote."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    return width, height, zlib.decompress(idat)


def test_a_screenshot_of_the_report_is_not_blank(chromium: str, pages: dict[str, Path], tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    chrome(chromium, tmp_path, "--window-size=1280,2400", f"--screenshot={shot}", pages["session"].as_uri())
    width, height, raw = _png(shot)
    assert (width, height) == (1280, 2400)
    rows = len(raw) // height
    lines = {raw[i * rows:(i + 1) * rows] for i in range(height)}
    # A blank (or single-colour) page has a handful of distinct lines; text, tables and charts have hundreds.
    assert len(lines) > 400 and len(set(raw)) > 100


def _pdf_pages(path: Path) -> int:
    data = path.read_bytes()
    assert data[:5] == b"%PDF-"
    counts = [int(n) for n in re.findall(rb"/Type\s*/Pages\b[^>]*?/Count\s+(\d+)", data, re.S)]
    counts += [int(n) for n in re.findall(rb"/Count\s+(\d+)[^>]*?/Type\s*/Pages\b", data, re.S)]
    assert counts, "no page tree in the PDF"
    return max(counts)


def test_printed_each_run_starts_on_a_new_page(chromium: str, pages: dict[str, Path], tmp_path: Path) -> None:
    one, many = tmp_path / "single.pdf", tmp_path / "session.pdf"
    chrome(chromium, tmp_path, "--no-pdf-header-footer", f"--print-to-pdf={one}", pages["single"].as_uri())
    chrome(chromium, tmp_path, "--no-pdf-header-footer", f"--print-to-pdf={many}", pages["session"].as_uri())
    single, session = _pdf_pages(one), _pdf_pages(many)
    assert single >= 2  # the summary, then the run on its own page
    assert session >= 1 + len(SESSION) and session > single
