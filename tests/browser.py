"""A real headless Chromium (Debian's package), driven over the DevTools protocol, for tests.

Why not the command line's --screenshot: pages that stream (drillui serve's terminal over a
websocket) need real time before they are worth looking at; the protocol lets a test wait for a
condition in the page, read the DOM and take a screenshot when it is met. Minimal on purpose:
navigate, evaluate, screenshot.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--remote-debugging-port=0"]


class Browser:
    def __init__(self, width: int = 1400, height: int = 900) -> None:
        if CHROMIUM is None:
            raise RuntimeError("chromium is not installed (apt-get install chromium)")
        self.profile = Path(tempfile.mkdtemp(prefix="drillui-chromium-"))
        self.proc = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={self.profile}", f"--window-size={width},{height}",
                                      "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not port_file.exists() or not port_file.read_text().strip():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("chromium did not start its DevTools endpoint")
            time.sleep(0.1)
        self.port = int(port_file.read_text().split()[0])
        self._ids = itertools.count(1)

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def visit(self, url: str, *, until: str, timeout: float = 30.0, screenshot: Path | None = None,
              evaluate: str = "document.documentElement.outerHTML") -> Any:
        """Open `url`, wait until the JS expression `until` is true, return `evaluate`'s value."""
        return asyncio.run(self._visit(url, until, timeout, screenshot, evaluate))

    async def _visit(self, url: str, until: str, timeout: float, screenshot: Path | None, evaluate: str) -> Any:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{self.port}/json/list") as resp:
                pages = [p for p in await resp.json() if p.get("type") == "page"]
            async with http.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                async def call(method: str, **params: Any) -> Any:
                    mid = next(self._ids)
                    await ws.send_str(json.dumps({"id": mid, "method": method, "params": params}))
                    async for msg in ws:
                        data = json.loads(msg.data)
                        if data.get("id") == mid:
                            if "error" in data:
                                raise RuntimeError(f"{method}: {data['error']}")
                            return data.get("result", {})
                    raise RuntimeError("the browser closed the connection")

                await call("Page.enable")
                await call("Page.navigate", url=url)
                deadline = time.monotonic() + timeout
                while True:
                    res = await call("Runtime.evaluate", expression=f"Boolean({until})", returnByValue=True)
                    if res.get("result", {}).get("value") is True:
                        break
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{url}: {until} never became true")
                    await asyncio.sleep(0.25)
                if screenshot is not None:
                    shot = await call("Page.captureScreenshot", format="png")
                    screenshot.write_bytes(base64.b64decode(shot["data"]))
                res = await call("Runtime.evaluate", expression=evaluate, returnByValue=True)
                return res.get("result", {}).get("value")
