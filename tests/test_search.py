"""Search by words and by example (`aes-index search`, `aes-index similar`, features/search.py)
over a real index of the tiny model, checked against open_clip computed here, independently:
the tokenizer and encode_text of the model loaded from its checkpoint, and the cosine of
the index's stored pooled vectors projected with that model's own projection."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import cli_stdout, make_photo, run_cli
from index_rows import rows

QUERIES = ("rowing boats on a lake at dusk", "a red kite over the sea")


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, tiny_model) -> dict:
    """Eight photos, one of them with a resized, re-encoded copy, rebuilt with the tiny model."""
    root = tmp_path_factory.mktemp("search") / "Photos"
    for i in range(8):
        make_photo(root / f"DSC_{i:04d}.jpg", seed=100 + i)
    original, copy = root / "DSC_0003.jpg", root / "copies" / "small-copy.jpg"
    copy.parent.mkdir()
    with Image.open(original) as image:
        image.resize((288, 216), Image.LANCZOS).save(copy, quality=75)
    args = ["--model", tiny_model["config"], "--pretrained", tiny_model["checkpoint"], "--device", "cpu", "--dtype", "fp32"]
    cli_stdout("rebuild", root, *args, "--workers", "0", "-q")
    return {"root": root, "db": root / ".aes-index.db", "args": args, "original": original, "copy": copy}


def open_library(db: Path, args: list[str]):
    """The library as the review server holds it: opened once, read only."""
    from aes_index.config import Settings
    from aes_index.index.library import Library

    options = dict(zip(args[::2], args[1::2]))
    settings = Settings(db=str(db), model=options["--model"], pretrained=options["--pretrained"], device="cpu", dtype="fp32")
    return Library.open(settings, read_only=True)


def reference_model(tiny_model):
    """The tiny model as open_clip loads it from its checkpoint, with its tokenizer."""
    import open_clip

    model = open_clip.create_model("tiny-clip")
    open_clip.load_checkpoint(model, tiny_model["checkpoint"])
    model.eval()
    return model, open_clip.get_tokenizer("tiny-clip")


def stored_cosines(db: Path, query: np.ndarray, projection: np.ndarray, backbone_key: str) -> dict[str, float]:
    """{path: cosine} of every photo's stored embedding (of one backbone) with a unit query."""
    from aes_index.index.store import Index

    with Index(db, read_only=True) as index:
        backbone = index.embeddings.backbone(backbone_key)
        paths = {row["id"]: row["path"] for row in rows(index, "images")}
        found = {}
        for row in rows(index, "embeddings", backbone_id=backbone["id"]):
            pooled = np.frombuffer(row["vector"], "<f2").astype(np.float64)
            projected = pooled @ projection
            found[paths[row["image_id"]]] = float(projected @ query / np.linalg.norm(projected))
    return found


def only_backbone(db: Path) -> str:
    from aes_index.index.store import Index

    with Index(db, read_only=True) as index:
        (backbone,) = index.embeddings.backbones()
        return backbone["key"]


@pytest.mark.parametrize("query", QUERIES)
def test_search_ranks_as_open_clip_encode_text_and_cosine(indexed, tiny_model, query):
    import torch

    from aes_index.features.search import search

    model, tokenizer = reference_model(tiny_model)
    with torch.no_grad():
        text = model.encode_text(tokenizer([query]))[0].double().numpy()
    text /= np.linalg.norm(text)
    projection = model.visual.proj.detach().double().numpy()
    expected = stored_cosines(indexed["db"], text, projection, only_backbone(indexed["db"]))
    ranked = sorted(expected, key=lambda path: -expected[path])

    with open_library(indexed["db"], indexed["args"]) as library:
        hits = search(library, query, n=len(expected))
        top3 = search(library, query, n=3)
    assert [hit.path for hit in hits] == ranked
    assert [hit.similarity for hit in hits] == pytest.approx([expected[path] for path in ranked], abs=1e-5)
    assert [hit.path for hit in top3] == ranked[:3]
    assert all(hit.score is not None for hit in hits)  # the active head scored them all


def test_by_score_orders_the_best_matches_by_the_heads_score(indexed):
    from aes_index.features.search import search

    with open_library(indexed["db"], indexed["args"]) as library:
        best = search(library, QUERIES[0], n=5)
        by_score = search(library, QUERIES[0], n=5, rank="score")
        head = library.index.runs.active_head_id()
        stored = {hit.image_id: library.index.scores.of(hit.image_id, head)[0] for hit in best}
    assert {hit.path for hit in by_score} == {hit.path for hit in best}  # the same matches
    assert [hit.image_id for hit in by_score] == sorted(stored, key=lambda i: -stored[i])
    assert [hit.score for hit in by_score] == [pytest.approx(stored[hit.image_id]) for hit in by_score]


def test_more_like_this_puts_the_resized_copy_first_and_leaves_the_photo_out(indexed, tiny_model):
    from aes_index.features.search import similar

    with open_library(indexed["db"], indexed["args"]) as library:
        hits = similar(library, str(indexed["original"]), n=50)
        back = similar(library, str(indexed["copy"]), n=1)
    paths = [hit.path for hit in hits]
    assert str(indexed["original"]) not in paths
    assert paths[0] == str(indexed["copy"])
    assert len(paths) == 8  # every other photo, the copy included
    assert hits[0].similarity > 0.95 and hits[0].similarity > hits[1].similarity
    assert [hit.similarity for hit in hits] == sorted((hit.similarity for hit in hits), reverse=True)
    assert back[0].path == str(indexed["original"])


def test_another_backbones_embeddings_are_never_returned(tmp_path, indexed, tiny_model):
    """A second backbone in the same index, with the same dimensions, holds a photo that
    matches the query perfectly and other vectors for the photos both hold: search and
    "more like this" see the active backbone's embeddings only."""
    import torch

    from aes_index.features.search import search, similar
    from aes_index.index.store import Index
    from aes_index.model.backbone import BackboneInfo

    db = tmp_path / "two-backbones.db"
    shutil.copy(indexed["db"], db)
    key = only_backbone(db)
    model, tokenizer = reference_model(tiny_model)
    with torch.no_grad():
        text = model.encode_text(tokenizer([QUERIES[1]]))[0].double().numpy()
    text /= np.linalg.norm(text)
    projection = model.visual.proj.detach().double().numpy()
    with Index(db) as index, index.transaction():
        info = BackboneInfo.from_json(index.embeddings.backbone(key)["preprocess"])
        other = index.embeddings.ensure_backbone(
            BackboneInfo("other-clip/elsewhere", "other-clip", "elsewhere", info.pooled_dim, info.embed_dim, info.preprocess),
            projection.astype(np.float32),
        )
        perfect = projection @ text  # its projection is the query's direction: cosine 1
        stranger = index.images.add(str(indexed["root"] / "only-other.jpg"), 1, 1, "f" * 32)
        index.images.mark_ok([stranger])
        shared = [row["id"] for row in rows(index, "images") if row["id"] != stranger]
        pooled = np.tile(perfect, (len(shared) + 1, 1)).astype(np.float16)
        index.embeddings.put(other, [stranger, *shared], pooled, np.linalg.norm(pooled.astype(np.float32) @ projection, axis=1))
    expected = stored_cosines(db, text, projection, key)

    with open_library(db, indexed["args"]) as library:
        hits = search(library, QUERIES[1], n=50)
        alike = similar(library, str(indexed["original"]), n=50)
    assert {hit.path for hit in hits} == set(expected)  # not the stranger
    assert [hit.similarity for hit in hits] == pytest.approx(sorted(expected.values(), reverse=True), abs=1e-5)
    assert str(indexed["root"] / "only-other.jpg") not in {hit.path for hit in alike}
    with Index(db, read_only=True) as index:  # "more like this" by the active backbone's vectors, whose are all alike
        original_id = index.images.by_path(str(indexed["original"]))["id"]
        vector = rows(index, "embeddings", image_id=original_id, backbone_id=index.embeddings.backbone(key)["id"])[0]["vector"]
    example = np.frombuffer(vector, "<f2").astype(np.float64) @ projection
    near = stored_cosines(db, example / np.linalg.norm(example), projection, key)
    del near[str(indexed["original"])]
    assert {hit.path: hit.similarity for hit in alike} == pytest.approx(near, abs=1e-5)


def test_the_store_follows_the_index(tmp_path, tiny_model):
    """A photo added after a search is found by the next one (the store grows by a
    segment); a photo whose pixels changed is found with its new embedding."""
    from aes_index.features.search import search

    root = tmp_path / "Photos"
    for i in range(4):
        make_photo(root / f"IMG_{i}.jpg", seed=200 + i)
    args = ["--model", tiny_model["config"], "--pretrained", tiny_model["checkpoint"], "--device", "cpu", "--dtype", "fp32"]
    db = root / ".aes-index.db"
    cli_stdout("rebuild", root, *args, "--workers", "0", "-q")
    with open_library(db, args) as library:
        before = search(library, QUERIES[0], n=50)
    manifest = json.loads(next((root / ".aes-index.db.vectors").glob("*.json")).read_text())
    assert manifest["last_rowid"] == 4 and [s["rows"] for s in manifest["segments"]] == [4]

    make_photo(root / "new" / "IMG_new.jpg", seed=300)
    cli_stdout("rebuild", root, *args, "--workers", "0", "-q")
    grown = json.loads(next((root / ".aes-index.db.vectors").glob("*.json")).read_text())
    assert [s["rows"] for s in grown["segments"]] == [4, 1]  # rebuild appended the new photo's row
    with open_library(db, args) as library:
        after = search(library, QUERIES[0], n=50)
    assert {hit.path for hit in after} == {hit.path for hit in before} | {str(root / "new" / "IMG_new.jpg")}

    changed = root / "IMG_1.jpg"
    make_photo(changed, seed=999)  # other pixels: its embedding is replaced
    cli_stdout("rebuild", root, *args, "--workers", "0", "-q")
    with open_library(db, args) as library:
        again = {hit.path: hit.similarity for hit in search(library, QUERIES[0], n=50)}
    model, tokenizer = reference_model(tiny_model)
    import torch

    with torch.no_grad():
        text = model.encode_text(tokenizer([QUERIES[0]]))[0].double().numpy()
    expected = stored_cosines(db, text / np.linalg.norm(text), model.visual.proj.detach().double().numpy(), only_backbone(db))
    assert again == pytest.approx(expected, abs=1e-5)
    rebuilt = json.loads(next((root / ".aes-index.db.vectors").glob("*.json")).read_text())
    assert rebuilt["generation"] != grown["generation"] and [s["rows"] for s in rebuilt["segments"]] == [5]
    assert len(list((root / ".aes-index.db.vectors").glob("seg-*"))) == 1  # the old segments are gone


def test_rescore_scores_from_the_store_as_from_the_index(tmp_path, tiny_model, monkeypatch):
    """rescore through the vector store gives the scores the index's own rows give, to the bit."""
    from aes_index.index import runner
    from aes_index.index.store import Index

    root = tmp_path / "Photos"
    for i in range(6):
        make_photo(root / f"IMG_{i}.jpg", seed=400 + i)
    args = ["--model", tiny_model["config"], "--pretrained", tiny_model["checkpoint"], "--device", "cpu", "--dtype", "fp32"]
    cli_stdout("rebuild", root, *args, "--workers", "0", "-q")
    db = root / ".aes-index.db"
    head = "zeroshot:fixed:beautiful/ugly"
    cli_stdout("rescore", "--db", db, *args, "--head", head, "-q")
    with Index(db) as index:
        from_store = {r["image_id"]: r["score"] for r in rows(index, "scores", head_id="zeroshot-fixed-beautiful-vs-ugly")}
        index.db.execute("DELETE FROM scores WHERE head_id = 'zeroshot-fixed-beautiful-vs-ugly'")
    assert (root / ".aes-index.db.vectors").is_dir()
    monkeypatch.setattr(runner, "_cached_embeddings", lambda index, backbone_id, ids: (index.embeddings.iter(backbone_id, ids), False))
    cli_stdout("rescore", "--db", db, *args, "--head", head, "-q")
    with Index(db) as index:
        from_index = {r["image_id"]: r["score"] for r in rows(index, "scores", head_id="zeroshot-fixed-beautiful-vs-ugly")}
    assert len(from_store) == 6 and from_store == from_index


def test_cli_search_and_similar(indexed, capsys):
    code, out, err = run_cli(capsys, "search", QUERIES[0], "-n", "3", "--db", indexed["db"], *indexed["args"], "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["query"] == QUERIES[0] and data["rank"] == "similarity" and len(data["hits"]) == 3
    assert set(data["hits"][0]) == {"path", "image_id", "similarity", "score"}
    code, out, _ = run_cli(capsys, "search", QUERIES[0], "--by-score", "--db", indexed["db"], *indexed["args"], "--json")
    assert code == 0 and json.loads(out)["rank"] == "score"

    code, out, err = run_cli(capsys, "similar", indexed["original"], "-n", "2", "--db", indexed["db"], *indexed["args"])
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 2 and lines[0].endswith(str(indexed["copy"]))


def test_cli_errors_are_one_line_and_an_exit_code(tmp_path, indexed, tiny_model, capsys):
    from aes_index.index.store import Index

    code, out, err = run_cli(capsys, "similar", tmp_path / "nowhere.jpg", "--db", indexed["db"], *indexed["args"])
    assert (code, out) == (2, "") and err.count("\n") == 1 and "no such file" in err
    stranger = make_photo(tmp_path / "stranger.jpg", seed=5)
    code, _, err = run_cli(capsys, "similar", stranger, "--db", indexed["db"], *indexed["args"])
    assert code == 2 and "not in the index" in err and err.count("\n") == 1
    code, _, err = run_cli(capsys, "search", "  ", "--db", indexed["db"], *indexed["args"])
    assert code == 2 and err.count("\n") == 1
    code, _, err = run_cli(capsys, "search", "kite", "-n", "0", "--db", indexed["db"], *indexed["args"])
    assert code == 2 and err.count("\n") == 1

    empty = tmp_path / "empty.db"
    Index(empty).close()
    code, _, err = run_cli(capsys, "search", "kite", "--db", empty, *indexed["args"])
    assert code == 5 and "no embeddings" in err and err.count("\n") == 1

    # The index's weights gone (offline, nothing cached): no text tower, exit 4; "more like
    # this" needs none and still answers.
    moved = tmp_path / "lib"
    shutil.copytree(indexed["root"], moved, ignore=shutil.ignore_patterns(".aes-index.db*"))  # the photos, a new index
    weights = tmp_path / "weights.safetensors"
    shutil.copy(tiny_model["checkpoint"], weights)
    cli_stdout("rebuild", moved, "--model", tiny_model["config"], "--pretrained", weights, "--device", "cpu", "-q")
    weights.unlink()
    db = moved / ".aes-index.db"
    code, _, err = run_cli(capsys, "search", "kite", "--db", db, "--model", tiny_model["config"])
    assert code == 4 and err.count("\n") == 1 and "not found" in err
    code, out, err = run_cli(capsys, "similar", moved / "DSC_0003.jpg", "--db", db, "--model", tiny_model["config"], "-n", "1")
    assert code == 0, err
    assert out.split()[-1] == str(moved / "copies" / "small-copy.jpg")


def test_an_index_from_schema_7_gains_a_generation_per_backbone(tmp_path):
    """The migration gives each backbone its token; a vector replaced or deleted renews it,
    a vector appended keeps it."""
    import sqlite_utils

    from aes_index.index import store
    from aes_index.index.store import Index

    path = tmp_path / "v7.db"  # forged with raw SQL, as version 7 left it
    db = sqlite_utils.Database(path)
    for version, migrate in store.schema.MIGRATIONS[:7]:
        migrate(db)
    db.execute("INSERT INTO backbones (id, key, pooled_dim, embed_dim) VALUES (1, 'tiny/x', 2, 2)")
    db.execute("INSERT INTO images (id, path, status) VALUES (1, '/p/1.jpg', 'ok'), (2, '/p/2.jpg', 'ok')")
    db.execute("PRAGMA user_version = 7")
    db.conn.commit()
    db.conn.close()
    vector = np.ones((1, 2), np.float16)
    with Index(path) as index:
        first, last = index.vectors.state(1)
        assert len(first) == 16 and last == 0
        index.embeddings.put(1, [1], vector, np.ones(1))
        assert index.vectors.state(1) == (first, 1)  # appended
        index.embeddings.put(1, [1], vector * 2, np.ones(1))
        replaced, _ = index.vectors.state(1)
        index.embeddings.put(1, [2], vector, np.ones(1))
        assert index.vectors.state(1)[0] == replaced != first
        index.embeddings.forget(2)
        assert index.vectors.state(1)[0] not in (first, replaced)


@pytest.mark.parametrize("seed", range(6))
def test_store_pages_are_the_pages_the_index_scan_gives(monkeypatch, seed):
    """VectorMatrix.pages over any segments, with photos left out (missing) and ids
    wanted, holds the rows, in the chunks, that Embeddings.iter's scan of the index
    gives: rows in order, the left-out dropped, cut into pages, then the wanted kept."""
    from aes_index.index.store import vectors

    page = 5
    monkeypatch.setattr(vectors, "PAGE_ROWS", page)
    rng = np.random.default_rng(seed)
    total = int(rng.integers(0, 40))
    ids = np.sort(rng.choice(200, total, replace=False)).astype(np.int64)
    pooled = rng.standard_normal((total, 3)).astype(np.float32)
    norms = rng.random(total).astype(np.float32)
    cuts = np.sort(rng.choice(total + 1, int(rng.integers(0, 4)), replace=True)) if total else []
    bounds = [0, *cuts, total]
    segments = [vectors.Segment(ids[a:b], norms[a:b], pooled[a:b]) for a, b in zip(bounds, bounds[1:])]
    matrix = vectors.VectorMatrix(1, 3, "g", total, segments)
    leave_out = np.sort(rng.choice(200, int(rng.integers(0, 60)), replace=False)).astype(np.int64)
    wanted = None if seed % 2 else np.sort(rng.choice(200, 120, replace=False)).astype(np.int64)

    present = ~np.isin(ids, leave_out)
    expected = []
    for start in range(0, int(present.sum()), page):  # the index's scan: pages of present rows
        rows = np.flatnonzero(present)[start : start + page]
        rows = rows if wanted is None else rows[np.isin(ids[rows], wanted)]
        if len(rows):
            expected.append((ids[rows], pooled[rows], norms[rows]))
    got = list(matrix.pages(leave_out, wanted))
    assert len(got) == len(expected)
    for (got_ids, got_pooled, got_norms), (want_ids, want_pooled, want_norms) in zip(got, expected):
        assert np.array_equal(got_ids, want_ids) and np.array_equal(got_pooled, want_pooled) and np.array_equal(got_norms, want_norms)


def test_segments_beyond_the_most_are_merged_into_one(tmp_path, monkeypatch):
    """Appends become segments; past MAX_SEGMENTS they are merged, rows unchanged, and the
    files no manifest names are removed."""
    from aes_index.index.store import Index, vectors
    from aes_index.model.backbone import BackboneInfo, PreprocessSpec

    monkeypatch.setattr(vectors, "MAX_SEGMENTS", 2)
    info = BackboneInfo("tiny/x", "tiny", "x", 4, 3, PreprocessSpec(8, (0.5,) * 3, (0.5,) * 3))
    rng = np.random.default_rng(3)
    with Index(tmp_path / "index.db") as index:
        backbone = index.embeddings.ensure_backbone(info, np.eye(4, 3, dtype=np.float32))
        stored = []
        for batch in range(4):
            ids = [index.images.add(f"/p/{batch}-{k}.jpg", 1, 1, f"{batch}{k}".ljust(32, "0")) for k in range(3)]
            pooled = rng.standard_normal((3, 4)).astype(np.float16)
            index.embeddings.put(backbone, ids, pooled, np.ones(3, np.float32))
            stored += list(zip(ids, pooled.astype(np.float32)))
            matrix = index.vectors.matrix(backbone)
            assert len(matrix.segments) <= 2
            got = [(int(i), row) for segment in matrix.segments for i, row in zip(segment.ids, segment.pooled)]
            assert [i for i, _ in got] == [i for i, _ in stored]
            assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(got, stored))
        folder = index.vectors.folder()
    manifest = json.loads(next(folder.glob("*.json")).read_text())
    assert sorted(p.name for p in folder.glob("seg-*")) == sorted(s["file"] for s in manifest["segments"])
