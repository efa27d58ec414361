"""A minimal headless Chromium for the browser tests, driven over the DevTools protocol.

Chromium is driven on a pipe (--remote-debugging-pipe: JSON messages ending in a NUL
byte, on the browser's fds 3 and 4): no port, no websocket package, nothing but the
standard library. Browser tests skip where Debian's chromium is not installed, except in
CI, where .ci/apt-packages installs it and its absence fails.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)  # fmt: skip
# In CI (env CI set) a missing chromium fails the tests loudly; elsewhere they are skipped.
needs_chromium = pytest.mark.skipif(
    not os.access(CHROMIUM, os.X_OK) and not os.environ.get("CI"),
    reason="Debian's chromium is not installed and CI is unset",
)

# --------------------------------------------------------------------------- a minimal CDP client


class Chromium:
    """One headless browser. `call` sends a command and returns its result; events that
    arrive meanwhile are kept in `events`."""

    def __init__(self, profile: Path):
        commands_read, self._commands = os.pipe()
        self._replies, replies_write = os.pipe()
        # The protocol wants fds 3 and 4 exactly; bash puts them there for us (dash takes
        # no fd above 9), from fds moved above 9 first so the moves cannot clash.
        commands_read, replies_write = _above_9(commands_read), _above_9(replies_write)
        wiring = f'exec "$@" 3<&{commands_read} 4>&{replies_write} {commands_read}<&- {replies_write}>&-'
        self.process = subprocess.Popen(
            ["/bin/bash", "-c", wiring, "bash", CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
             "--remote-debugging-pipe", "about:blank"],
            pass_fds=(commands_read, replies_write), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        os.close(commands_read)
        os.close(replies_write)
        self._buffer = b""
        self._last_id = 0
        self.events: list[dict] = []

    def call(self, method: str, session: str | None = None, timeout: float = 30, **params) -> dict:
        self._last_id += 1
        message = {"id": self._last_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._receive(deadline)
            if reply.get("id") == self._last_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, event: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for i, seen in enumerate(self.events):
                if seen.get("method") == event:
                    return self.events.pop(i)
            self.events.append(self._receive(deadline))

    def _receive(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            if not select.select([self._replies], [], [], max(0.0, deadline - time.monotonic()))[0]:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self._replies, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=5)
        except (OSError, RuntimeError, TimeoutError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._commands)
        os.close(self._replies)


def _above_9(fd: int) -> int:
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return moved


# Runs before the page's own script: counts alert() calls, CSP refusals and uncaught errors.
WATCHERS = """
window.__alerts = 0; window.alert = () => { window.__alerts += 1; };
window.__violations = []; window.__errors = [];
document.addEventListener("securitypolicyviolation", (e) => window.__violations.push(e.violatedDirective + " " + e.blockedURI));
window.addEventListener("error", (e) => window.__errors.push(String(e.message)));
"""


class Page:
    """A tab, 1280x900, with the watchers above installed."""

    def __init__(self, browser: Chromium):
        self.browser = browser
        self.target = browser.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = browser.call("Target.attachToTarget", targetId=self.target, flatten=True)["sessionId"]
        self.call("Page.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=1280, height=900, deviceScaleFactor=1, mobile=False)
        self.call("Page.addScriptToEvaluateOnNewDocument", source=WATCHERS)

    def call(self, method: str, **params) -> dict:
        return self.browser.call(method, session=self.session, **params)

    def __enter__(self) -> "Page":
        return self

    def __exit__(self, *exc) -> None:
        self.browser.call("Target.closeTarget", targetId=self.target)

    def open(self, path: Path) -> None:
        self.navigate(path.as_uri())

    def navigate(self, url: str) -> None:
        self.browser.events.clear()
        self.call("Page.navigate", url=url)
        self.browser.wait_for("Page.loadEventFired")
        self.evaluate("new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))")

    def evaluate(self, expression: str):
        reply = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in reply:
            raise AssertionError(f"page script failed: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    def press(self, key: str, code: str | None = None, text: str | None = None, modifiers: int = 0) -> None:
        """One key press as a person's (keyDown with its text, then keyUp): `key` as the
        DOM names it ("p", "ArrowRight", "PageDown"); modifiers 2 = Ctrl, 8 = Shift."""
        if text is None and not modifiers & 2:
            text = key if len(key) == 1 else "\r" if key == "Enter" else None
        down = {"type": "keyDown" if text else "rawKeyDown", "key": key, "code": code or _code(key), "modifiers": modifiers,
                "windowsVirtualKeyCode": _key_code(key)}
        if text:
            down["text"] = text
        self.call("Input.dispatchKeyEvent", **down)
        self.call("Input.dispatchKeyEvent", type="keyUp", key=key, code=code or _code(key), modifiers=modifiers,
                  windowsVirtualKeyCode=_key_code(key))

    def png(self) -> bytes:
        return base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])

    def screenshot(self, path: Path) -> Path:
        png = base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])
        path.write_bytes(png)
        return path




_NAMED_KEYS = {"ArrowLeft": 37, "ArrowUp": 38, "ArrowRight": 39, "ArrowDown": 40, "PageUp": 33, "PageDown": 34,
               "Escape": 27, "Enter": 13}  # fmt: skip


def _key_code(key: str) -> int:
    if key in _NAMED_KEYS:
        return _NAMED_KEYS[key]
    return ord(key.upper()) if len(key) == 1 and key.isalnum() else 0


def _code(key: str) -> str:
    if key in _NAMED_KEYS:
        return key
    if len(key) == 1 and key.isalpha():
        return f"Key{key.upper()}"
    if len(key) == 1 and key.isdigit():
        return f"Digit{key}"
    return ""


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """One headless Chromium for a test module (import this fixture into the module)."""
    chromium = Chromium(tmp_path_factory.mktemp("chromium-profile"))
    yield chromium
    chromium.close()
