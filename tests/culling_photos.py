"""Real photographs for the culling tests and benchmarks: Debian's mate-backgrounds.

The package (`apt-get download mate-backgrounds`, unpacked with `dpkg-deb -x`, never
installed) ships wallpapers in three folders of /usr/share/backgrounds/mate/:

* nature/   12 JPEG photographs (macro flowers, grass, leaves, a ladybird, a water drop,
            a dune, a storm over a road, weathered wood), 1280x1024 to 2560x1920;
* abstract/ renderings and a painting (Elephants*), not photographs;
* desktop/  logos, stripes and gradients.

Only nature/ is used, by name (NATURE_PHOTOS below), so that a later package version that adds
a graphic to that folder does not silently change what the benchmark measures. They are real
camera photographs with what culling meets in a real library: shallow depth of field (most of
a sharp macro frame is bokeh), a photo with motion blur on purpose (Storm, panned), a nearly
featureless one (Wood), bright and dark ones.

The extracted files are cached in $AES_TEST_CACHE_DIR (default ~/.cache/aes-index-tests),
keyed by the package version; .ci/run downloads them before the tests, so that in CI a
failed download fails the run instead of skipping the tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

PACKAGE = "mate-backgrounds"
NATURE_DIR = "usr/share/backgrounds/mate/nature"
NATURE_PHOTOS = (
    "Aqua.jpg", "Blinds.jpg", "Dune.jpg", "FreshFlower.jpg", "Garden.jpg", "GreenMeadow.jpg",
    "LadyBird.jpg", "RainDrops.jpg", "Storm.jpg", "TwoWings.jpg", "Wood.jpg", "YellowFlower.jpg",
)  # fmt: skip


class PhotosUnavailable(RuntimeError):
    """The package could not be downloaded or unpacked (no package lists, no mirror)."""


def cache_dir() -> Path:
    return Path(os.environ.get("AES_TEST_CACHE_DIR") or Path.home() / ".cache" / "aes-index-tests")


def mate_nature_photos() -> list[Path]:
    """The 12 nature photographs of mate-backgrounds, downloaded and unpacked once."""
    cached = _cached_versions()
    try:
        version = _candidate_version()
    except PhotosUnavailable:
        if cached:  # offline, but unpacked before: any version has the same photographs
            return _photos_in(cached[-1])
        raise
    folder = cache_dir() / f"{PACKAGE}_{version.replace(':', '_')}"
    if not (folder / ".complete").is_file():
        _download_and_unpack(version, folder)
    return _photos_in(folder)


def _cached_versions() -> list[Path]:
    return sorted(p.parent for p in cache_dir().glob(f"{PACKAGE}_*/.complete"))


def _photos_in(folder: Path) -> list[Path]:
    photos = [folder / NATURE_DIR / name for name in NATURE_PHOTOS]
    missing = [p.name for p in photos if not p.is_file()]
    if missing:
        raise PhotosUnavailable(f"{PACKAGE} in {folder} lacks {', '.join(missing)}")
    return photos


def _candidate_version() -> str:
    shown = _run("apt-cache", "show", "--no-all-versions", PACKAGE)
    for line in shown.splitlines():
        if line.startswith("Version:"):
            return line.split(":", 1)[1].strip()
    raise PhotosUnavailable(f"apt-cache knows no version of {PACKAGE} (run apt-get update)")


def _download_and_unpack(version: str, folder: Path) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent) as scratch:
        _run("apt-get", "download", f"{PACKAGE}={version}", cwd=scratch)
        debs = list(Path(scratch).glob(f"{PACKAGE}_*.deb"))
        if len(debs) != 1:
            raise PhotosUnavailable(f"apt-get download left {len(debs)} {PACKAGE} packages")
        unpacked = Path(scratch) / "root"
        _run("dpkg-deb", "-x", str(debs[0]), str(unpacked))
        (unpacked / ".complete").write_text(version + "\n")
        try:  # concurrent sessions: the first rename wins, the others use its result
            os.replace(unpacked, folder)
        except OSError:
            if not (folder / ".complete").is_file():
                raise


def _run(*command: str, cwd: str | None = None) -> str:
    if shutil.which(command[0]) is None:
        raise PhotosUnavailable(f"{command[0]} is not installed (a Debian tool)")
    try:
        done = subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=600)
    except subprocess.TimeoutExpired as exc:
        raise PhotosUnavailable(f"`{' '.join(command)}` took over {exc.timeout} s") from exc
    if done.returncode != 0:
        raise PhotosUnavailable(f"`{' '.join(command)}` failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return done.stdout


if __name__ == "__main__":  # .ci/run: fetch them before the tests, failing loudly
    for photo in mate_nature_photos():
        print(photo)
