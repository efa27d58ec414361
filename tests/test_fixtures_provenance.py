"""The fixtures live in the repository, each with its source and licence on record.

tests/fixtures/PROVENANCE.md lists every fixture in a table (source, licence) and in its sha256
block; these tests hold it to the files, and check that no test or benchmark reaches for the
folder beside the repository (../shared) that the fixtures used to come from: a fresh clone
has nothing beside it.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from conftest import FIXTURES, REPO_ROOT

PROVENANCE = FIXTURES / "PROVENANCE.md"
CHECKSUM_LINE = re.compile(r"^\s+([0-9a-f]{64})  (\S.*)$")


def _is_record(path: Path) -> bool:
    """The records themselves, not fixtures: PROVENANCE.md files and licence texts."""
    return path.name == "PROVENANCE.md" or path.name.startswith("LICENSE")


def fixture_files() -> dict[str, Path]:
    return {
        path.relative_to(FIXTURES).as_posix(): path
        for path in FIXTURES.rglob("*")
        if path.is_file() and not _is_record(path)
    }


def recorded_checksums() -> dict[str, str]:
    text = PROVENANCE.read_text(encoding="utf-8")
    block = text.split("\n## sha256\n", 1)[1]
    lines = [CHECKSUM_LINE.match(line) for line in block.splitlines() if line.strip()]
    assert all(lines), "every line of the sha256 block is '<sha256>  <path>'"
    recorded = {m.group(2): m.group(1) for m in lines}
    assert len(recorded) == len(lines), "a path is listed twice"
    return recorded


def test_every_fixture_is_listed_with_its_sha256_and_nothing_else_is():
    files = fixture_files()
    recorded = recorded_checksums()
    assert len(files) >= 30  # the folder is really there, not an empty or missing one
    assert sorted(files) == sorted(recorded)
    wrong = {name: digest for name, digest in recorded.items()
             if hashlib.sha256(files[name].read_bytes()).hexdigest() != digest}
    assert not wrong, f"these fixtures differ from the bytes on record: {sorted(wrong)}"


def test_every_fixture_has_a_row_naming_its_source_and_licence():
    rows = [line for line in PROVENANCE.read_text(encoding="utf-8").splitlines() if line.startswith("| `")]
    named = {line.split("`")[1]: line for line in rows}
    for name in fixture_files():
        assert name in named, f"{name} has no row in PROVENANCE.md"
        cells = [cell.strip() for cell in named[name].strip("|").split("|")]
        assert len(cells) == 3 and all(cells), f"{name}: a row is file | source | licence, none empty"


# --- nothing beside the repository ----------------------------------------------------------

# A path built from a parent of the repository (or of tests/) and a folder named "shared",
# the way the tests used to find ../shared/fixtures: `REPO_ROOT.parent / "shared"`,
# `Path(__file__).resolve().parents[2] / "shared" / "fixtures"`, or "../shared/...".
BESIDE_THE_CLONE = re.compile(r"""(\.parent\b|\bparents\[\d+\]).*["']shared["']|\.\./shared\b""")


def test_the_pattern_finds_the_ways_the_tests_used_to_reach_shared():
    for line in (
        'FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"',
        'SHARED = REPO_ROOT.parent / "shared"',
        "HARBOUR = Path(__file__).resolve().parents[2].parent / 'shared' / 'fixtures'",
        'needs_upstream = pytest.mark.skipif(True, reason="../shared/upstream-heads is not here")',
    ):
        assert BESIDE_THE_CLONE.search(line), line
    for line in ('shared = root / "IMG_1.xmp"', "a shared page is counted once per process"):
        assert not BESIDE_THE_CLONE.search(line), line


def test_no_test_benchmark_or_packaging_script_reads_beside_the_repository():
    this_file = Path(__file__).resolve()
    sources = [p for folder in ("tests", "packaging") for p in (REPO_ROOT / folder).rglob("*.py")]
    assert any(p.parent.name == "benchmarks" for p in sources)
    offending = [
        f"{path.relative_to(REPO_ROOT)}:{number}: {line.strip()}"
        for path in sources
        if path.resolve() != this_file  # its own examples above are the pattern's test
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if BESIDE_THE_CLONE.search(line)
    ]
    assert not offending, "\n".join(offending)
