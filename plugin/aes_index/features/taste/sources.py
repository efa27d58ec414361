"""Where a person's decisions are found, all read-only: the review page's decisions (the
journal), digiKam's database, darktable's library.db, XMP sidecars, EXIF.

Whose a value is, ownership.py decides, here as everywhere: each source reads a place
through its rating target and asks `ownership.read_state`; only a person's value counts
(`ownership.persons_choice`: their stars, their reject, their "accepted" pick label), never
ours, never one that counts as none (darktable's import 1 star always does: it is no
judgement). The first source that holds a photo's choice wins, in SOURCES order: a
decision made in the review page is the person's latest word we know of; digiKam's and
darktable's databases hold what those programs show; sidecars and EXIF come last.

Besides the choices, the same reads say where our stars still stand (`ours`): a photo the
person changed from our stars is compared with photos of its shoot whose stars of ours
they left (data.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ... import ownership
from ...errors import AesIndexError
from ...formats.exif_rating import JPEG_SUFFIXES
from ...targets.protocol import Place

DARKTABLE_UNRATED = (1,)  # darktable gives every imported image 1 star: no judgement
# The review page's runs (ownership.PERSONS_COMMANDS once that lands); read from the journal's rows
REVIEW_COMMANDS = ownership.PERSONS_COMMANDS


@dataclass(frozen=True)
class Choice:
    """A person's choice of one photo: -1 (rejected) .. 5 (a pick label "accepted" is 5),
    where it was found, and our stars it replaced (None: it replaced none of ours)."""

    image_id: int
    value: int
    source: str
    replaced: int | None = None


@dataclass
class Found:
    """What the sources hold: one choice per photo, our stars that still stand per photo,
    how many choices each source gave, and the places that could not be read."""

    choices: dict[int, Choice] = field(default_factory=dict)
    ours: dict[int, int] = field(default_factory=dict)
    by_source: dict[str, int] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Places:
    """Which photo managers' own databases to read besides the files (None: not used)."""

    darktable_library: Path | None = None
    digikam_db: Path | None = None
    unrated: tuple[int, ...] = ()  # ratings the person said count as none (--treat-as-unrated)


def places_from(settings, unrated: tuple[int, ...] = (), darktable_library: Path | None = None,
                digikam_db: Path | None = None) -> Places:
    """The places named on the command line, else in the settings (darktable_library,
    digikam_database); `unrated`: the person's --treat-as-unrated, parsed."""
    darktable = darktable_library or (Path(settings.darktable_library).expanduser() if settings.darktable_library else None)
    digikam = digikam_db or (Path(settings.digikam_database).expanduser() if settings.digikam_database else None)
    return Places(darktable, digikam, tuple(unrated))


# A source: (index, photos by path, places) -> (image id, PlaceState) for each place it read
Source = Callable[..., Iterator[tuple[int, "ownership.PlaceState"]]]


def review_states(index, by_path: dict[str, int], places: Places) -> Iterator[tuple[int, ownership.PlaceState]]:
    """The review page's decisions, from the journal's rows of its runs, where the place
    (a sidecar, a JPEG) still holds what the decision set (`ownership.still_ours`: a value
    changed since is read by the later sources, as whatever it is now)."""
    from ...targets.exif import ExifTarget
    from ...targets.sidecar import SidecarTarget

    roots = tuple(index.roots())
    targets = {"xmp": SidecarTarget(roots=roots), "exif": ExifTarget(roots=roots)}
    decided: dict[tuple[str, str], dict[str, int | None]] = {}
    for image_path, target, place, name, value in index.journal.decisions_by(REVIEW_COMMANDS):
        if target in targets and name in ("rating", "pick") and image_path in by_path:
            decided.setdefault((target, place), {"path": image_path})[name] = value
    for (target, key), values in decided.items():
        path = values.pop("path")
        reading = _read(targets[target], Place(key, path), None)
        if reading is None:
            continue
        now = {"rating": reading.value, "pick": reading.cull.pick}
        if all(ownership.still_ours(now[name], value) for name, value in values.items()):
            # the values the person set, as ownership weighs a person's (no value of ours in it)
            yield by_path[path], ownership.state({"rating": now["rating"], "pick": now["pick"]}, unrated=places.unrated)


def digikam_states(index, by_path: dict[str, int], places: Places) -> Iterator[tuple[int, ownership.PlaceState]]:
    """digiKam's ratings and pick labels, its database opened read-only."""
    if places.digikam_db is None:
        return
    from ...targets import digikam

    with digikam.reading(places.digikam_db) as target:
        for path, image_id in by_path.items():
            for place in target.places(path):
                reading = _read(target, place, None)
                if reading is not None:
                    yield image_id, ownership.read_state(index.journal, target.name, reading, places.unrated)


def darktable_states(index, by_path: dict[str, int], places: Places) -> Iterator[tuple[int, ownership.PlaceState]]:
    """darktable's stars and rejects from its library.db (read-only), every duplicate; its
    import default of 1 star counts as none."""
    if places.darktable_library is None:
        return
    from ...targets.darktable import DarktableTarget
    from ...targets.darktable_db import library_images

    images = [image for image in library_images(places.darktable_library) if image.path in by_path]
    target = DarktableTarget(images=images)
    unrated = tuple(sorted({*places.unrated, *DARKTABLE_UNRATED}))
    for image in images:
        reading = target.read(target.place_of(image))
        yield by_path[image.path], ownership.read_state(index.journal, target.name, reading, unrated)


def sidecar_states(index, by_path: dict[str, int], places: Places) -> Iterator[tuple[int, ownership.PlaceState]]:
    """xmp:Rating and digiKam's pick label of each photo's own sidecar."""
    from ...formats.xmp import sidecar_for
    from ...targets.sidecar import SidecarTarget

    # version 0's sidecar only (darktable's duplicates are read from its library.db): not
    # SidecarTarget.places, which lists the folder for duplicates' sidecars, photo by photo
    own = lambda path: Place(str(sidecar_for(Path(path))), path)  # noqa: E731
    with_sidecar = [(path, i) for path, i in by_path.items() if os.path.exists(own(path).key)]  # none: nothing in it
    yield from _file_states(index, with_sidecar, SidecarTarget(roots=tuple(index.roots())), places, own)


def exif_states(index, by_path: dict[str, int], places: Places) -> Iterator[tuple[int, ownership.PlaceState]]:
    """The EXIF Rating of JPEGs (digiKam and Windows write it)."""
    from ...targets.exif import ExifTarget

    jpegs = [(path, i) for path, i in by_path.items() if Path(path).suffix.lower() in JPEG_SUFFIXES]
    yield from _file_states(index, jpegs, ExifTarget(roots=tuple(index.roots())), places)


def _file_states(index, photos: Iterable[tuple[str, int]], target, places: Places, place_of=None):
    for path, image_id in photos:
        place = place_of(path) if place_of else target.places(path)[0]  # the JPEG itself
        reading = _read(target, place, None)
        if reading is None:
            continue
        held = ownership.state({"rating": reading.value, "pick": reading.cull.pick}, unrated=places.unrated)
        if held.owner("rating") is ownership.Owner.NOBODY and held.owner("pick") is ownership.Owner.NOBODY:
            continue  # nobody's whatever the journal says: most photos of a library, read without its queries
        yield image_id, ownership.read_state(index.journal, target.name, reading, places.unrated)


def _read(target, place: Place, default):
    try:
        return target.read(place)
    except (AesIndexError, OSError):  # a file we refuse to parse, or one gone: no decision
        return default


SOURCES: dict[str, Source] = {
    "review": review_states, "digikam": digikam_states, "darktable": darktable_states,
    "xmp": sidecar_states, "exif": exif_states,
}


def find_choices(index, photos: Sequence[tuple[int, str]], places: Places, progress=None) -> Found:
    """Every person's choice the sources hold for these (image id, path) photos, one per
    photo (the first source in SOURCES order that has one; of one source's places of a
    photo, darktable's duplicates, the strongest: ownership.best_choice)."""
    by_path = {path: image_id for image_id, path in photos}
    found = Found()
    for name, source in SOURCES.items():
        pending = {path: i for path, i in by_path.items() if i not in found.choices}
        values: dict[int, list[int]] = {}
        replaced: dict[int, int] = {}
        for image_id, state in source(index, pending, places):
            choice = ownership.persons_choice(state)
            if choice is not None:
                values.setdefault(image_id, []).append(choice)
                if state.owner("rating") is ownership.Owner.PERSON and state.last.get("rating") is not None:
                    replaced.setdefault(image_id, state.last["rating"])  # they changed our stars
            elif state.owner("rating") is ownership.Owner.OURS:
                found.ours.setdefault(image_id, state.value("rating"))
        for image_id, chosen in values.items():
            found.choices[image_id] = Choice(image_id, ownership.best_choice(chosen), name, replaced.get(image_id))
        found.by_source[name] = len(values)
        if progress is not None:
            progress(name)
    for image_id in found.choices:
        found.ours.pop(image_id, None)  # a photo the person decided is no longer one where ours stand
    return found
