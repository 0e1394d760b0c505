"""A headless Chromium driven over the DevTools protocol, for tests that look at a page in a real browser.

Debian's `chromium` (or chromium-browser / google-chrome), a minimal stdlib websocket client (RFC 6455)
and just enough CDP: navigate, evaluate, collect console errors, uncaught exceptions and every network
request, take a full-page screenshot. No Playwright/Selenium.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Dict, List
from urllib.parse import urlparse

import pytest

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium not installed (Debian: apt-get install -y chromium)"
)


# ---- a minimal DevTools-protocol client ---------------------------------------------------------


class DevTools:
    """Just enough of RFC 6455 + CDP to navigate, evaluate, collect console/network events, screenshot."""

    def __init__(self, ws_url: str, timeout: float = 30.0):
        u = urlparse(ws_url)
        self.sock = socket.create_connection((u.hostname, u.port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET {u.path} HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("DevTools closed the connection during the handshake")
            buf += chunk
        head, self.buf = buf.split(b"\r\n\r\n", 1)
        assert b" 101 " in head.split(b"\r\n")[0], head
        self.next_id = 0
        self.events: List[Dict[str, Any]] = []

    def _recv_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(max(65536, n - len(self.buf)))
            if not chunk:
                raise ConnectionError("DevTools connection closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _send(self, payload: bytes, opcode: int = 1) -> None:
        mask = os.urandom(4)
        n = len(payload)
        head = bytes([0x80 | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 1 << 16:
            head += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack(">Q", n)
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def _recv_message(self) -> Dict[str, Any]:
        parts = b""
        while True:
            b0, b1 = self._recv_exact(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._recv_exact(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._recv_exact(8))[0]
            mask = self._recv_exact(4) if b1 & 0x80 else None
            data = self._recv_exact(n)
            if mask:
                data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
            opcode = b0 & 0x0F
            if opcode == 9:  # ping
                self._send(data, opcode=10)
                continue
            if opcode == 8:
                raise ConnectionError("DevTools closed the websocket")
            parts += data
            if b0 & 0x80:
                return json.loads(parts)

    def call(self, method: str, **params) -> Dict[str, Any]:
        self.next_id += 1
        my_id = self.next_id
        self._send(json.dumps({"id": my_id, "method": method, "params": params}).encode())
        while True:
            msg = self._recv_message()
            if msg.get("id") == my_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def wait_for(self, method: str, timeout: float = 30.0) -> Dict[str, Any]:
        deadline = time.time() + timeout
        seen = next((e for e in self.events if e["method"] == method), None)
        while seen is None:
            if time.time() > deadline:
                raise TimeoutError(method)
            msg = self._recv_message()
            if "method" in msg:
                self.events.append(msg)
                if msg["method"] == method:
                    seen = msg
        return seen

    def evaluate(self, expression: str):
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(r["exceptionDetails"])
        return r["result"].get("value")

    def close(self) -> None:
        self.sock.close()


class HeadlessChromium:
    """A headless Chromium with remote debugging on a free port, its profile in a temp folder."""

    def __init__(self, width: int = 1400, height: int = 1000):
        self.profile = tempfile.mkdtemp(prefix="chromium-profile-")
        self.proc = subprocess.Popen(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-default-apps",
                "--hide-scrollbars",
                "--mute-audio",
                "--enable-unsafe-swiftshader",  # WebGL (parcoords) in software
                f"--user-data-dir={self.profile}",
                "--remote-debugging-port=0",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.time() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.proc.poll() is not None or time.time() > deadline:
                self.close()
                raise RuntimeError("chromium did not start its DevTools endpoint")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10).read())
        page = next(t for t in targets if t["type"] == "page")
        self.cdp = DevTools(page["webSocketDebuggerUrl"])
        for domain in ("Runtime", "Log", "Page", "Network"):
            self.cdp.call(f"{domain}.enable")

    def open(self, url: str, settle_s: float = 1.0) -> None:
        self.cdp.events.clear()
        self.cdp.call("Page.navigate", url=url)
        self.cdp.wait_for("Page.loadEventFired", timeout=60)
        time.sleep(settle_s)  # plotly draws parcoords on animation frames

    def problems(self) -> List[str]:
        """Console errors, uncaught exceptions, error-level log entries and failed requests since open()."""
        out = []
        for e in self.cdp.events:
            m, p = e["method"], e.get("params", {})
            if m == "Runtime.exceptionThrown":
                d = p["exceptionDetails"]
                out.append("exception: " + str((d.get("exception") or {}).get("description") or d.get("text")))
            elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append("console.error: " + " ".join(str(a.get("value", a.get("description"))) for a in p["args"]))
            elif m == "Log.entryAdded" and p["entry"]["level"] == "error":
                out.append("log: " + p["entry"]["text"])
            elif m == "Network.loadingFailed":
                out.append("request failed: " + p.get("errorText", ""))
        return out

    def requested_urls(self) -> List[str]:
        return [e["params"]["request"]["url"] for e in self.cdp.events if e["method"] == "Network.requestWillBeSent"]

    def screenshot(self, path: Path, full_page: bool = True, width: int = 1400) -> Path:
        if full_page:
            h = int(self.cdp.evaluate("Math.ceil(document.documentElement.scrollHeight)"))
            # A viewport as tall as the page (rather than captureBeyondViewport, which leaves WebGL
            # plots half painted), then let plotly redraw every plot at the new size.
            self.cdp.call(
                "Emulation.setDeviceMetricsOverride", width=width, height=h, deviceScaleFactor=1, mobile=False
            )
            self.cdp.evaluate(
                "Promise.all([...document.querySelectorAll('.js-plotly-plot')]"
                ".map(p => Plotly.Plots.resize(p))).then(() => true)"
            )
            time.sleep(1.0)
        shot = self.cdp.call("Page.captureScreenshot", format="png")
        Path(path).write_bytes(base64.b64decode(shot["data"]))
        return Path(path)

    def close(self) -> None:
        try:
            if getattr(self, "cdp", None):
                self.cdp.close()
        finally:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
            shutil.rmtree(self.profile, ignore_errors=True)
