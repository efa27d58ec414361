"""End-to-end indexing with the tiny model: incremental, moves, rescore, bad input, bounds."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from aes_index.index import runner as indexer, pipeline
from aes_index.errors import IndexUnavailable
from aes_index.index.store import ERROR, MISSING, OK, Index

from conftest import METADATA_SAMPLES, make_photo, photo_paths
import index_rows


@pytest.fixture
def decode_calls(monkeypatch):
    """Every file decoded (inline workers), in order."""
    calls = []
    real = pipeline.decode_image

    def counting(path, *args, **kwargs):
        calls.append(os.path.basename(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(pipeline, "decode_image", counting)
    return calls


@pytest.fixture
def index(tmp_path):
    with Index(tmp_path / "index.db") as opened:
        yield opened


def _embedding(index, image_id):
    return index_rows.one(index, "embeddings", image_id=image_id)["vector"]


def _score(index, image_id):
    return index_rows.one(index, "scores", image_id=image_id)["score"]


def test_rebuild_indexes_every_fixture_or_records_its_error(index, library, settings, decode_calls):
    summary = indexer.rebuild(index, [str(library)], settings)
    expected = photo_paths(library)
    rows = {row["path"]: row for row in index_rows.rows(index, "images")}
    ok = sum(row["status"] == OK for row in rows.values())
    assert summary.files == len(expected) and summary.decoded == ok and summary.decoded + summary.errors == len(expected)
    assert set(rows) == {str(p) for p in expected}
    assert not any("@eaDir" in p or ".hidden" in p for p in rows)  # NAS clutter and hidden folders skipped
    for path, row in rows.items():
        assert row["status"] in (OK, ERROR), path
        if row["status"] == ERROR:
            assert row["error"] and "\n" not in row["error"] and row["error_code"]
        else:
            assert _embedding(index, row["id"]) is not None and _score(index, row["id"]) is not None
    errors = sum(r["status"] == ERROR for r in rows.values())
    assert summary.errors == errors and summary.scored == len(rows) - errors
    assert rows[str(library / "2024" / "Straße mit Ümläut 'quoted' $(x).jpg")]["status"] == OK
    # every metadata sample that is an image format was tried: decoded or a recorded error
    samples = {p.name for p in METADATA_SAMPLES.iterdir() if p.suffix.lower() != ".xmp"}
    assert samples <= {Path(p).name for p in rows}


def test_second_rebuild_decodes_nothing(index, library, settings, decode_calls):
    indexer.rebuild(index, [str(library)], settings)
    first = len(decode_calls)
    summary = indexer.rebuild(index, [str(library)], settings)
    assert len(decode_calls) == first
    assert summary.decoded == 0 and summary.scored == 0 and summary.skipped == summary.files


def test_rename_and_move_keep_the_embedding(index, library, settings, decode_calls):
    indexer.rebuild(index, [str(library)], settings)
    old = library / "2024" / "IMG_0001.jpg"
    row = index.images.by_path(str(old))
    vector, score = _embedding(index, row["id"]), _score(index, row["id"])
    new = library / "moved" / "renamed.jpg"
    new.parent.mkdir()
    os.rename(old, new)
    decoded_before = len(decode_calls)

    summary = indexer.rebuild(index, [str(library)], settings)
    assert summary.moved == 1 and summary.decoded == 0 and len(decode_calls) == decoded_before
    moved = index.images.by_path(str(new))
    assert moved["id"] == row["id"] and moved["status"] == OK
    assert _embedding(index, row["id"]) == vector and _score(index, row["id"]) == score
    assert index.images.by_path(str(old)) is None


def test_deleted_file_is_marked_missing_and_comes_back_without_decoding(index, library, settings, decode_calls, tmp_path):
    indexer.rebuild(index, [str(library)], settings)
    photo = library / "2024" / "IMG_0002.jpg"
    parked = tmp_path / "parked.jpg"
    shutil.move(photo, parked)
    summary = indexer.rebuild(index, [str(library)], settings)
    assert summary.missing == 1 and index.images.by_path(str(photo))["status"] == MISSING
    assert str(photo) not in [r["path"] for r in index.scores.ranked(index.runs.active_head_id())]  # not listed

    shutil.move(parked, photo)
    decoded_before = len(decode_calls)
    summary = indexer.rebuild(index, [str(library)], settings)
    assert summary.decoded == 0 and len(decode_calls) == decoded_before
    assert index.images.by_path(str(photo))["status"] == OK


def test_copies_share_an_embedding_and_new_pixels_are_decoded(index, library, settings, decode_calls):
    indexer.rebuild(index, [str(library)], settings)
    source = library / "2024" / "IMG_0003.jpg"
    shutil.copy2(source, library / "2024" / "IMG_0003 copy.jpg")
    make_photo(library / "2024" / "IMG_0004.jpg", seed=99)  # same name, new pixels
    os.utime(library / "2024" / "IMG_0005.jpg", None)  # touched only
    decoded_before = len(decode_calls)

    summary = indexer.rebuild(index, [str(library)], settings)
    assert decode_calls[decoded_before:] == ["IMG_0004.jpg"]
    assert summary.new == 1 and summary.changed == 1
    copy = index.images.by_path(str(library / "2024" / "IMG_0003 copy.jpg"))
    original = index.images.by_path(str(source))
    assert _embedding(index, copy["id"]) == _embedding(index, original["id"])
    assert _score(index, copy["id"]) == pytest.approx(_score(index, original["id"]))


def test_rescore_changes_scores_without_decoding(index, library, settings, decode_calls, monkeypatch):
    indexer.rebuild(index, [str(library)], settings)
    before = {r["path"]: r["score"] for r in index.scores.ranked("zeroshot-ensemble-outstanding-vs-horrible")}
    decoded_before = len(decode_calls)

    summary = indexer.rescore(index, settings.replace(head="zeroshot:fixed:beautiful/ugly"))
    after = {r["path"]: r["score"] for r in index.scores.ranked("zeroshot-fixed-beautiful-vs-ugly")}
    assert len(decode_calls) == decoded_before and summary.scored == len(before)
    assert set(after) == set(before) and after != before
    assert index.runs.active_head_id() == "zeroshot-fixed-beautiful-vs-ugly"

    # the same head again: nothing is stale, and the model is not even loaded
    monkeypatch.setattr(indexer, "load_backbone", lambda *a, **k: pytest.fail("model loaded"))
    assert indexer.rescore(index, settings.replace(head="zeroshot:fixed:beautiful/ugly")).scored == 0


def test_scores_record_their_provenance(index, library, settings):
    indexer.rebuild(index, [str(library)], settings)
    row = index_rows.scores(index)[0]
    backbone = index_rows.one(index, "backbones", id=row["backbone_id"])
    head = index_rows.one(index, "heads", id=row["head_id"])
    assert row["head_hash"] == head["hash"] and backbone["key"].startswith("tiny-clip/file:")
    assert row["preprocess"] == "draft-decode;shortest-bicubic-64;crop-center"


def test_force_decodes_everything_again(index, library, settings, decode_calls):
    indexer.rebuild(index, [str(library)], settings)
    first = len(decode_calls)
    summary = indexer.rebuild(index, [str(library)], settings, force=True)
    assert len(decode_calls) == 2 * first and summary.decoded + summary.errors == first and summary.decoded > 0


def test_worker_processes_give_the_same_embeddings_as_inline(tmp_path, library, settings):
    with Index(tmp_path / "inline.db") as inline, Index(tmp_path / "workers.db") as pooled:
        indexer.rebuild(inline, [str(library)], settings)
        indexer.rebuild(pooled, [str(library)], settings.replace(workers=2))
        a = {r["path"]: r["score"] for r in inline.scores.ranked(inline.runs.active_head_id())}
        b = {r["path"]: r["score"] for r in pooled.scores.ranked(pooled.runs.active_head_id())}
        assert a.keys() == b.keys() and len(a) > 5
        # equal up to float noise (batches of other sizes take other matmul kernels)
        assert all(abs(a[path] - b[path]) < 1e-4 for path in a)
        assert inline.images.error_counts() == pooled.images.error_counts()


def test_interrupted_rebuild_continues_where_it_stopped(index, library, settings, decode_calls):
    stops = iter([False, True])
    summary = indexer.rebuild(index, [str(library)], settings, stop=lambda: next(stops, True))
    done = len(decode_calls)
    assert 0 < done < summary.files
    indexer.rebuild(index, [str(library)], settings)
    assert len(decode_calls) == summary.files  # each file decoded exactly once over both runs
    assert sorted(decode_calls) == sorted(set(decode_calls))


def test_a_crashing_decoder_is_recorded_and_the_run_goes_on(tmp_path, library, settings, monkeypatch):
    """A native crash (segfault) in a worker kills that process, not the run."""
    import crash_helper

    crasher = library / "2024" / "IMG_0000.jpg"
    monkeypatch.setenv(crash_helper.CRASH_ENV, crasher.name)
    monkeypatch.setattr(pipeline, "_prepare_chunk", crash_helper.prepare_or_segfault)
    with Index(tmp_path / "crash.db") as index:
        summary = indexer.rebuild(index, [str(library)], settings.replace(workers=1))
        row = index.images.by_path(str(crasher))
        assert row["status"] == ERROR and row["error_code"] == "crash"
        assert summary.scored >= len(photo_paths(library)) - summary.errors
        assert index.images.by_path(str(library / "2024" / "IMG_0001.jpg"))["status"] == OK


def test_decode_stream_keeps_a_bounded_number_of_items_in_flight(settings):
    """Memory stays bounded: the producer is never more than `ahead` chunks ahead."""
    from aes_index.model.backbone import PreprocessSpec

    spec = PreprocessSpec(size=32, mean=(0.5,) * 3, std=(0.5,) * 3)
    consumed = 0

    def items():
        nonlocal consumed
        for i in range(200):
            consumed += 1
            yield i, f"/nonexistent/{i}.jpg"

    chunk, ahead, produced = 4, 3, 0
    for _ in pipeline.decode_stream(items(), spec, workers=1, chunk=chunk, ahead=ahead):
        produced += 1
        assert consumed - produced <= chunk * ahead
    assert produced == 200


def test_unreadable_folder_is_reported_and_the_scan_goes_on(index, library, settings, monkeypatch):
    import aes_index.index.discover as library_module

    real_scandir = os.scandir

    def scandir(path):
        if str(path).endswith("samples"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(library_module.os, "scandir", scandir)
    summary = indexer.rebuild(index, [str(library)], settings)
    assert summary.errors >= 1 and summary.decoded == 7  # the 7 photos outside samples/


def test_damaged_index_is_a_clear_error(tmp_path):
    broken = tmp_path / "broken.db"
    broken.write_bytes(b"this is not a database" * 100)
    with pytest.raises(IndexUnavailable, match="cannot open index"):
        Index(broken)


def test_index_newer_than_the_program_is_refused(tmp_path):
    path = tmp_path / "future.db"
    Index(path).close()
    conn = sqlite3.connect(path)  # raw SQL: forges an index from a newer aes-index
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(IndexUnavailable, match="newer than this aes-index"):
        Index(path)


def test_index_uses_wal_and_stores_float16_embeddings(index, library, settings):
    indexer.rebuild(index, [str(library)], settings)
    assert index.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # raw: the file's mode, no table's rows
    backbone_id = index.embeddings.backbones()[0]["id"]
    ids, matrix, norms = next(index.embeddings.iter(backbone_id))
    assert matrix.dtype == np.float16 and matrix.shape[1] == 64
    assert len(_embedding(index, int(ids[0]))) == 64 * 2
    assert np.all(norms > 0)


def test_a_file_name_that_is_not_utf8_is_reported_and_the_run_goes_on(index, library, settings, caplog):
    """A legacy-encoded name (Latin-1 from an old camera card or a Windows share)."""
    source = (library / "2024" / "IMG_0001.jpg").read_bytes()
    weird = os.path.join(os.fsencode(library / "2024"), b"Stra\xdfe.jpg")  # Latin-1 sharp s
    with open(weird, "wb") as handle:
        handle.write(source + b"\x00")
    summary = indexer.rebuild(index, [str(library)], settings)
    indexable = photo_paths(library)  # the same discovery: the odd name is left out
    failed = index_rows.count(index, "images", status=ERROR)
    assert summary.files == len(indexable) and summary.decoded == len(indexable) - failed and summary.errors == failed + 1
    assert [e["code"] for e in index.images.scan_errors()] == ["name-not-utf8"]  # recorded, for stats and the gallery
    assert index_rows.count(index, "images") == len(indexable)  # nothing half-stored for the odd name
    assert any("not valid UTF-8" in r.getMessage() and "Stra\ufffde.jpg" in r.getMessage() for r in caplog.records)
