"""The gallery page (report.py): built from a real index, checked in real headless Chromium
(tests/chromium.py drives it over the DevTools protocol).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from aes_index.index.store import journal
from aes_index.cli import main
from aes_index.config import DB_FILENAME
from aes_index.features.stars import cut_points, RatingPolicy, stars_for
from aes_index.features.report import build_report, embeddable_json, readable_path, render_page
from aes_index.index.store import ERROR, Index

from chromium import Chromium, Page, browser, needs_chromium  # noqa: F401 - browser: a fixture
from conftest import METADATA_SAMPLES, make_photo, synthetic_scored_index
import index_rows

SCREENSHOT_COPY = Path("/tmp/aes-report.png")
XSS_NAME = "<img src=x onerror=alert(1)>.jpg"
# A folder "<" holding "script><script>alert(2)<" makes the path contain "</script>".
SCRIPT_BREAKOUT = Path("<", "script><script>alert(2)<", "script>.jpg")
COMMENT_NAME = "<!-- not a comment.jpg"

# --------------------------------------------------------------------------- page helpers (JS)

# Image ids in grid order, scrolling through the virtual grid to see every row.
SHOWN_IDS = """(async () => {
  const scroller = document.querySelector("#scroller"), seen = new Map();
  const frames = () => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)));
  for (let y = 0; ; y += scroller.clientHeight) {
    scroller.scrollTop = y;
    await frames();
    for (const cell of document.querySelectorAll(".cell")) {
      seen.set(Number(cell.dataset.id), [parseFloat(cell.style.top), parseFloat(cell.style.left)]);
    }
    if (y + scroller.clientHeight >= scroller.scrollHeight) break;
  }
  scroller.scrollTop = 0;
  await frames();
  return [...seen].sort((a, b) => a[1][0] - b[1][0] || a[1][1] - b[1][1]).map(([id]) => id);
})()"""

ALL_IMAGES_SETTLED = """Promise.all([...document.images].map((img) => img.complete ? null :
  new Promise((done) => { img.addEventListener("load", done); img.addEventListener("error", done); })))"""


def choose(page: Page, control: str, value) -> None:
    """Operate a filter control as a person would: set it, then fire its change event."""
    prop = "checked" if isinstance(value, bool) else "value"
    page.evaluate(
        f"(() => {{ const c = document.querySelector({json.dumps(control)}); c.{prop} = {json.dumps(value)};"
        " c.dispatchEvent(new Event('change')); })()"
    )


def reset_filters(page: Page) -> None:
    for control in ("#filter-stars", "#filter-written", "#filter-folder"):
        choose(page, control, "")
    choose(page, "#filter-errors", False)


def option_values(page: Page, control: str) -> list[str]:
    return page.evaluate(f"[...document.querySelector({json.dumps(control)}).options].map((o) => o.value)")


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def indexed_library(tmp_path_factory, tiny_model) -> Path:
    """A library indexed with the tiny model: real photos, hostile names, the metadata
    samples (some fail to decode), and a journal saying we wrote stars to two photos."""
    root = tmp_path_factory.mktemp("gallery") / "Photos"
    shutil.copytree(METADATA_SAMPLES, root / "samples", copy_function=shutil.copyfile)  # writable copies, whatever the checkout's modes
    for i in range(8):
        make_photo(root / "2024" / f"IMG_{i:04d}.jpg", seed=i)
    for i, name in enumerate((Path("2024", XSS_NAME), SCRIPT_BREAKOUT, Path("2024", COMMENT_NAME))):
        make_photo(root / name, seed=20 + i)
    model_args = ["--model", tiny_model["config"], "--pretrained", tiny_model["checkpoint"], "--device", "cpu", "--dtype", "fp32"]
    with pytest.MonkeyPatch.context() as env:  # as conftest's isolated_environment, for a module fixture
        env.setenv("HF_HUB_OFFLINE", "1")
        env.setenv("XDG_CONFIG_HOME", str(root.parent / "config"))
        env.setenv("AES_INDEX_CACHE_DIR", str(root.parent / "cache"))
        main(["rebuild", str(root), *model_args, "--workers", "0", "-q"])
    with Index(root / DB_FILENAME) as index:
        ranked = index.scores.ranked(index.runs.active_head_id())
        assert len(ranked) >= 10 and index.images.status_counts().get(ERROR)
        for row, target, stars in ((ranked[0], "xmp", 5), (ranked[3], "darktable", 2)):
            index.journal.record(1, journal.Write(target=target, place=row["path"] + ".xmp", image_path=row["path"],
                                                  old=None, new=stars))
    return root


@pytest.fixture(scope="module")
def gallery(indexed_library, tmp_path_factory):
    """(html path, summary) of the library's report."""
    out = tmp_path_factory.mktemp("report") / "best of #2024.html"  # its thumbnail URLs need quoting
    with Index(indexed_library / DB_FILENAME) as index:
        summary = build_report(index, out, thumb_size=128)
    return out, summary


@pytest.fixture(scope="module")
def page(browser, gallery) -> Page:
    tab = Page(browser)
    tab.open(gallery[0])
    return tab


@pytest.fixture
def fresh_page(page) -> Page:
    page.call("Page.bringToFront")  # a tab in the background gets no animation frames
    reset_filters(page)
    return page


def database_order(index: Index) -> list[int]:
    """What the page must show, in order: scored photos as index.scores.ranked, then decode errors."""
    scored = [row["image_id"] for row in index.scores.ranked(index.runs.active_head_id())]
    failed = index.images.with_status([ERROR])  # by path
    return scored + [image_id for image_id, _ in failed]


def library_stars(index: Index) -> dict[int, int]:
    rows = index.scores.ranked(index.runs.active_head_id())
    stars = stars_for(np.array([row["score"] for row in rows]), RatingPolicy())
    return {row["image_id"]: int(s) for row, s in zip(rows, stars)}


# --------------------------------------------------------------------------- Python level


def test_summary_counts_photos_errors_and_thumbnails(indexed_library, gallery):
    out, summary = gallery
    with Index(indexed_library / DB_FILENAME) as index:
        assert summary.photos == len(database_order(index))
        assert summary.errors == index.images.status_counts()[ERROR]
    assert summary.thumbs_made == summary.scored and summary.thumbs_failed == 0
    assert Path(summary.thumbs_dir) == out.with_name("best of #2024_thumbs")
    assert len(list(Path(summary.thumbs_dir).rglob("*.jpg"))) == summary.scored


def test_thumbnails_are_cached_by_fingerprint_and_made_only_when_missing(indexed_library, tmp_path):
    with Index(indexed_library / DB_FILENAME) as index:
        first = build_report(index, tmp_path / "a.html", thumb_size=64, workers=0)
        thumbs = sorted(Path(first.thumbs_dir).rglob("*.jpg"))
        thumbs[0].unlink()
        again = build_report(index, tmp_path / "a.html", thumb_size=64)
        other_size = build_report(index, tmp_path / "a.html", thumb_size=96)
    assert (again.thumbs_made, again.thumbs_cached) == (1, first.thumbs_made - 1)
    assert other_size.thumbs_made == first.thumbs_made  # the size is part of the key
    with Index(indexed_library / DB_FILENAME) as index:
        fingerprints = set(index_rows.values(index, "images", "fingerprint", status="ok"))
    assert {path.name.rsplit("-", 1)[0] for path in thumbs} <= fingerprints


def test_a_thumbnail_that_cannot_be_made_is_a_placeholder_not_a_crash(indexed_library, tmp_path):
    library = tmp_path / "Photos"
    shutil.copytree(indexed_library, library)
    gone = library / "2024" / "IMG_0001.jpg"
    (library / "2024" / "IMG_0002.jpg").write_bytes(b"\xff\xd8 no longer a JPEG")
    gone.unlink()
    with Index(library / DB_FILENAME) as index:
        # The copied index still holds the original paths: point it at the copy (raw SQL:
        # a forged move of the whole library, which only a rebuild's scan would record).
        index.db.execute("UPDATE images SET path = replace(path, ?, ?)", [str(indexed_library), str(library)])
        summary = build_report(index, tmp_path / "g.html")
    assert summary.thumbs_failed == 2
    data = page_json(tmp_path / "g.html")
    rows = {row["name"]: row for row in data["photos"]}
    assert rows["IMG_0001.jpg"]["thumb"] is None and "file not found" in rows["IMG_0001.jpg"]["thumbError"]
    assert rows["IMG_0002.jpg"]["thumbError"]


def test_hostile_names_cannot_end_the_data_script_or_open_a_comment(gallery):
    html = gallery[0].read_text(encoding="utf-8")
    template = render_page({})
    assert html.count("</script") == template.count("</script")
    assert html.count("<!--") == template.count("<!--")
    names = {row["name"] for row in page_json(gallery[0])["photos"]}
    assert {XSS_NAME, COMMENT_NAME, SCRIPT_BREAKOUT.name} <= names


def test_embedded_json_means_the_same_data():
    tricky = {"a": "</script><!--<script>&\u2028\u2029", "b": [1.5, None, "ü"]}
    text = embeddable_json(tricky)
    assert json.loads(text) == tricky
    assert not set("<>&\u2028\u2029") & set(text)


@pytest.mark.parametrize(
    "home, path, shown",
    [
        ("/home/al", "/home/al/Pictures/2024 June", "~/Pictures/2024 June"),
        ("/home/al/", "/home/al/Pictures", "~/Pictures"),  # $HOME with a trailing slash
        ("/home/al", "/home/al", "~"),
        ("/home/al", "/home/alice/Pictures", "/home/alice/Pictures"),  # a sibling that only starts alike
        ("/home/al", "/srv/photos/2024", "/srv/photos/2024"),
        ("/", "/home/al/Pictures", "/home/al/Pictures"),  # a home of "/" would make every path "~/..."
    ],
)
def test_paths_under_the_home_folder_are_shown_from_tilde(monkeypatch, home, path, shown):
    monkeypatch.setenv("HOME", home)
    assert readable_path(path) == shown


def test_the_page_names_its_library_by_its_root_from_tilde(indexed_library, tmp_path, monkeypatch):
    """The header names the library as its owner reads it, not by the index's full path."""
    monkeypatch.setenv("HOME", str(indexed_library.parent))  # the library is ~/Photos
    out = tmp_path / "gallery.html"
    with Index(indexed_library / DB_FILENAME) as index:
        build_report(index, out, thumb_size=64)
    data = page_json(out)
    assert data["library"] == ["~/Photos"]
    assert data["db"] == f"~/Photos/{DB_FILENAME}"


def page_json(html_path: Path) -> dict:
    """The data embedded in a page, rows as dicts."""
    html = html_path.read_text(encoding="utf-8")
    start = html.index('<script type="application/json" id="gallery-data">') + len('<script type="application/json" id="gallery-data">')
    data = json.loads(html[start : html.index("</script>", start)])
    data["photos"] = [dict(zip(data["columns"], row)) for row in data["photos"]]
    return data


# --------------------------------------------------------------------------- in Chromium


@needs_chromium
def test_page_loads_from_file_and_shows_the_database_order(fresh_page, indexed_library):
    with Index(indexed_library / DB_FILENAME) as index:
        expected = database_order(index)
    assert fresh_page.evaluate(SHOWN_IDS) == expected
    assert fresh_page.evaluate("document.querySelector('#count').textContent") == f"showing {len(expected)} of {len(expected)}"
    fresh_page.evaluate(ALL_IMAGES_SETTLED)
    widths = fresh_page.evaluate("[...document.querySelectorAll('#grid img')].map((img) => img.naturalWidth)")
    assert widths and all(width > 0 for width in widths)  # thumbnails load over relative file:// URLs
    assert fresh_page.evaluate("[window.__errors, window.__violations]") == [[], []]


@needs_chromium
def test_histogram_marks_the_star_cut_points(fresh_page, indexed_library):
    with Index(indexed_library / DB_FILENAME) as index:
        cuts = cut_points(index.scores.values(index.runs.active_head_id()), RatingPolicy())
    starts: dict[float, list[str]] = {}  # cuts that coincide (ties) share one line
    for stars, cut in enumerate(cuts, start=2):
        if np.isfinite(cut):
            starts.setdefault(cut, []).append(str(stars))
    labels = fresh_page.evaluate("[...document.querySelectorAll('#histogram .cut-label.stars')].map((t) => t.textContent)")
    assert labels == ["/".join(group) + "★" for group in starts.values()]
    assert fresh_page.evaluate("document.querySelectorAll('#histogram .bar').length") == 40


@needs_chromium
def test_a_policy_with_reject_marks_it_and_filters_by_it(indexed_library, tmp_path, browser):
    with Index(indexed_library / DB_FILENAME) as index:
        scores = index.scores.values(index.runs.active_head_id())
        # Cuts between distinct scores: the stripped sample files all score alike, and
        # quantiles of tied scores would repeat a cut.
        policy = RatingPolicy(kind="threshold", cuts=tuple(np.quantile(np.unique(scores), [0.2, 0.4, 0.6, 0.8])),
                              reject_below=float(np.quantile(scores, 0.1)))
        build_report(index, tmp_path / "strict.html", policy=policy)
    with Page(browser) as tab:
        tab.open(tmp_path / "strict.html")
        marks = tab.evaluate("[...document.querySelectorAll('#histogram .cut-label')].map((t) => t.textContent)")
        stars_offered = option_values(tab, "#filter-stars")
        choose(tab, "#filter-stars", "-1")
        captions = tab.evaluate("[...document.querySelectorAll('.cell .caption')].map((c) => c.textContent)")
    assert "reject" in marks and "-1" in stars_offered
    assert captions and all(caption.endswith("rejected") for caption in captions)


@needs_chromium
def test_star_filters_show_what_the_policy_and_the_journal_say(fresh_page, indexed_library):
    with Index(indexed_library / DB_FILENAME) as index:
        order, stars = database_order(index), library_stars(index)
        written_top = index.scores.ranked(index.runs.active_head_id())[0]["image_id"]
    best = max(stars.values())
    choose(fresh_page, "#filter-stars", str(best))
    assert fresh_page.evaluate(SHOWN_IDS) == [i for i in order if stars.get(i) == best]
    reset_filters(fresh_page)
    assert option_values(fresh_page, "#filter-written") == ["", "none", "5", "2"]
    choose(fresh_page, "#filter-written", "5")
    assert fresh_page.evaluate(SHOWN_IDS) == [written_top]
    choose(fresh_page, "#filter-written", "none")
    assert len(fresh_page.evaluate(SHOWN_IDS)) == len(order) - 2


@needs_chromium
def test_folder_and_error_filters(fresh_page, indexed_library):
    folder = str(indexed_library / "2024")
    with Index(indexed_library / DB_FILENAME) as index:
        order = database_order(index)
        paths = {image_id: index.images.get(image_id)["path"] for image_id in order}
        messages = [row["error"] for row in index.images.errors(limit=100)]
    choose(fresh_page, "#filter-folder", folder)
    assert fresh_page.evaluate(SHOWN_IDS) == [i for i in order if paths[i].startswith(folder + os.sep)]
    choose(fresh_page, "#filter-folder", "")
    choose(fresh_page, "#filter-errors", True)
    shown = fresh_page.evaluate("[...document.querySelectorAll('.cell .placeholder')].map((p) => p.textContent)")
    assert sorted(shown) == sorted(messages)


@needs_chromium
def test_hostile_file_names_are_shown_as_text_and_run_nothing(fresh_page, indexed_library, tmp_path):
    names = fresh_page.evaluate("[...document.querySelectorAll('.cell .name')].map((n) => n.textContent)")
    assert XSS_NAME in names and COMMENT_NAME in names and SCRIPT_BREAKOUT.name in names
    fresh_page.evaluate(
        f"[...document.querySelectorAll('.cell')].find((c) => c.querySelector('.name').textContent === {json.dumps(XSS_NAME)}).click()"
    )
    details = fresh_page.evaluate("[...document.querySelectorAll('#details dd')].map((d) => d.textContent)")
    assert str(indexed_library / "2024" / XSS_NAME) in details
    assert fresh_page.evaluate("document.querySelectorAll('img[src=\"x\"], #grid script').length") == 0
    assert fresh_page.evaluate("[window.__alerts, window.__errors, window.__violations]") == [0, [], []]
    shot = fresh_page.screenshot(tmp_path / "gallery.png")
    shutil.copyfile(shot, SCREENSHOT_COPY)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@needs_chromium
def test_details_show_score_percentile_stars_written_head_and_path(fresh_page, indexed_library):
    with Index(indexed_library / DB_FILENAME) as index:
        head = index.runs.active_head_id()
        top = index.scores.ranked(head)[0]
    fresh_page.evaluate("document.querySelector('.cell').click()")
    details = dict(fresh_page.evaluate(
        "[...document.querySelectorAll('#details dt')].map((dt) => [dt.textContent, dt.nextElementSibling.textContent])"
    ))
    assert details["Path"] == top["path"] and details["Head"] == head
    shown = details["Score"].split(" ")[0]  # four significant digits, not the float's 17
    assert float(shown) == pytest.approx(top["score"], rel=1e-3, abs=1e-4) and len(shown.lstrip("-").replace(".", "").lstrip("0")) == 4, shown
    assert details["Stars written"] == "xmp: ★★★★★"
    assert float(details["Percentile"]) > 50 and details["Stars (policy)"].startswith("★")
    # what the numbers mean: the head's scale, in the details and in the header
    assert details["Scale"] == "cosine difference (zero-shot), -2 to 2"
    meta = fresh_page.evaluate("document.querySelector('#meta').textContent")
    assert f"head {head}, scores -2 to 2 ·" in meta
    # the library by its root (not under this test's home folder: the full path), the index on hover
    assert meta.endswith(f" · library {indexed_library}")
    assert fresh_page.evaluate("document.querySelector('#meta').title") == f"index {indexed_library / DB_FILENAME}"


# --------------------------------------------------------------------------- 50k photos


def synthetic_index(path: Path, photos: int) -> Index:
    """An index of `photos` scored rows in 100 folders; no files exist (thumbnails fail)."""
    return Index(synthetic_scored_index(path, photos, folders=100, seed=7))


@needs_chromium
def test_50k_photos_build_quickly_and_the_grid_stays_virtual(tmp_path, browser):
    with synthetic_index(tmp_path / "big.db", 50_000) as index:
        started = time.monotonic()
        summary = build_report(index, tmp_path / "big.html")
        build_seconds = time.monotonic() - started
        last = index.scores.ranked("synthetic")[-1]["image_id"]
    assert summary.photos == 50_000 and summary.thumbs_failed == 50_000
    assert build_seconds < 30, build_seconds
    with Page(browser) as tab:
        started = time.monotonic()
        tab.open(tmp_path / "big.html")
        load_seconds = time.monotonic() - started
        count_text = tab.evaluate("document.querySelector('#count').textContent")
        cells_at_top = tab.evaluate("document.querySelectorAll('.cell').length")
        tab.evaluate("document.querySelector('#scroller').scrollTop = 1e9")
        tab.evaluate("new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))")
        cells_at_bottom = tab.evaluate("[...document.querySelectorAll('.cell')].map((c) => Number(c.dataset.id))")
        choose(tab, "#filter-folder", "/nowhere/Photos/042")
        filtered_text = tab.evaluate("document.querySelector('#count').textContent")
    assert count_text == "showing 50000 of 50000" and load_seconds < 10, load_seconds
    assert cells_at_top < 200 and len(cells_at_bottom) < 200  # virtual: only rows in view exist
    assert cells_at_bottom[-1] == last
    assert filtered_text == "showing 500 of 50000"
