"""Real photographs for the culling tests and benchmarks, from Debian packages of wallpapers.

A package (`apt-get download PKG`, unpacked with `dpkg-deb -x`, never installed) is fetched
once into $AES_TEST_CACHE_DIR (default ~/.cache/aes-index-tests), keyed by its version; .ci/run
downloads them before the tests, so that in CI a failed download fails the run instead of
skipping the tests. Photographs are named one by one (PhotoPackage.photos), so that a later
package version that adds a graphic to a folder does not silently change what is measured.

* MATE: mate-backgrounds, /usr/share/backgrounds/mate/nature/: 12 JPEG photographs (macro
  flowers, grass, leaves, a ladybird, a water drop, a dune, a storm over a road, weathered
  wood), 1280x1024 to 2560x1920. Its abstract/ and desktop/ folders are renderings, logos and
  gradients, not photographs. What culling meets in a real library: shallow depth of field
  (most of a sharp macro frame is bokeh), a photo with motion blur on purpose (Storm,
  panned), a nearly featureless one (Wood), bright and dark ones.
* PLASMA: plasma-workspace-wallpapers (KDE), /usr/share/wallpapers/<Name>/contents/images/:
  of its 30 wallpapers 11 are camera photographs, all 2560x1600 JPEG (the other sizes in a
  folder are links to it): a jetty at the water, paper cups from above, rowing boats at dusk,
  a maple leaf in a shallow depth of field, a building's facade, a kite in the sky, moss, a
  forest path; and three nearly featureless ones kept apart as smooth frames (a jetty in
  fog, a lake at dusk, a lake in the blue hour). The rest are renderings and drawings.

Licences, as each package's debian/copyright (installed as /usr/share/doc/PKG/copyright)
states them; see tests/fixtures/PROVENANCE.md, "Downloaded by the tests":
* mate-backgrounds: GPL-2.0-or-later for every file of nature/ (one stanza per photograph,
  each "License: GPL-2+", the copyright holders named there and in upstream's AUTHORS).
* plasma-workspace-wallpapers: GPL-2.0-or-later ("Files: *", "Copyright: 2014 KDE Visual
  Design Group", "License: GPL-2+"). The wallpapers' own metadata.json files say
  "LGPLv3" for these photographs: the two statements differ, and we follow Debian's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PhotoPackage:
    """A Debian package's photographs: `photos` make scenes of every kind; `smooth` are nearly
    featureless photographs (fog, a dusk sky), used only where a smooth frame is wanted."""

    package: str
    folder: str  # where the photographs lie inside the package
    photos: tuple[str, ...]  # relative to folder
    smooth: tuple[str, ...] = ()
    licence: str = ""  # SPDX, as the package's debian/copyright states it

    def describe(self) -> str:
        return f"Debian {self.package}, {self.folder}/: {len(self.photos)} photographs" + (
            f" and {len(self.smooth)} smooth ones" if self.smooth else "") + f" ({self.licence})"


MATE = PhotoPackage(
    "mate-backgrounds", "usr/share/backgrounds/mate/nature",
    ("Aqua.jpg", "Blinds.jpg", "Dune.jpg", "FreshFlower.jpg", "Garden.jpg", "GreenMeadow.jpg",
     "LadyBird.jpg", "RainDrops.jpg", "Storm.jpg", "TwoWings.jpg", "Wood.jpg", "YellowFlower.jpg"),
    licence="GPL-2.0-or-later",
)  # fmt: skip
PLASMA = PhotoPackage(
    "plasma-workspace-wallpapers", "usr/share/wallpapers",
    tuple(f"{name}/contents/images/2560x1600.jpg" for name in (
        "BytheWater", "ColorfulCups", "EveningGlow", "FallenLeaf", "Grey", "Kite", "OneStandsOut", "Path")),
    smooth=tuple(f"{name}/contents/images/2560x1600.jpg" for name in ("ColdRipple", "summer_1am", "DarkestHour")),
    licence="GPL-2.0-or-later",
)  # fmt: skip
PACKAGES = {"mate": MATE, "plasma": PLASMA}

# The first package's names, as callers knew them.
PACKAGE = MATE.package
NATURE_DIR = MATE.folder
NATURE_PHOTOS = MATE.photos


class PhotosUnavailable(RuntimeError):
    """The package could not be downloaded or unpacked (no package lists, no mirror)."""


def cache_dir() -> Path:
    return Path(os.environ.get("AES_TEST_CACHE_DIR") or Path.home() / ".cache" / "aes-index-tests")


def mate_nature_photos() -> list[Path]:
    """The 12 nature photographs of mate-backgrounds, downloaded and unpacked once."""
    return package_photos(MATE)


def plasma_photos() -> tuple[list[Path], list[Path]]:
    """(photographs, smooth photographs) of plasma-workspace-wallpapers."""
    folder = unpacked(PLASMA)
    return _photos_in(PLASMA, folder, PLASMA.photos), _photos_in(PLASMA, folder, PLASMA.smooth)


def package_photos(package: PhotoPackage) -> list[Path]:
    return _photos_in(package, unpacked(package), package.photos)


def unpacked(package: PhotoPackage) -> Path:
    """The folder the package is unpacked in, downloading it the first time."""
    cached = _cached_versions(package.package)
    try:
        version = _candidate_version(package.package)
    except PhotosUnavailable:
        if cached:  # offline, but unpacked before: any version has the same photographs
            return cached[-1]
        raise
    folder = cache_dir() / f"{package.package}_{version.replace(':', '_')}"
    if not (folder / ".complete").is_file():
        _download_and_unpack(package.package, version, folder)
    return folder


def _cached_versions(name: str) -> list[Path]:
    return sorted(p.parent for p in cache_dir().glob(f"{name}_*/.complete"))


def _photos_in(package: PhotoPackage, folder: Path, names: tuple[str, ...]) -> list[Path]:
    photos = [folder / package.folder / name for name in names]
    missing = [str(p.relative_to(folder)) for p in photos if not p.is_file()]
    if missing:
        raise PhotosUnavailable(f"{package.package} in {folder} lacks {', '.join(missing)}")
    return photos


def _candidate_version(name: str) -> str:
    shown = _run("apt-cache", "show", "--no-all-versions", name)
    for line in shown.splitlines():
        if line.startswith("Version:"):
            return line.split(":", 1)[1].strip()
    raise PhotosUnavailable(f"apt-cache knows no version of {name} (run apt-get update)")


def _download_and_unpack(name: str, version: str, folder: Path) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent) as scratch:
        _run("apt-get", "download", f"{name}={version}", cwd=scratch)
        debs = list(Path(scratch).glob(f"{name}_*.deb"))
        if len(debs) != 1:
            raise PhotosUnavailable(f"apt-get download left {len(debs)} {name} packages")
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
    for photo in mate_nature_photos() + [p for group in plasma_photos() for p in group]:
        print(photo)
