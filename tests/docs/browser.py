"""Load a page in headless Chromium and report what went wrong, over the DevTools protocol.

Chromium is started with ``--remote-debugging-pipe``: protocol messages are
JSON texts ending in a NUL byte, written to its file descriptor 3 and read
from its descriptor 4, so no WebSocket client is needed. Every wait is
bounded by a deadline. No network: the pages are ``file://`` URLs and
Chromium's own background traffic is switched off.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["PageReport", "find_chromium", "load_pages"]

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-extensions",
    "--disable-default-apps",
    "--remote-debugging-pipe",
)


def find_chromium() -> str | None:
    """Debian's ``chromium`` (or another Chromium on PATH), if any."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@dataclass
class PageReport:
    """What loading one page showed."""

    url: str
    errors: list[str] = field(default_factory=list)
    text_length: int = 0
    title: str = ""

    @property
    def ok(self) -> bool:
        return not self.errors and self.text_length > 0


class _Pipe:
    def __init__(self, write_fd: int, read_fd: int) -> None:
        self._write = write_fd
        self._read = read_fd
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def send(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> int:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        return self._next_id

    def _read_one(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("Chromium did not answer in time")
            ready, _, _ = select.select([self._read], [], [], left)
            if ready:
                chunk = os.read(self._read, 1 << 16)
                if not chunk:
                    raise ConnectionError("Chromium closed the DevTools pipe")
                self._buffer += chunk
        raw, _, self._buffer = self._buffer.partition(b"\0")
        message: dict[str, Any] = json.loads(raw)
        return message

    def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        session: str | None = None,
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        wanted = self.send(method, params, session)
        deadline = time.monotonic() + timeout
        while True:
            message = self._read_one(deadline)
            if message.get("id") == wanted:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result
            self.events.append(message)

    def wait_for(self, method: str, session: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(
            e.get("method") == method and e.get("sessionId") == session for e in self.events
        ):
            self.events.append(self._read_one(deadline))


def _errors_from(events: list[dict[str, Any]], session: str) -> list[str]:
    errors = []
    for event in events:
        if event.get("sessionId") != session:
            continue
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            text = details.get("exception", {}).get("description") or details.get("text")
            errors.append(f"JavaScript error: {text}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            args = " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
            errors.append(f"console.error: {args}")
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            errors.append(f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}")
        elif method == "Network.requestWillBeSent":
            url = params.get("request", {}).get("url", "")
            if not url.startswith(("file:", "data:", "about:", "blob:")):
                errors.append(f"fetched from the network: {url}")
        elif method == "Network.loadingFailed" and not params.get("canceled"):
            errors.append(f"failed to load: {params.get('errorText')} ({params.get('type')})")
    return errors


_PROBE = """(() => {
  const broken = [...document.images]
    .filter(img => !(img.complete && img.naturalWidth > 0)).map(img => img.src);
  return JSON.stringify({
    text: document.body ? document.body.innerText.trim().length : 0,
    title: document.title,
    sheets: document.styleSheets.length,
    broken: broken,
  });
})()"""


def load_pages(chromium: str, pages: list[Path], timeout: float = 60.0) -> list[PageReport]:
    """Load each page in one headless Chromium and report its errors and text."""
    with tempfile.TemporaryDirectory(prefix="cqrs-chromium-") as profile:
        to_chrome_r, to_chrome_w = _high_pipe()
        from_chrome_r, from_chrome_w = _high_pipe()
        # Chromium reads commands on fd 3 and writes on fd 4. A tiny Python
        # wrapper moves the pipe's ends there (they are numbered 10 or more, so
        # neither is clobbered; dash cannot redirect descriptors above 9), then
        # execs Chromium (on Debian a shell script that execs the browser).
        process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                _WRAPPER,
                str(to_chrome_r),
                str(from_chrome_w),
                chromium,
                *FLAGS,
                f"--user-data-dir={profile}",
                "about:blank",
            ],
            pass_fds=(to_chrome_r, from_chrome_w),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        pipe = _Pipe(to_chrome_w, from_chrome_r)
        try:
            return [_load(pipe, page, timeout) for page in pages]
        finally:
            with contextlib.suppress(OSError):
                pipe.send("Browser.close")
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=15)
            os.close(to_chrome_w)
            os.close(from_chrome_r)


_WRAPPER = (
    "import os, sys; os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4); "
    "os.execv(sys.argv[3], sys.argv[3:])"
)


def _high_pipe() -> tuple[int, int]:
    """A pipe whose two ends are file descriptors 10 or higher."""
    ends = []
    for fd in os.pipe():
        ends.append(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10))
        os.close(fd)
    return ends[0], ends[1]


def _load(pipe: _Pipe, page: Path, timeout: float) -> PageReport:
    url = page.resolve().as_uri()
    target = pipe.call("Target.createTarget", {"url": "about:blank"}, timeout=timeout)
    session = pipe.call("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})[
        "sessionId"
    ]
    for domain in ("Page", "Runtime", "Log", "Network"):
        pipe.call(f"{domain}.enable", session=session, timeout=timeout)
    pipe.events.clear()
    pipe.call("Page.navigate", {"url": url}, session=session, timeout=timeout)
    pipe.wait_for("Page.loadEventFired", session, timeout)
    # Let scripts run after load (the theme's own, our diagrams' images).
    pipe.call(
        "Runtime.evaluate",
        {"expression": "new Promise(r => setTimeout(r, 300))", "awaitPromise": True},
        session=session,
        timeout=timeout,
    )
    probe = pipe.call(
        "Runtime.evaluate",
        {"expression": _PROBE, "returnByValue": True},
        session=session,
        timeout=timeout,
    )
    found = json.loads(probe["result"]["value"])
    report = PageReport(url, _errors_from(pipe.events, session), found["text"], found["title"])
    report.errors += [f"broken image or object: {src}" for src in found["broken"]]
    if found["sheets"] == 0:
        report.errors.append("no stylesheet applied")
    pipe.call("Target.closeTarget", {"targetId": target["targetId"]}, timeout=timeout)
    return report
