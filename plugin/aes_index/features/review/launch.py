"""`aes-index review` started in the background, for a caller that cannot keep a terminal
open: the darktable plugin's "review in browser".

darktable's Lua API (9.x) has no call that opens a URL or starts a program without waiting
for it: a script runs a program with darktable.control.execute (system() through a shell,
returning when the program ends; lua-scripts' dtutils.system.launch_default_app is the same
call around xdg-open). So the plugin asks aes-index, which starts the review as its own
process, detached from darktable (a new session, no terminal, stopping itself when idle),
waits until it listens, and answers with its address.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

from ...errors import ExitCode, ReviewUnavailable

STARTUP_S = 120  # the index opened, the groups read: minutes only on a very slow disk
IDLE_MINUTES = 120  # a background review stops after this long without a request


def start_detached(db: Path, roots: Sequence[str]) -> tuple[str, bool]:
    """(the review's URL with its token, whether one was already running on this index).
    The program is this Python running aes_index.cli: no file name reaches a shell."""
    from .server import running_url

    argv = [sys.executable, "-m", "aes_index.cli", "review", "--db", str(db), "--no-browser", "--json",
            "--stop-when-idle", str(IDLE_MINUTES), "--", *roots]  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="aes-review-") as folder:
        out, err = Path(folder, "out"), Path(folder, "err")
        with open(out, "wb") as stdout, open(err, "wb") as stderr:
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                                       start_new_session=True, close_fds=True)  # fmt: skip
        url = _wait_for_url(process, out)
        if url:
            return url, False
        if process.returncode == ExitCode.ALREADY_RUNNING and (url := running_url(db)):
            return url, True
        lines = err.read_text("utf-8", "replace").strip().splitlines()
        raise ReviewUnavailable(lines[-1] if lines else f"aes-index review ended with exit code {process.returncode}")


def _wait_for_url(process: subprocess.Popen, out: Path) -> str | None:
    import json

    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        exited = process.poll() is not None
        text = out.read_text("utf-8", "replace")
        try:
            return json.loads(text)["url"]  # --json: one object, once it is whole
        except (ValueError, KeyError, TypeError):
            if exited:
                return None
        time.sleep(0.05)
    process.terminate()
    raise ReviewUnavailable(f"aes-index review did not start within {STARTUP_S} s")


def address(url: str) -> str:
    """The URL without its token: what darktable shows (the token stays in the browser)."""
    return url.split("?", 1)[0]
