"""EXIF Rating inside JPEG originals (opt-in, `--target exif`): the "exif" target.

The byte-level editor is aes_index.formats.exif_rating (only the EXIF block changes, pixels never).
EXIF has no "rejected", and RAW originals are never rewritten.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..formats import exif_rating
from .. import ownership
from ..errors import AesIndexError
from ..index.store import Index
from .protocol import ChangedSinceRead, Place, Reading, Target, UndoAction, UndoResult, Wanted, Write, check_inside, kept_manual, restored


@dataclass
class ExifTarget(Target):
    index: Index | None = field(default=None, repr=False)  # to record our own writes' size and mtime
    roots: tuple[str, ...] = ()  # the library's folders: no photo outside them is written
    name: str = "exif"
    rejects: bool = False

    def unsupported(self, photo_path: str, stars: int) -> str | None:
        if Path(photo_path).suffix.lower() not in exif_rating.JPEG_SUFFIXES:
            return "not-jpeg"  # EXIF ratings only in JPEG originals, never a RAW
        return super().unsupported(photo_path, stars)  # and EXIF has no reject

    def places(self, photo_path: str) -> list[Place]:
        return [Place(photo_path, photo_path)]

    def read(self, place: Place) -> Reading:
        check_inside(place.key, self.roots)
        rating, content_hash = exif_rating.read_exif_state(Path(place.key))
        return Reading(place, rating, token=content_hash)

    def write(self, reading: Reading, wanted: Wanted, dry_run: bool) -> Write | None:
        path = Path(reading.place.key)
        try:
            outcome = exif_rating.write_exif_rating(path, wanted.stars, dry_run=dry_run, expect_hash=reading.token)
        except exif_rating.ExifChanged as exc:
            raise ChangedSinceRead(str(exc)) from exc
        if not outcome.changed:
            return None
        if not dry_run:
            self._remember_own_write(path)
        return Write(
            target=self.name, place=str(path), image_path=str(path), old=outcome.prior, new=outcome.rating,
            content_hash_after=outcome.content_hash, prior={"layout": outcome.layout}, hash_before=reading.token,
        )

    def _remember_own_write(self, path: Path) -> None:
        """Our write changed the file's size and mtime: record them, so the next scan
        doesn't take our own write for a change (its fingerprint, the pixel tail, is the same)."""
        if self.index is not None:
            info = os.stat(path)
            self.index.images.update_stat(str(path), info.st_size, info.st_mtime_ns)

    def landed(self, action: UndoAction) -> bool | None:
        try:
            rating, content_hash = exif_rating.read_exif_state(action.target_path)
        except (AesIndexError, OSError):
            return True  # unreadable or gone since: keep ours recognisable
        if content_hash == action.hash_after:
            return True
        if content_hash == action.hash_before:
            return False
        return rating == action.new

    def undo(self, action: UndoAction, dry_run: bool) -> UndoResult:
        path = action.target_path
        check_inside(str(path), self.roots)
        if not path.exists():
            return UndoResult(action, "missing", "the photo is gone")
        current, content_hash = exif_rating.read_exif_state(path)
        if not ownership.still_ours(current, action.expected):
            return kept_manual(action, current)
        # The old layout comes back byte for byte only onto exactly the file we left:
        # anything another program changed since keeps its bytes (plain tag removal).
        layout = action.prior.get("layout") if content_hash == action.hash_after else None
        exif_rating.write_exif_rating(path, action.restore, dry_run=dry_run, expect_hash=content_hash, restore_layout=layout)
        if not dry_run:
            self._remember_own_write(path)
        return restored(action)
