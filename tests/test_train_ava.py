"""AVA.txt parsing, splits (files or seeded), and finding the image files."""

from __future__ import annotations

import numpy as np
import pytest

from aes_train.ava import find_images, make_split, read_ava, read_id_list
from aes_train.errors import DatasetError

from test_train_fixtures import make_ava


def test_parses_counts_means_and_histograms(tmp_path):
    data = make_ava(tmp_path, n=12)
    table = read_ava(data.ava_txt)
    np.testing.assert_array_equal(table.image_ids, data.ids)
    np.testing.assert_array_equal(table.counts, data.counts)
    expected = [sum(k * c for k, c in zip(range(1, 11), row)) / sum(row) for row in data.counts]
    np.testing.assert_allclose(table.mean_scores(), expected)
    np.testing.assert_allclose(table.histograms().sum(axis=1), 1.0)
    assert table.tags.shape == (12, 2) and table.challenges.shape == (12,)
    assert table.source["rows"] == 12 and len(table.source["sha256"]) == 64


def test_rows_without_votes_and_repeated_ids_are_skipped_and_counted(tmp_path):
    path = tmp_path / "AVA.txt"
    path.write_text(
        "1 100 0 0 0 0 1 1 0 0 0 0 1 2 3\n"
        "2 101 0 0 0 0 0 0 0 0 0 0 1 2 3\n"  # nobody voted: no mean
        "3 100 5 0 0 0 0 0 0 0 0 0 1 2 3\n"  # repeated id: the first line wins
        "\n"
    )
    table = read_ava(path)
    assert table.image_ids.tolist() == [100]
    assert table.mean_scores()[0] == 5.5
    assert table.source["skipped_no_votes"] == 1 and table.source["skipped_repeated"] == 1


@pytest.mark.parametrize(
    "line, message",
    [("1 100 1 2 3", "expected 15 numbers"), ("1 100 a 0 0 0 0 0 0 0 0 0 1 2 3", "whole numbers"),
     ("1 100 -1 0 0 0 0 0 0 0 0 5 1 2 3", "negative")],
)
def test_malformed_lines_name_the_line(tmp_path, line, message):
    path = tmp_path / "AVA.txt"
    path.write_text("1 99 0 0 0 0 1 0 0 0 0 0 0 0 1\n" + line + "\n")
    with pytest.raises(DatasetError, match=f"line 2: .*{message}"):
        read_ava(path)


def test_missing_file_is_a_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match="cannot read AVA file"):
        read_ava(tmp_path / "nope.txt")


def test_seeded_split_is_deterministic_disjoint_and_stable_under_subsets():
    ids = np.arange(10_000, 30_000)
    split = make_split(ids, test_fraction=0.1, val_fraction=0.1, seed=0)
    assert not (split.train & split.val).any() and not (split.train & split.test).any() and not (split.val & split.test).any()
    assert (split.train | split.val | split.test).all()
    assert 0.08 < split.test.mean() < 0.12
    assert 0.07 < split.val.mean() < 0.11  # 10% of the 90% training split
    again = make_split(ids, seed=0)
    np.testing.assert_array_equal(split.test, again.test)
    # an image keeps its side when others are added or lost: the split hashes ids
    half = make_split(ids[::2], seed=0)
    np.testing.assert_array_equal(half.test, split.test[::2])
    other = make_split(ids, seed=1)
    assert (other.test != split.test).any()
    assert split.description["method"] == "seeded-hash" and split.description["test"] == int(split.test.sum())


def test_split_files_official_style(tmp_path):
    ids = np.arange(100, 140)
    (tmp_path / "generic_test.jpgl").write_text("\n".join(str(i) for i in range(100, 110)) + "\n")
    (tmp_path / "generic_train.jpgl").write_text("\n".join(f"{i}.jpg" for i in range(110, 135)) + "\n")
    split = make_split(ids, test_list=str(tmp_path / "generic_test.jpgl"), train_list=str(tmp_path / "generic_train.jpgl"))
    assert ids[split.test].tolist() == list(range(100, 110))
    assert set(ids[split.training].tolist()) == set(range(110, 135))  # 135..139 are in neither list
    assert split.description["method"] == "files" and split.description["test_list"] == "generic_test.jpgl"


def test_bad_split_file_and_empty_split_are_dataset_errors(tmp_path):
    bad = tmp_path / "test.jpgl"
    bad.write_text("123\nnot-an-id\n")
    with pytest.raises(DatasetError, match="line 2"):
        read_id_list(bad)
    with pytest.raises(DatasetError, match="every part needs"):
        make_split(np.arange(3), test_fraction=0.1)


def test_find_images_any_depth_and_records_missing(tmp_path):
    data = make_ava(tmp_path, n=8, missing=2)
    nested = data.images / "part2"
    nested.mkdir()
    moved = data.ids[0]
    (data.images / f"{moved}.jpg").rename(nested / f"{moved}.jpg")
    (data.images / "notes.txt").write_text("x")
    files = find_images(tmp_path, data.ids)
    assert files.paths[int(moved)].endswith(f"part2/{moved}.jpg")
    assert files.missing == sorted(data.missing)
    assert len(files.paths) == 6
    with pytest.raises(DatasetError, match="image folder not found"):
        find_images(tmp_path / "nope", data.ids)
