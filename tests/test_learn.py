"""`aes-index learn`: a personal head from a person's own decisions, adopted only when better.

A library of synthetic embeddings (real tiny-model backbone row, scored for real by the
tiny model's zero-shot head through `rescore`) and a simulated person: their stars are a
hidden direction of the embedding space plus noise, written into XMP sidecars; darktable's
library.db is a file with darktable's tables, checked byte for byte after reading.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

import aes_index.cli
from aes_index import api
from aes_index.config import Settings
from aes_index.errors import ExitCode
from aes_index.features.taste import model
from aes_index.features.taste.sources import Choice
from aes_index.formats import xmp
from aes_index.index.runner import BackboneSession
from aes_index.index.store import Index
from aes_index.model.head_choice import PERSONAL_META, adopted_head
from aes_index.model.heads import projected_norms
from aes_index.targets.protocol import Write

PHOTOS, FOLDERS, RATED = 600, 30, 360


def settings_for(db: Path, tiny_model: dict, **changes) -> Settings:
    return Settings(model=tiny_model["config"], pretrained=tiny_model["checkpoint"], device="cpu", dtype="fp32", db=str(db)).replace(**changes)


@pytest.fixture
def library(tmp_path, tiny_model, monkeypatch):
    """PHOTOS photos in FOLDERS folders (one shoot each), embeddings from a fixed random
    mixture, scored by the tiny model's zero-shot head (the active head)."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))  # where learned heads go
    root, db = tmp_path / "Photos", tmp_path / "index.db"
    rng = np.random.default_rng(7)
    paths = [root / f"{i % FOLDERS:02d}" / f"IMG_{i:05d}.jpg" for i in range(PHOTOS)]
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"not decoded: learning reads embeddings only")
    settings = settings_for(db, tiny_model)
    with Index(db) as index:
        index.add_roots([str(root)])
        session = BackboneSession(index, settings)
        backbone_id = session.ensure_row()
        dim = session.info.pooled_dim
        with index.transaction():
            index.db.conn.executemany(
                "INSERT INTO images (id, path, size, mtime_ns, fingerprint, status) VALUES (?, ?, 1, 1, ?, 'ok')",
                [(i + 1, str(p), f"{i:032x}") for i, p in enumerate(paths)],
            )
            shoot_offsets = rng.normal(0, 0.5, (FOLDERS, dim))  # photos of one shoot resemble each other
            pooled = (rng.normal(0, 1, (PHOTOS, dim)) + shoot_offsets[np.arange(PHOTOS) % FOLDERS]).astype(np.float32)
            index.embeddings.put(backbone_id, list(range(1, PHOTOS + 1)), pooled, projected_norms(pooled, session.projection))
    api.rescore(settings)  # the active head: the tiny model's zero-shot prompts, over the cached embeddings
    return {"root": root, "db": db, "paths": paths, "pooled": pooled, "settings": settings}


def rate(library, stars_of) -> None:
    """The person rates the first RATED photos in their sidecars: stars_of(pooled rows) -> 1..5."""
    stars = stars_of(library["pooled"][:RATED])
    for path, value in zip(library["paths"][:RATED], stars):
        xmp.write_sidecar(xmp.sidecar_for(path), rating=int(value))


def quantised(values: np.ndarray) -> np.ndarray:
    return 1 + np.searchsorted(np.quantile(values, [0.2, 0.4, 0.6, 0.8]), values)


def test_a_person_with_their_own_taste_gets_a_personal_head_adopted_and_undo_goes_back(library):
    rng = np.random.default_rng(3)
    hidden = rng.normal(0, 1, library["pooled"].shape[1])
    rate(library, lambda x: quantised(x @ hidden + rng.normal(0, 0.3 * np.std(x @ hidden), len(x))))
    settings = library["settings"]
    with Index(library["db"]) as index:
        shipped_head = index.runs.active_head_id()

    report = api.learn(settings, api.learn_places(settings))

    assert report["found"]["xmp"] == RATED and report["decisions"]["ratings"] == RATED
    figures = report["held_out"]
    assert figures["personal_pairwise"] > figures["active_pairwise"] + model.MARGIN
    assert figures["gain_ci"][0] > 0 and figures["personal_srcc"] > figures["active_srcc"]
    assert report["adopted"], report["reason"]
    assert report["rescored"]["head"] == "personal"
    with Index(library["db"]) as index:
        assert index.runs.active_head_id() == "personal"
        record = index.get_meta(PERSONAL_META)
        head, why = adopted_head(index, record["backbone"])
        assert head is not None and head.hash == record["hash"] and "adopted" in why
    stats = api.stats(settings)
    assert stats["active_head"] == "personal" and "adopted" in stats["head_choice"]["why"]
    doctor = {c["name"]: c for c in api.doctor(settings)["checks"]}
    assert doctor["head"]["head"] == "personal" and "adopted" in doctor["head"]["detail"]

    undone = api.learn_undo(settings)

    assert undone["undone"] and undone["rescored"]["head"] == shipped_head
    assert Path(record["path"]).parent == library["root"].parent / "data" / "aes-index" / "heads"
    assert Path(record["path"]).is_file()  # nothing lost: the learned head stays, by name
    with Index(library["db"]) as index:
        assert index.runs.active_head_id() == shipped_head
        assert adopted_head(index, record["backbone"])[0] is None
        assert index.get_meta(PERSONAL_META)["history"][-1]["hash"] == record["hash"]


def test_a_person_whose_taste_is_the_active_heads_gets_nothing_adopted(library):
    with Index(library["db"]) as index:
        active = index.scores.by_image(index.runs.active_head_id())
    rated_scores = np.array([active[i + 1] for i in range(RATED)])
    rate(library, lambda x: quantised(rated_scores))

    report = api.learn(library["settings"], api.learn_places(library["settings"]))

    assert not report["adopted"]
    assert report["head"] and Path(report["head"]).is_file()  # kept by name
    assert "not" in report["reason"] or "interval" in report["reason"] or "below" in report["reason"]
    with Index(library["db"]) as index:
        assert index.runs.active_head_id() != "personal"


def test_only_a_persons_values_count_ours_never(library):
    """Stars we wrote (journaled) are no decision; stars a person changed from ours are, and
    make "changed" pairs with photos of the shoot where ours still stand."""
    paths = library["paths"]
    with Index(library["db"]) as index:
        run_id = index.journal.new_run_id()
        for path in paths[:60]:  # ours: 3 stars written by a rating run
            sidecar = xmp.sidecar_for(path)
            xmp.write_sidecar(sidecar, rating=3)
            index.journal.record(run_id, Write(target="xmp", place=str(sidecar), image_path=str(path), old=None, new=3))
    for path in paths[:12]:  # the person changes twelve of ours to 5
        xmp.write_sidecar(xmp.sidecar_for(path), rating=5)
    for path in paths[100:110]:  # and rejects ten they were never given stars for
        xmp.write_sidecar(xmp.sidecar_for(path), rating=-1)

    report = api.learn(library["settings"], api.learn_places(library["settings"]))

    assert report["found"]["xmp"] == 22
    counts = report["decisions"]
    assert counts["ratings"] == 22
    assert counts["pairs_by_kind"]["changed"] > 0


def test_darktable_library_is_read_only_and_its_import_star_is_no_judgement(library, tmp_path):
    db = tmp_path / "library.db"
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("CREATE TABLE film_rolls (id INTEGER PRIMARY KEY, access_timestamp INTEGER, folder VARCHAR(1024) NOT NULL)")
        conn.execute("CREATE TABLE images (id INTEGER PRIMARY KEY AUTOINCREMENT, group_id INTEGER, film_id INTEGER, "
                     "filename VARCHAR, version INTEGER, flags INTEGER)")
        folders = sorted({str(p.parent) for p in library["paths"]})
        conn.executemany("INSERT INTO film_rolls (id, folder) VALUES (?, ?)", list(enumerate(folders, 1)))
        film = {folder: n for n, folder in enumerate(folders, 1)}
        rows = []
        for i, path in enumerate(library["paths"][:40]):
            flags = 1 if i < 20 else (4 if i < 30 else 0x8 | 2)  # import default, four stars, rejected (with old stars)
            rows.append((i + 1, i + 1, film[str(path.parent)], path.name, 0, flags))
        conn.executemany("INSERT INTO images (id, group_id, film_id, filename, version, flags) VALUES (?, ?, ?, ?, ?, ?)", rows)
        conn.commit()
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    settings = library["settings"]

    report = api.learn(settings, api.learn_places(settings, darktable_library=db))

    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("library.db")) == ["library.db"]
    assert report["found"]["darktable"] == 20  # ten 4-star, ten rejected; the twenty 1-star imports are none
    assert report["decisions"]["ratings"] == 20


def test_the_command_reports_and_a_missing_darktable_library_is_one_line(library, tiny_model, capsys):
    common = ["--db", str(library["db"]), "--model", tiny_model["config"], "--pretrained", tiny_model["checkpoint"], "--device", "cpu"]
    code = aes_index.cli.main(["learn", *common, "--darktable-library", str(library["root"] / "nope.db")])
    err = capsys.readouterr().err
    assert code == ExitCode.USAGE and "no darktable library" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1

    assert aes_index.cli.main(["learn", *common]) == 0
    out = capsys.readouterr().out
    assert "decisions found:" in out and "not adopted:" in out  # nothing rated: nothing to learn from, said so
    assert aes_index.cli.main(["learn", "undo", *common, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["undone"] is False


# --------------------------------------------------------------------------- the data, without an index


def test_shoots_split_on_long_pauses_and_never_split_a_group():
    photos = {1: ("/a/1.jpg", 0.0), 2: ("/a/2.jpg", 60.0), 3: ("/a/3.jpg", 60.0 + model.SHOOT_GAP_S + 1),
              4: ("/b/4.jpg", None), 5: ("/b/5.jpg", None), 6: ("/c/6.jpg", 5.0)}
    alone = model.shoots(photos)
    assert alone[1] == alone[2] != alone[3] and alone[4] == alone[5] and len(set(alone.values())) == 4
    grouped = model.shoots(photos, groups=[(3, 6)])  # a burst culling linked across two folders
    assert grouped[3] == grouped[6]


def test_the_picked_frame_is_preferred_over_the_rest_of_its_group():
    shoot = {i: 0 for i in range(1, 6)}
    choices = {2: Choice(2, 5, "xmp"), 3: Choice(3, 2, "xmp")}
    decisions = model.build_decisions(choices, {}, shoot, groups=[(1, 2, 3), (4, 5)])
    assert sorted((a, b) for a, b, kind in decisions.pairs if kind == "group") == [(2, 1), (2, 3)]
    rejected_only = model.build_decisions({4: Choice(4, -1, "xmp")}, {}, shoot, groups=[(4, 5)])
    assert rejected_only.pairs == [] and rejected_only.stars == {4: 0.0}


def test_held_out_shoots_are_never_on_both_sides():
    shoot = {i: i // 10 for i in range(200)}
    decisions = model.Decisions({i: float(i % 5) for i in range(200)}, [(i, i + 1, "group") for i in range(0, 200, 10)], shoot)
    train, test = model.split_by_shoot(decisions)
    assert train and test and not train & test
    assert 0.25 <= len(decisions.part(test).stars) / 200 <= 0.4


def test_the_watcher_learns_again_after_n_new_decisions_only_when_turned_on(library):
    from aes_index.features.watch import Watcher

    rng = np.random.default_rng(4)
    hidden = rng.normal(0, 1, library["pooled"].shape[1])
    rate(library, lambda x: quantised(x @ hidden))
    places = api.learn_places(library["settings"])
    with Index(library["db"]) as index:
        off = Watcher(library["db"], [str(library["root"])], library["settings"], learn_places=places)
        off.index = index
        off._maybe_learn()
        assert off.status.learned is None and index.get_meta(PERSONAL_META) is None  # learn_after 0: never

        on = Watcher(library["db"], [str(library["root"])], library["settings"].replace(learn_after=RATED), learn_places=places)
        on.index = index
        on._maybe_learn()
        first = index.get_meta(PERSONAL_META)
        assert on.status.learned is not None and first["choices"] == RATED

        on.status.learned = None
        for path in library["paths"][RATED : RATED + 5]:  # five new decisions: fewer than learn_after
            xmp.write_sidecar(xmp.sidecar_for(path), rating=2)
        on._maybe_learn()
        assert on.status.learned is None and index.get_meta(PERSONAL_META)["hash"] == first["hash"]


def test_the_review_pages_decisions_are_read_from_the_journal_where_they_still_stand(library):
    """A run of the review page's command wrote a person's pick of stars into sidecars; the
    two the person changed again afterwards are read as what the sidecar holds now."""
    paths = library["paths"][:10]
    with Index(library["db"]) as index:
        run_id = index.runs.start("review")
        for path in paths:
            sidecar = xmp.sidecar_for(path)
            xmp.write_sidecar(sidecar, rating=5)
            index.journal.record(run_id, Write(target="xmp", place=str(sidecar), image_path=str(path), old=None, new=5))
    for path in paths[:2]:
        xmp.write_sidecar(xmp.sidecar_for(path), rating=1)

    report = api.learn(library["settings"], api.learn_places(library["settings"]))

    assert report["found"]["review"] == 8 and report["found"]["xmp"] == 2
