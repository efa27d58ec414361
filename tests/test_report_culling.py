"""The gallery's culling view (issue 16, point 5): each group a stack with its keeper on top
and the keeper rule's reason, a "keepers only" and a "flagged" filter, and a page that still
works, and says what to run, when the index was never culled. Checked in headless Chromium
(the CDP client of test_report.py).

Two libraries: a hand-made culling over a few indexed photos, for the cases a real cull of a
small library may not produce (a keeper that is not the best-scored frame, a person's pick,
a hostile file name inside a group); and a real one, built from Debian's mate-backgrounds
photographs (culling_library.py), indexed by `rebuild`, reported before and after `cull`,
whose page is the README's screenshot (docs/images/gallery-groups.png).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image

from aes_index.features import report
from aes_index.config import DB_FILENAME
from aes_index.features.culling.model import BLURRY, BURST, BY_US, BY_YOU, DUPLICATE, OVEREXPOSED, Group, Member
from aes_index.features.report import COLUMNS, build_report
from aes_index.index.store import Index

from conftest import cli_stdout, make_photo
from culling_library import LibrarySpec, build_library
from chromium import Chromium, Page, browser, needs_chromium  # noqa: F401 - browser: a fixture
from test_report import ALL_IMAGES_SETTLED, SHOWN_IDS, XSS_NAME, choose, page_json

REPO_ROOT = Path(__file__).resolve().parents[1]
SCREENSHOT = REPO_ROOT / "docs" / "images" / "gallery-groups.png"
BEFORE_CULLING = ("id", "folder", "name", "score", "std", "percentile", "stars", "written", "thumb", "error", "thumbError")

# --------------------------------------------------------------------------- a culled library


@pytest.fixture(scope="module")
def library(tmp_path_factory, tiny_model) -> Path:
    """12 photos indexed with the tiny model, one of them with a hostile name."""
    from aes_index.cli import main

    root = tmp_path_factory.mktemp("culled") / "Photos"
    for i in range(11):
        make_photo(root / "shoot" / f"DSC_{i:04d}.jpg", seed=100 + i)
    make_photo(root / "shoot" / XSS_NAME, seed=120)
    model_args = ["--model", tiny_model["config"], "--pretrained", tiny_model["checkpoint"], "--device", "cpu", "--dtype", "fp32"]
    with pytest.MonkeyPatch.context() as env:  # as conftest's isolated_environment, for a module fixture
        env.setenv("HF_HUB_OFFLINE", "1")
        env.setenv("XDG_CONFIG_HOME", str(root.parent / "config"))
        env.setenv("AES_INDEX_CACHE_DIR", str(root.parent / "cache"))
        assert main(["rebuild", str(root), *model_args, "--workers", "0", "-q"]) == 0
    return root


def ranked_photos(root: Path) -> list[dict]:
    with Index(root / DB_FILENAME) as index:
        return index.scores.ranked(index.runs.active_head_id())


def member(row: dict, sharpness: float, flags=(), clipped=(0.0, 0.0)) -> Member:
    return Member(row["image_id"], row["path"], row["score"], sharpness, clipped[0], clipped[1],
                  "2026-06-01T10:15:03.250+02:00", tuple(flags))


def hand_made_culling(root: Path) -> report.Culling:
    """Two groups and two flagged singles over the library's ranked photos; the burst's
    keeper is not its best-scored frame (a sharp frame beats a blurred better one)."""
    ranked = ranked_photos(root)
    burst = Group(
        id=7, kind=BURST, keeper_id=ranked[2]["image_id"], reason="sharpest of 4, best score of the sharp ones",
        chosen_by=BY_US,
        members=(member(ranked[2], 0.91), member(ranked[0], 0.22, [BLURRY]), member(ranked[5], 0.80),
                 member(ranked[9], 0.30, [BLURRY])),
    )
    xss = next(row for row in ranked if row["path"].endswith(XSS_NAME))
    others = [row for row in ranked if row is not xss and row["image_id"] not in {m.image_id for m in burst.members}]
    duplicate = Group(id=9, kind=DUPLICATE, keeper_id=others[0]["image_id"], reason="your pick (4 stars)",
                      chosen_by=BY_YOU, members=(member(others[0], 0.7), member(xss, 0.6)))
    flagged = [*(m for m in burst.members if m.flags), member(others[2], 0.5, [OVEREXPOSED], clipped=(0.31, 0.0))]
    return report.Culling(culled=True, groups=[burst, duplicate], flagged=flagged)


@pytest.fixture(scope="module")
def culling(library) -> report.Culling:
    return hand_made_culling(library)


@pytest.fixture(scope="module")
def gallery(library, culling, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "gallery.html"
    with pytest.MonkeyPatch.context() as patch, Index(library / DB_FILENAME) as index:
        patch.setattr(report, "load_culling", lambda index, head_id: culling)
        build_report(index, out, thumb_size=128, workers=0)
    return out


@pytest.fixture
def page(browser, gallery):
    with Page(browser) as tab:
        tab.open(gallery)
        yield tab


def tiles(page: Page) -> list[int]:
    """The image ids of the grid's tiles, in order (every row, scrolling)."""
    return page.evaluate(SHOWN_IDS)


def tile_texts(page: Page, selector: str) -> dict[int, str]:
    return dict(page.evaluate(
        f"[...document.querySelectorAll('.cell')].map((c) => [Number(c.dataset.id), c.querySelector({json.dumps(selector)})?.textContent ?? null])"
    ))


def open_stack(page: Page, group_id: int) -> None:
    page.evaluate(f"document.querySelector('.cell[data-group=\"{group_id}\"] .badge.toggle').click()")


# --------------------------------------------------------------------------- the page's data


def test_page_data_keeps_the_old_columns_and_adds_groups(gallery, culling):
    data = page_json(gallery)
    assert COLUMNS[: len(BEFORE_CULLING)] == BEFORE_CULLING  # readers of older pages find theirs
    burst, duplicate = data["groups"]
    assert burst == {"id": 7, "kind": BURST, "size": 4, "keeper": culling.groups[0].keeper_id,
                     "reason": culling.groups[0].reason, "chosenBy": BY_US,
                     "members": [m.image_id for m in culling.groups[0].members]}
    rows = {row["id"]: row for row in data["photos"]}
    blurred = culling.groups[0].members[1]
    assert rows[blurred.image_id]["group"] == 7 and rows[blurred.image_id]["flags"] == [BLURRY]
    assert rows[blurred.image_id]["sharpness"] == 0.22
    single = culling.flagged[-1]
    assert (rows[single.image_id]["group"], rows[single.image_id]["clipped"]) == (None, [0.31, 0.0])
    assert data["culled"] is True


# --------------------------------------------------------------------------- in Chromium


@needs_chromium
def test_each_group_is_one_stack_at_its_keepers_place_with_the_reason(page, library, culling):
    ranked = [row["image_id"] for row in ranked_photos(library)]
    hidden = {m.image_id for g in culling.groups for m in g.members[1:]}
    assert tiles(page) == [i for i in ranked if i not in hidden]  # the database's order, a stack per group
    burst, duplicate = culling.groups
    stacks = page.evaluate("[...document.querySelectorAll('.cell.stack')].map((c) => Number(c.dataset.id))")
    assert stacks == [i for i in ranked if i in (burst.keeper_id, duplicate.keeper_id)]
    roles, kinds, lines = (tile_texts(page, s) for s in (".badge.role", ".badge.kind", ".culling-line"))
    assert roles[burst.keeper_id] == roles[duplicate.keeper_id] == "keeper"
    assert kinds[burst.keeper_id] == "burst · 4 frames ▸" and kinds[duplicate.keeper_id] == "duplicate · 2 frames ▸"
    assert lines[burst.keeper_id] == burst.reason and lines[duplicate.keeper_id] == duplicate.reason
    assert "2 groups (1 burst, 1 duplicate set) of 6 photos" in page.evaluate("document.querySelector('#culling').textContent")
    assert page.evaluate("[window.__errors, window.__violations]") == [[], []]


@needs_chromium
def test_an_opened_stack_shows_every_frame_keeper_first_with_flags_and_sharpness(page, culling):
    burst = culling.groups[0]
    before = tiles(page)
    open_stack(page, burst.id)
    after = tiles(page)
    at = after.index(burst.keeper_id)
    assert after[at : at + 4] == [m.image_id for m in burst.members]
    assert len(after) == len(before) + 3
    roles, lines = tile_texts(page, ".badge.role"), tile_texts(page, ".culling-line")
    assert [roles[m.image_id] for m in burst.members] == ["keeper", "2 of 4", "3 of 4", "4 of 4"]
    assert lines[burst.members[1].image_id] == "sharpness 0.220"
    flags = dict(page.evaluate(
        "[...document.querySelectorAll('.cell')].map((c) => [Number(c.dataset.id), [...c.querySelectorAll('.flag')].map((f) => f.textContent)])"
    ))
    assert [flags[m.image_id] for m in burst.members] == [[], [BLURRY], [], [BLURRY]]
    assert page.evaluate("document.querySelector('.cell[data-group=\"7\"] .badge.toggle').textContent") == "burst · 4 frames ▾"
    open_stack(page, burst.id)  # and closed again
    assert tiles(page) == before


@needs_chromium
def test_keepers_only_hides_every_other_frame_and_keeps_the_singles(page, library, culling):
    everything = {row["image_id"] for row in ranked_photos(library)}
    not_keepers = {m.image_id for g in culling.groups for m in g.members[1:]}
    for group in culling.groups:
        open_stack(page, group.id)
    assert set(tiles(page)) == everything
    choose(page, "#filter-keepers", True)
    assert set(tiles(page)) == everything - not_keepers
    assert page.evaluate("document.querySelectorAll('.badge.toggle').length") == 0  # nothing left to open
    assert page.evaluate("document.querySelector('#count').textContent") == f"showing {len(everything) - 4} of {len(everything)} · 2 stacks"
    choose(page, "#filter-keepers", False)
    assert set(tiles(page)) == everything


@needs_chromium
def test_flagged_shows_only_flagged_photos_and_works_with_keepers_only_and_stars(page, culling):
    flagged = {m.image_id for m in culling.flagged}
    choose(page, "#filter-flagged", True)
    # The burst's flagged frames are a stack of their own (its keeper is not flagged).
    burst = culling.groups[0]
    assert set(tiles(page)) == flagged - {burst.members[3].image_id}
    open_stack(page, burst.id)
    assert set(tiles(page)) == flagged
    choose(page, "#filter-keepers", True)
    assert set(tiles(page)) == {culling.flagged[-1].image_id}  # the flagged single; no flagged keeper
    single = culling.flagged[-1].image_id
    stars = page.evaluate(f"window.gallery.photos.find((p) => p.id === {single}).stars")
    other = next(v for v in page.evaluate("[...document.querySelector('#filter-stars').options].map((o) => o.value)")
                 if v not in ("", str(stars)))
    choose(page, "#filter-stars", str(stars))
    assert tiles(page) == [single]
    choose(page, "#filter-stars", other)
    assert tiles(page) == []
    assert page.evaluate("[window.__errors, window.__violations]") == [[], []]


@needs_chromium
def test_details_of_a_frame_list_its_group_and_open_the_stack(page, culling):
    duplicate = culling.groups[1]
    page.evaluate(f"document.querySelector('.cell[data-id=\"{duplicate.keeper_id}\"]').click()")
    details = dict(page.evaluate(
        "[...document.querySelectorAll('#details dt')].map((dt) => [dt.textContent, dt.nextElementSibling.textContent])"
    ))
    assert details["Group"] == "duplicate · 2 frames; the keeper"
    assert details["Keeper (chosen by you)"].endswith(": your pick (4 stars)")
    assert details["Sharpness"] == "0.700" and details["Taken"] == "2026-06-01 10:15:03.250+02:00"
    page.evaluate(f"[...document.querySelectorAll('#details .members button')].find((b) => b.textContent === {json.dumps(XSS_NAME)}).click()")
    assert duplicate.members[1].image_id in tiles(page)  # opened, and the hostile name ran nothing
    assert page.evaluate("[window.__alerts, window.__errors, window.__violations, document.querySelectorAll('img[src=\"x\"]').length]") == [0, [], [], 0]


@needs_chromium
def test_a_library_never_culled_says_to_run_cull_and_filters_still_work(library, browser, tmp_path):
    with Index(library / DB_FILENAME) as index:
        summary = build_report(index, tmp_path / "plain.html", thumb_size=64, workers=0)
    data = page_json(tmp_path / "plain.html")
    assert data["groups"] == [] and data["culled"] is False
    with Page(browser) as tab:
        tab.open(tmp_path / "plain.html")
        assert len(tiles(tab)) == summary.photos
        assert tab.evaluate("document.querySelector('#culling').textContent").startswith(
            "no groups yet: run aes-index cull to group bursts and duplicates")
        assert tab.evaluate("document.querySelector('#culling code').textContent") == "aes-index cull"
        choose(tab, "#filter-keepers", True)
        assert len(tiles(tab)) == summary.photos  # singles all stay
        choose(tab, "#filter-flagged", True)
        assert set(tiles(tab)) == {row["id"] for row in data["photos"] if row["flags"]}
        assert tab.evaluate("[window.__errors, window.__violations]") == [[], []]


# --------------------------------------------------------------------------- a real library, really culled

# Small frames and blur a photographer rejects at a glance, as test_culling_real.py; enough
# groups and singles to fill the screenshot's first screen.
SHOOT = "Garden"  # the real library's folder in ~/Pictures (short: the header wraps a long one)
REAL_SPEC = LibrarySpec(
    long_side=1200, bursts=4, duplicate_sets=2, singles=5, frames=(3, 5), defocus=(8.0, 16.0), motion=(32.0, 64.0),
    clipped_singles=("over", "under"), blurred_singles=(16.0,), seed=11,
)
UPDATE_SCREENSHOT = "UPDATE_SCREENSHOTS"  # not AES_INDEX_*: conftest clears those for every test


@pytest.fixture(scope="module")
def real_pages(mate_photos, tiny_model, tmp_path_factory) -> dict:
    """The real library's gallery before and after `aes-index cull` (all through the CLI),
    and `groups --json` after it. The library is a shoot in ~/Pictures of a home folder of
    its own (HOME, for the commands), where a person keeps theirs: the README's screenshot
    shows its header naming the library ~/Pictures/<shoot>, not a temporary folder."""
    folder = tmp_path_factory.mktemp("culled-real")
    home = folder / "home"
    truth = build_library(home / "Pictures", REAL_SPEC, mate_photos, workers=1, name=SHOOT)
    db, pages = folder / "index.db", folder / "pages"
    model = ["--model", tiny_model["config"], "--pretrained", tiny_model["checkpoint"], "--device", "cpu", "--dtype", "fp32"]
    with pytest.MonkeyPatch.context() as env:  # as conftest's isolated_environment, for a module fixture
        for name in [n for n in os.environ if n.startswith("AES_INDEX_")]:
            env.delenv(name)
        env.setenv("HOME", str(home))
        env.setenv("HF_HUB_OFFLINE", "1")
        env.setenv("XDG_CONFIG_HOME", str(folder / "config"))
        env.setenv("AES_INDEX_CACHE_DIR", str(folder / "cache"))
        env.setenv("AES_INDEX_STABLE_SECONDS", "0")
        cli_stdout("rebuild", truth.root, "--db", db, *model, "--workers", "0")
        cli_stdout("report", "--db", db, "--out", pages / "before.html", "--thumb-size", "256")
        cli_stdout("cull", truth.root, "--db", db, *model)
        cli_stdout("report", "--db", db, "--out", pages / "after.html", "--thumb-size", "256")
        listed = json.loads(cli_stdout("groups", "--db", db, *model, "--json"))
    return {"before": pages / "before.html", "after": pages / "after.html", **listed, "home": home}


@pytest.fixture
def after_cull(browser, real_pages):
    with Page(browser) as tab:
        tab.open(real_pages["after"])
        yield tab


@pytest.mark.slow
@needs_chromium
def test_a_real_cull_shows_each_group_as_a_stack_keeper_first_with_its_reason(after_cull, real_pages):
    groups = real_pages["groups"]
    assert len(groups) >= REAL_SPEC.bursts  # the bursts at least (test_culling_real checks them exactly)
    photos = len(page_json(real_pages["after"])["photos"])
    assert len(tiles(after_cull)) == photos - sum(g["size"] - 1 for g in groups)
    roles, lines = tile_texts(after_cull, ".badge.role"), tile_texts(after_cull, ".culling-line")
    kinds = tile_texts(after_cull, ".badge.kind")
    for group in groups:
        keeper = group["keeper_id"]
        assert group["members"][0]["image_id"] == keeper
        assert (roles[keeper], lines[keeper]) == ("keeper", group["reason"])
        assert kinds[keeper] == f"{group['kind']} · {group['size']} frames ▸"
        open_stack(after_cull, group["id"])
        shown = tiles(after_cull)
        at = shown.index(keeper)
        assert shown[at : at + group["size"]] == [m["image_id"] for m in group["members"]]
        open_stack(after_cull, group["id"])
    assert after_cull.evaluate("[window.__errors, window.__violations]") == [[], []]


@pytest.mark.slow
@needs_chromium
def test_a_real_cull_filters_keepers_and_flagged_photos(after_cull, real_pages):
    groups, flagged = real_pages["groups"], {m["image_id"] for m in real_pages["flagged"]}
    everything = {row["id"] for row in page_json(real_pages["after"])["photos"]}
    for group in groups:
        open_stack(after_cull, group["id"])
    assert set(tiles(after_cull)) == everything
    choose(after_cull, "#filter-keepers", True)
    keepers_and_singles = everything - {m["image_id"] for g in groups for m in g["members"][1:]}
    assert set(tiles(after_cull)) == keepers_and_singles
    choose(after_cull, "#filter-keepers", False)
    choose(after_cull, "#filter-flagged", True)
    assert flagged and set(tiles(after_cull)) == flagged
    choose(after_cull, "#filter-keepers", True)
    assert set(tiles(after_cull)) == flagged & keepers_and_singles


@pytest.mark.slow
@needs_chromium
def test_before_any_cull_the_page_says_to_run_it_and_still_works(browser, real_pages):
    data = page_json(real_pages["before"])
    assert data["groups"] == [] and data["culled"] is False
    with Page(browser) as tab:
        tab.open(real_pages["before"])
        assert len(tiles(tab)) == len(data["photos"])
        assert tab.evaluate("document.querySelector('#culling').textContent").startswith(
            "no groups yet: run aes-index cull to group bursts and duplicates")
        choose(tab, "#filter-keepers", True)
        assert len(tiles(tab)) == len(data["photos"])  # no groups: every photo is a single and stays
        choose(tab, "#filter-flagged", True)
        assert set(tiles(tab)) == {row["id"] for row in data["photos"] if row["flags"]}
        assert tab.evaluate("[window.__errors, window.__violations]") == [[], []]


@pytest.mark.slow
@needs_chromium
def test_screenshot_of_the_groups_view(after_cull, real_pages, tmp_path):
    """The README's picture: the real library after `cull`, a burst opened (a sharp keeper
    among the most frames flagged blurry). Written to docs/images/ when that file is missing or
    UPDATE_SCREENSHOTS=1 (so that a test run leaves the checkout as it was), else
    beside the test's files."""
    bursts = [g for g in real_pages["groups"] if g["kind"] == BURST]
    burst = max(bursts, key=lambda g: (not g["members"][0]["flags"], sum(BLURRY in m["flags"] for m in g["members"]), g["size"]))
    open_stack(after_cull, burst["id"])
    after_cull.evaluate(ALL_IMAGES_SETTLED)
    # the header names the library as its owner reads it: the shoot in ~/Pictures
    meta = after_cull.evaluate("document.querySelector('#meta').textContent")
    assert meta.endswith(f" · library ~/Pictures/{SHOOT}") and str(real_pages["home"]) not in meta
    target = SCREENSHOT if os.environ.get(UPDATE_SCREENSHOT) == "1" or not SCREENSHOT.exists() else tmp_path / SCREENSHOT.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shot = after_cull.screenshot(target)
    with Image.open(shot) as image:
        assert image.size == (1280, 900)
        assert len(image.getcolors(1 << 20) or ()) > 10_000  # photographs, not a blank page
