"""`aes-index review`: the local web app, run for real (`aes-index review` in a subprocess)
over a library indexed with the tiny model and culled (test_culling_marks' burst: four
frames 0.25 s apart, one in focus).

Plain HTTP requests check who is refused (token, Host, Origin, Sec-Fetch-Site, ids the
index does not hold); headless Chromium (tests/chromium.py), driven by key presses,
checks that reviewing the burst by keys writes the sidecars (read back with exiv2) and
that Ctrl+Z gives back every byte, and that the 100 % loupe shows the original's pixels.
With AES_SCREENSHOTS=1 the browser tests also write docs/images/review-group.png and
review-loupe.png (the README's): CI leaves the tree as it is.
"""

from __future__ import annotations

import http.client
import io
import json
import math
import os
import re
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from PIL import Image, ImageOps

from aes_index.errors import ExitCode
from aes_index.features.culling.cull import load_groups
from aes_index.index.store import Index
from chromium import Chromium, Page, browser, needs_chromium  # noqa: F401 - browser: a fixture
from conftest import REPO_ROOT, cli_stdout, run_cli
from test_culling_marks import BURST, DARKTABLE_SIDECAR, SHARP, make_library
from test_xmp import exiv2_properties

SCREENSHOTS = REPO_ROOT / "docs" / "images"
TAKE_SCREENSHOTS = bool(os.environ.get("AES_SCREENSHOTS"))


# --------------------------------------------------------------------------- a culled library and its server


@pytest.fixture(scope="module")
def library(tmp_path_factory, tiny_model) -> dict:
    """The burst library, indexed (tiny model) and culled through the CLI."""
    folder = tmp_path_factory.mktemp("review")
    root, index = folder / "Photos", folder / "index.db"
    make_library(root)
    model = ["--model", tiny_model["config"], "--pretrained", tiny_model["checkpoint"], "--device", "cpu", "--dtype", "fp32"]
    env = {"HOME": str(folder), "HF_HUB_OFFLINE": "1", "XDG_CONFIG_HOME": str(folder / "config"), "AES_INDEX_CACHE_DIR": str(folder / "cache")}
    with pytest.MonkeyPatch.context() as patch:  # as conftest's isolated_environment, for a module fixture
        for name, value in env.items():
            patch.setenv(name, value)
        cli_stdout("rebuild", root, *model, "--workers", "0", "--db", index, "-q")
        cli_stdout("cull", "--db", index, "-q")
    with Index(index) as opened:
        (group,) = load_groups(opened)
        ids = {Path(m.path).name: m.image_id for m in group.members}
    assert Path(group.keeper.path).name == SHARP
    return {"root": root, "index": index, "env": env, "group": group.id, "ids": ids, "keeper": group.keeper_id}


class Review:
    """`aes-index review --no-browser` in a subprocess, and the URL it printed."""

    def __init__(self, library: dict, *extra: str):
        env = {**os.environ, **library["env"], "PYTHONPATH": os.pathsep.join(sys.path)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "aes_index.cli", "review", "--no-browser", "--db", str(library["index"]), *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
        )
        self.url = self._first_line()
        parts = urlsplit(self.url)
        self.port = parts.port
        self.token = parts.query.removeprefix("token=")

    def _first_line(self, timeout: float = 60) -> str:
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        line = self.process.stdout.readline().strip() if ready else ""
        if not line.startswith("http://"):
            self.process.kill()
            raise AssertionError(f"review printed no URL: {line!r} {self.process.stderr.read()[-2000:]}")
        return line

    def request(self, path: str, method: str = "GET", headers: dict | None = None, body: bytes | None = None,
                token: bool = True) -> tuple[int, dict, bytes]:
        """(status, headers, body); with the run's token in its header unless `token` is False."""
        sent = {"Host": f"127.0.0.1:{self.port}", **({"X-Review-Token": self.token} if token else {}),
                **({"Content-Length": str(len(body))} if body is not None else {}), **(headers or {})}
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for name, value in sent.items():
                connection.putheader(name, value)
            connection.endheaders(body)
            response = connection.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            connection.close()

    def json(self, path: str, **options) -> dict:
        status, _, body = self.request(path, **options)
        assert status == 200, body
        return json.loads(body)

    def stop(self) -> int:
        """Ctrl-C, as a person stops it: the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout=30)
        finally:
            self.process.stdout.close()
            self.process.stderr.close()


@pytest.fixture(scope="module")
def review(library):
    server = Review(library)
    yield server
    server.stop()


# --------------------------------------------------------------------------- who is refused


def test_the_server_listens_on_127_0_0_1_only_and_prints_its_url_with_a_token(review):
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/\?token=[A-Za-z0-9_-]{40,}", review.url)
    status, _, _ = review.request("/api/groups")
    assert status == 200


@pytest.mark.parametrize("token", [None, "wrong-token", ""])
def test_a_missing_or_wrong_token_is_refused(review, token):
    headers = {} if token is None else {"X-Review-Token": token}
    for path in ("/", "/api/groups", f"/api/photos/1/image", "/review.js"):
        status, _, body = review.request(path, headers=headers, token=False)
        assert status == 401, (path, body)
        assert b"token" in body
    status, _, _ = review.request(f"/?token={token or 'x'}", token=False)
    assert status == 401


def test_the_page_url_trades_its_token_for_a_strict_http_only_cookie(review):
    status, headers, _ = review.request(f"/?token={review.token}", token=False)
    assert status == 303 and headers["location"] == "/"
    cookie = headers["set-cookie"]
    name, value = cookie.split(";")[0].split("=", 1)
    assert value == review.token and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    status, headers, body = review.request("/api/groups", headers={"Cookie": f"{name}={value}"}, token=False)
    assert status == 200 and json.loads(body)["groups"]
    assert "default-src 'none'" in headers["content-security-policy"]
    assert headers["cross-origin-resource-policy"] == "same-origin"


@pytest.mark.parametrize("host", ["evil.example:{port}", "127.0.0.1:1", "localhost", "[::1]:{port}", "127.0.0.1.nip.io:{port}"])
def test_a_foreign_host_is_refused_dns_rebinding(review, host):
    status, _, body = review.request("/api/groups", headers={"Host": host.format(port=review.port)})
    assert status == 403 and b"Host" in body


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://127.0.0.1:1", "https://127.0.0.1:{port}"])
def test_a_foreign_origin_is_refused_cross_site(review, origin, library):
    body = json.dumps({"action": "pick"}).encode()
    photo = library["keeper"]
    for method, path, sent in (("GET", "/api/groups", None), ("POST", f"/api/photos/{photo}/decision", body)):
        status, _, answer = review.request(path, method, {"Origin": origin.format(port=review.port),
                                                          "Content-Type": "application/json"}, sent)  # fmt: skip
        assert status == 403 and b"Origin" in answer


def test_a_request_from_another_site_or_local_server_is_refused_by_sec_fetch_site(review):
    for site in ("cross-site", "same-site"):
        status, _, _ = review.request("/api/groups", headers={"Sec-Fetch-Site": site})
        assert status == 403
    assert review.request("/api/groups", headers={"Sec-Fetch-Site": "same-origin", "Origin": f"http://localhost:{review.port}",
                                                  "Host": f"localhost:{review.port}"})[0] == 200  # fmt: skip


def test_an_id_the_index_does_not_hold_is_refused(review, library):
    missing = max(library["ids"].values()) + 1000
    for path in (f"/api/photos/{missing}", f"/api/photos/{missing}/image?w=100&h=100",
                 f"/api/photos/{missing}/tiles/0/0/0", f"/api/photos/-1/image", "/api/groups/99999"):
        status, _, body = review.request(path)
        assert status == 404, (path, body)
    status, _, _ = review.request(f"/api/photos/{missing}/decision", "POST", {"Content-Type": "application/json"},
                                  json.dumps({"action": "pick"}).encode())  # fmt: skip
    assert status == 404
    for path in ("/api/photos/..%2f..%2fetc%2fpasswd/image", "/api/photos/%2fetc%2fpasswd", "/etc/passwd"):
        assert review.request(path)[0] == 404


def test_the_groups_and_a_photo_come_from_culling(review, library):
    groups = review.json("/api/groups")["groups"]
    assert [g["id"] for g in groups] == [library["group"]]
    group = review.json(f"/api/groups/{library['group']}")
    assert group["members"][0]["id"] == library["keeper"] and group["members"][0]["keeper"]
    assert sorted(m["name"] for m in group["members"]) == sorted(BURST)
    assert "sharp" in group["reason"]
    assert all("fullPath" not in m and m["image"]["width"] == 900 for m in group["members"])
    blurred = [m for m in group["members"] if m["name"] != SHARP]
    assert all("blurry" in m["flags"] for m in blurred)
    photo = review.json(f"/api/photos/{library['keeper']}")
    assert photo["group"] == library["group"] and photo["sharpness"] == group["members"][0]["sharpness"]


# --------------------------------------------------------------------------- one instance, Ctrl-C


def test_a_second_review_of_the_index_is_told_where_the_first_is(review, library):
    lock = Path(f"{library['index']}.review.lock")
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600
    env = {**os.environ, **library["env"], "PYTHONPATH": os.pathsep.join(sys.path)}
    second = subprocess.run([sys.executable, "-m", "aes_index.cli", "review", "--no-browser", "--db", str(library["index"])],
                            capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    assert second.returncode == ExitCode.ALREADY_RUNNING == 6, second.stderr
    assert review.url in second.stderr and not second.stdout


def test_ctrl_c_stops_it_cleanly_with_130(library, tmp_path):
    other = dict(library, index=tmp_path / "copy.db")  # its own index: the module's review holds the lock of the first
    other["index"].write_bytes(Path(library["index"]).read_bytes())
    env = {**os.environ, **library["env"], "PYTHONPATH": os.pathsep.join(sys.path)}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        refused = subprocess.run([sys.executable, "-m", "aes_index.cli", "review", "--no-browser", "--db", str(other["index"]),
                                  "--port", str(taken.getsockname()[1])], capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    assert refused.returncode == ExitCode.USAGE and refused.stderr.count("\n") == 1 and "--port" in refused.stderr
    missing = subprocess.run([sys.executable, "-m", "aes_index.cli", "review", "--no-browser", "--db", str(tmp_path / "none.db")],
                             capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    assert missing.returncode == ExitCode.INDEX and missing.stderr.count("\n") == 1
    server = Review(other)
    assert server.request("/api/groups")[0] == 200
    assert server.stop() == ExitCode.INTERRUPTED == 130
    assert Path(f"{other['index']}.review.lock").read_text() == ""  # the URL it held is gone


# --------------------------------------------------------------------------- in Chromium


@pytest.fixture
def page(browser, review, library):
    tab = Page(browser)
    tab.navigate(review.url)
    tab.evaluate(f"""new Promise((done) => {{ const check = () => document.body.dataset.group === "{library['group']}"
        ? done() : setTimeout(check, 20); check(); }})""")
    wait_until_loaded(tab)
    yield tab
    tab.__exit__()


def wait_until_loaded(page: Page, timeout: float = 30) -> None:
    """Until every shown frame's picture (or every tile at 100 %) has loaded."""
    deadline = time.monotonic() + timeout
    while not page.evaluate("[...document.querySelectorAll('#frames .frame')].every((f) => f.dataset.loaded === 'fit' || f.dataset.loaded === 'tiles')"):
        assert time.monotonic() < deadline, "the frames did not load"
        time.sleep(0.05)
    page.evaluate("new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))")


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.iterdir())}


def sidecar_fields(path: Path) -> dict[str, object]:
    """The XMP fields of a sidecar as Exiv2 (darktable's and digiKam's engine) reads them."""
    return {key: value for key, (_, value) in exiv2_properties(path).items()}


def frame_state(page: Page) -> list[dict]:
    return page.evaluate("""[...document.querySelectorAll('#frames .frame')].map((f) => ({
        id: Number(f.dataset.id), selected: f.classList.contains('selected'),
        stars: f.querySelector('.state').dataset.stars, picked: f.querySelector('.state').dataset.picked,
        rejected: f.querySelector('.state').dataset.rejected }))""")


def wait_for(page: Page, expression: str, timeout: float = 20):
    deadline = time.monotonic() + timeout
    while True:
        value = page.evaluate(expression)
        if value:
            return value
        assert time.monotonic() < deadline, f"never true: {expression}"
        time.sleep(0.05)


def decided(page: Page) -> None:
    """Until the page says the decision was written (its notice names Ctrl+Z), then clear it."""
    wait_for(page, "document.querySelector('#notice').textContent.includes('Ctrl+Z')")
    page.evaluate("(() => { const notice = document.querySelector('#notice'); notice.textContent = ''; notice.hidden = true; })()")


PICK_LABEL, RATING = "Xmp.digiKam.PickLabel", "Xmp.xmp.Rating"


@needs_chromium
def test_reviewing_the_burst_by_keys_writes_the_sidecars_and_ctrl_z_gives_back_every_byte(page, library):
    root = library["root"]
    before = snapshot(root)
    frames = frame_state(page)
    shown = [frame["id"] for frame in frames]
    assert shown[0] == library["keeper"] and frames[0]["selected"]  # the keeper first, selected
    names = {image_id: name for name, image_id in library["ids"].items()}

    for key in ("p", "ArrowRight", "x", "ArrowRight", "3", "ArrowRight", "5", "4"):
        page.press(key)
        if key != "ArrowRight":
            decided(page)
    if TAKE_SCREENSHOTS:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(SCREENSHOTS / "review-group.png")
    keeper, second, third, fourth = (sidecar_fields(root / f"{names[i]}.xmp") for i in shown)
    assert keeper.get(PICK_LABEL) == "3" and RATING not in keeper  # picked: digiKam's "accepted"
    assert second.get(RATING) == "-1" and second.get(PICK_LABEL) == "1"  # rejected
    assert third.get(RATING) == "3" and PICK_LABEL not in third
    assert fourth.get(RATING) == "4"  # the last key wins
    now = {frame["id"]: frame for frame in frame_state(page)}  # and the page shows what the sidecars hold
    assert now[shown[0]]["picked"] == "true" and now[shown[1]]["rejected"] == "true"
    assert (now[shown[2]]["stars"], now[shown[3]]["stars"]) == ("3", "4")

    for _ in range(5):
        page.press("z", modifiers=2)  # Ctrl+Z, newest first
        wait_for(page, "document.querySelector('#notice').textContent === 'undone'")
        page.evaluate("document.querySelector('#notice').textContent = ''")
    assert snapshot(root) == before  # every byte, and no sidecar left behind
    assert all(frame["stars"] == "" and frame["picked"] == "false" for frame in frame_state(page))


@needs_chromium
def test_a_place_changed_since_shown_is_not_overwritten_and_the_page_says_so(page, library):
    root = library["root"]
    keeper = root / f"{[n for n, i in library['ids'].items() if i == library['keeper']][0]}.xmp"
    shutil.copyfile(DARKTABLE_SIDECAR, keeper)  # someone else, after the page showed the photo: darktable,
    subprocess.run(["exiv2", "-M", "set Xmp.xmp.Rating 2", "modify", str(keeper)], check=True, capture_output=True)  # then exiv2
    try:
        written = keeper.read_bytes()
        page.press("5")
        wait_for(page, "document.querySelector('#notice').classList.contains('warning')")
        assert "changed" in page.evaluate("document.querySelector('#notice').textContent")
        assert keeper.read_bytes() == written  # not overwritten
        wait_for(page, "document.querySelector('#frames .frame.selected .state').dataset.stars === '2'")  # shown again as it is
    finally:
        keeper.unlink()


@needs_chromium
def test_the_loupe_at_100_percent_shows_the_originals_pixels_synced_across_frames(page, library):
    page.press("z")
    wait_until_loaded(page)
    if TAKE_SCREENSHOTS:
        page.screenshot(SCREENSHOTS / "review-loupe.png")
    shot = np.asarray(Image.open(io.BytesIO(page.png())).convert("RGB"), dtype=np.int16)
    views = page.evaluate("""[...document.querySelectorAll('#frames .frame')].map((f) => {
        const box = f.querySelector('.view').getBoundingClientRect();
        return { id: Number(f.dataset.id), left: box.left, top: box.top, width: box.width, height: box.height }; })""")
    names = {image_id: name for name, image_id in library["ids"].items()}
    assert len(views) == 4
    for view in views:
        with Image.open(library["root"] / names[view["id"]]) as original:
            pixels = np.asarray(ImageOps.exif_transpose(original).convert("RGB"), dtype=np.int16)
        height, width = pixels.shape[:2]
        # The view's centre shows the image's centre, one screen pixel per image pixel.
        x0 = round(view["left"] + view["width"] / 2 - width / 2)
        y0 = round(view["top"] + view["height"] / 2 - height / 2)
        left, top = max(x0, math.ceil(view["left"]) + 4), max(y0, math.ceil(view["top"]) + 4)
        right = min(x0 + width, math.floor(view["left"] + view["width"]) - 4) - 2  # room for the shifted comparison
        bottom = min(y0 + height, math.floor(view["top"] + view["height"]) - 4) - 2
        assert right - left > 200 and bottom - top > 200
        shown = shot[top:bottom, left:right]
        error = np.abs(shown - pixels[top - y0:bottom - y0, left - x0:right - x0]).mean()
        shifted = np.abs(shown - pixels[top - y0 + 2:bottom - y0 + 2, left - x0 + 2:right - x0 + 2]).mean()
        assert error < 1.5, (names[view["id"]], error)
        if names[view["id"]] == SHARP:  # the frame in focus: 2 px off would be seen
            assert shifted > 3 * error + 2, (error, shifted)


@needs_chromium
def test_g_shows_the_gallery_best_first_and_enter_opens_a_photo_in_its_group(page, library):
    with Index(library["index"]) as index:
        best_first = [row["image_id"] for row in index.scores.ranked(index.runs.active_head_id())]
    page.press("g")
    wait_for(page, "document.querySelectorAll('#grid .cell').length > 0")
    assert page.evaluate("[...document.querySelectorAll('#grid .cell')].map((c) => Number(c.dataset.id))") == best_first
    page.press("ArrowRight")
    page.press("Enter")
    wait_for(page, "!document.querySelector('#review').hidden")
    selected = page.evaluate("Number(document.querySelector('#frames .frame.selected').dataset.id)")
    assert selected == best_first[1]


@needs_chromium
def test_the_search_box_and_more_like_this_show_what_search_finds(page, library):
    from aes_index.config import Settings
    from aes_index.features.search import search, similar
    from aes_index.index.library import Library

    with pytest.MonkeyPatch.context() as patch:
        for name, value in library["env"].items():
            patch.setenv(name, value)
        with Library.open(Settings(db=str(library["index"])), read_only=True) as opened:
            by_words = [hit.image_id for hit in search(opened, "boats on a lake at dusk", n=60)]
            by_score = [hit.image_id for hit in search(opened, "boats on a lake at dusk", n=60, rank="score")]
            like_keeper = [hit.image_id for hit in similar(opened, str(library["root"] / SHARP), n=60)]
    shown = "[...document.querySelectorAll('#results-grid .cell')].map((c) => Number(c.dataset.id))"

    page.press("/")  # the search box, by its key
    page.call("Input.insertText", text="boats on a lake at dusk")
    page.press("Enter")
    wait_for(page, f"{shown}.length > 0")
    assert page.evaluate(shown) == by_words
    page.press("Escape")
    page.evaluate("document.querySelector('#rank-score').click()")
    page.evaluate("document.querySelector('#search').focus()")
    page.press("Enter")
    wait_for(page, "document.querySelector('#results-title').textContent.includes('score')")
    assert page.evaluate(shown) == by_score
    page.press("Escape")  # leaves the box
    page.press("Escape")  # closes the results
    page.press("m")  # more like the selected frame: the keeper
    wait_for(page, "document.querySelector('#results-title').textContent === 'More like this'")
    assert page.evaluate(shown) == like_keeper and library["keeper"] not in like_keeper


# --------------------------------------------------------------------------- started by the darktable plugin


def _processes_naming(text: str) -> list[int]:
    """Pids of the processes whose command line names `text` (the detached review's)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_the_darktable_plugins_review_runs_in_the_background_and_is_found_again(library, tmp_path, capsys, monkeypatch):
    """darktable's Lua can only run a program and wait for it: `darktable review` starts the
    review detached, opens the browser ($BROWSER here: a command that records the URL) and
    answers with the address; asked again, it names the review already running."""
    copy = tmp_path / "plugin.db"  # its own index: the module's review holds the lock of the first
    copy.write_bytes(Path(library["index"]).read_bytes())
    for name, value in {**library["env"], "PYTHONPATH": os.pathsep.join(sys.path)}.items():
        monkeypatch.setenv(name, value)
    opened = tmp_path / "opened"
    browser = tmp_path / "browser"
    browser.write_text(f'#!/bin/sh\nprintf "%s\\n" "$1" >> "{opened}"\n')
    browser.chmod(0o755)
    monkeypatch.setenv("BROWSER", str(browser))
    photos = sorted(Path(library["root"]).rglob("burst_*.jpg"))
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"version": 1, "images": [
        {"ref": k + 1, "path": str(p), "duplicate": 0, "rating": 0} for k, p in enumerate(photos)]}))
    answers = []
    try:
        for _ in range(2):
            response = tmp_path / "response.json"
            code, _, err = run_cli(capsys, "darktable", "review", "--request", request, "--response", response, "--db", copy)
            assert code == 0, err
            answers.append(json.loads(response.read_text()))
        first, second = answers
        assert first["address"].startswith("http://127.0.0.1:") and "token" not in first["address"]
        assert (first["already_running"], second["already_running"]) == (False, True)
        assert second["address"] == first["address"]
        for _ in range(100):  # webbrowser runs $BROWSER in the background
            if opened.exists() and opened.read_text().count("\n") == 2:
                break
            time.sleep(0.05)
        urls = opened.read_text().split()
        assert len(urls) == 2 and urls[0] == urls[1] and urls[0].startswith(first["address"] + "?token=")
        port = urlsplit(urls[0]).port
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.request("GET", "/api/groups", headers={"X-Review-Token": parse_qs(urlsplit(urls[0]).query)["token"][0]})
        groups = json.loads(connection.getresponse().read())
        connection.close()
        assert groups["first"]["id"] == library["group"]
    finally:
        for pid in _processes_naming(str(copy)):
            os.kill(pid, signal.SIGINT)
    assert not _wait_gone(str(copy))


def _wait_gone(text: str, timeout: float = 30) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := _processes_naming(text)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def test_a_review_stops_itself_when_idle(library, tmp_path):
    copy = dict(library, index=tmp_path / "idle.db")
    copy["index"].write_bytes(Path(library["index"]).read_bytes())
    server = Review(copy, "--stop-when-idle", "0.02")  # 1.2 s
    assert server.request("/api/groups")[0] == 200
    assert server.process.wait(timeout=30) == ExitCode.OK
    server.stop()


def test_a_frame_under_review_is_decoded_at_full_resolution_behind_it_a_thumbnail_is_not(library, tmp_path):
    """The loupe's first tile is a crop when the frame on screen was decoded ahead
    (ahead=1, as the page asks for frames under review); gallery thumbnails ask without it
    and cost no full decode. Prepares run one at a time in the order asked: once the
    frame's full resolution is cached, the thumbnail's, asked first, would be too."""
    from aes_index.features.review.images import _FileKey

    cache = tmp_path / "cache"
    copy = dict(library, index=tmp_path / "ahead.db", env={**library["env"], "AES_INDEX_CACHE_DIR": str(cache)})
    copy["index"].write_bytes(Path(library["index"]).read_bytes())
    thumbnail, frame = sorted(library["ids"].values())[:2]
    with Index(copy["index"]) as index:
        level_0 = {image_id: f"{_FileKey.of(index.images.get(image_id)['path']).digest}.*level-0.ppm" for image_id in (thumbnail, frame)}
    server = Review(copy)
    try:
        assert server.request(f"/api/photos/{thumbnail}/image?w=256&h=256")[0] == 200
        assert server.request(f"/api/photos/{frame}/image?w=800&h=600&ahead=1")[0] == 200
        deadline = time.monotonic() + 30
        while not list(cache.rglob(level_0[frame])) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert list(cache.rglob(level_0[frame])) and not list(cache.rglob(level_0[thumbnail]))
    finally:
        server.stop()
