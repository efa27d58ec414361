"""Opt-in star ratings inside JPEG originals: EXIF 0x4746 Rating and 0x4749 RatingPercent.

digiKam (and Windows Explorer) read these when a photo has no XMP rating. We write both,
because some readers only look at one: Rating holds 0-5 stars, RatingPercent the value
Windows Explorer writes for that many stars (`PERCENT_FOR_STARS`: 1 -> 1, 2 -> 25,
3 -> 50, 4 -> 75, 5 -> 99). EXIF has no "rejected", so -1 is refused.

Only JPEG files are touched (extension and magic bytes both checked), never RAWs, whose
EXIF layouts are vendor-specific. The edit moves nothing that is already there:

- when the Rating entries exist, their values are patched in place;
- otherwise a copy of IFD0 with the two entries added is appended at the end of the EXIF
  block and the TIFF header is pointed at it. Every other offset (Exif sub-IFD, GPS,
  thumbnail, and maker notes, which often hold absolute offsets) stays valid. (A full
  re-serialisation with `piexif.dump` + `piexif.insert` moves the maker note and breaks
  Canon's, and drops the JFIF APP0 segment, so it is not used on existing EXIF.)
- a JPEG without EXIF gets a fresh EXIF segment made by piexif, after SOI and any APP0.

The entropy-coded image data is never touched, so decoded pixels are identical. Writes
are atomic (`aes_index.atomic`).
"""

from __future__ import annotations

import bisect
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import piexif

from aes_index.atomic import atomic_write_bytes, sha256_hex
from aes_index.errors import AesIndexError, ExitCode

RATING_TAG = 0x4746
RATING_PERCENT_TAG = 0x4749
PERCENT_FOR_STARS = {0: 0, 1: 1, 2: 25, 3: 50, 4: 75, 5: 99}
_PERCENT_STEPS = (13, 38, 63, 88)  # where Windows moves to the next star
JPEG_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".jfif"})

_EXIF_HEADER = b"Exif\x00\x00"
_SHORT = 3
_MAX_SEGMENT_PAYLOAD = 0xFFFF - 2


class ExifRatingError(AesIndexError):
    """A file whose EXIF rating we refuse to write. Recorded per file."""

    exit_code = ExitCode.FILE_ERRORS


class NotAJpeg(ExifRatingError):
    """EXIF ratings are written into JPEG originals only (never RAW or other formats)."""


@dataclass(frozen=True)
class ExifWriteOutcome:
    """What `write_exif_rating` did (or would do, in a dry run)."""

    path: Path
    changed: bool
    prior: int | None  # the Rating before (None: absent)
    rating: int | None  # the Rating now
    content_hash: str  # sha256 of the resulting file
    # Where IFD0 sat before ({"ifd0": offset, "length": TIFF block length}), or
    # {"created": True} when the file had no EXIF: undo puts that layout back exactly.
    layout: dict | None = None


def read_exif_rating(path: Path) -> int | None:
    """The JPEG's EXIF star rating: Rating, else stars derived from RatingPercent, else None.

    Raises NotAJpeg for other files and ExifRatingError for a damaged EXIF block.
    """
    return read_exif_state(path)[0]


def read_exif_state(path: Path) -> tuple[int | None, str]:
    """The rating (as `read_exif_rating`) and the sha256 of the bytes it was read from,
    which `write_exif_rating(expect_hash=...)` checks before it writes."""
    path = Path(path)
    data = _read_jpeg(path)
    segment = _find_exif_segment(data, path)
    if segment is None:
        return None, sha256_hex(data)
    ifd0 = _Ifd0.parse(data[segment.payload_start : segment.end], path)
    return ifd0.rating(), sha256_hex(data)


class ExifChanged(ExifRatingError):
    """The JPEG is not what the decision to write it was made on."""


def write_exif_rating(
    path: Path, rating: int | None, *, dry_run: bool = False, expect_hash: str | None = None,
    restore_layout: dict | None = None,
) -> ExifWriteOutcome:
    """Set the JPEG's EXIF Rating and RatingPercent to `rating` (0-5); None removes both.

    Only the EXIF block changes; the file is rewritten atomically and only if its bytes
    change. Raises NotAJpeg for anything but a JPEG, ExifRatingError for damaged EXIF,
    ExifChanged when `expect_hash` (the read a decision was made on) no longer matches.
    restore_layout (with rating None: an undo): the `layout` an earlier write reported;
    where the block still is what that write left, the old bytes come back exactly
    (the segment we created goes, the IFD0 copy we appended is cut off).
    """
    path = Path(path)
    if rating is not None and rating not in PERCENT_FOR_STARS:
        raise ValueError(f"EXIF ratings are 0-5 (no reject), not {rating!r}")
    data = _read_jpeg(path)
    if expect_hash is not None and sha256_hex(data) != expect_hash:
        raise ExifChanged(f"{path}: changed since it was read (by a person?); left as it is")
    segment = _find_exif_segment(data, path)
    if segment is None:
        prior, result, layout = None, _with_new_exif(data, rating, path), {"created": True}
    else:
        tiff = data[segment.payload_start : segment.end]
        ifd0 = _Ifd0.parse(tiff, path)
        prior, layout = ifd0.rating(), {"ifd0": ifd0.offset, "length": len(tiff)}
        new_tiff = ifd0.with_rating(rating)
        if rating is None and restore_layout:
            old = _layout_restored(ifd0, restore_layout, path)
            if old is not None:
                new_tiff = old
        if rating is None and new_tiff == b"":
            result = data[: segment.start] + data[segment.end :]
        else:
            result = _replace_segment_payload(data, segment, new_tiff, path)
    changed = result != data
    if changed and not dry_run:
        try:
            # Through a symlink to its target (the rating targets check it stays inside
            # the library): replacing the link itself would leave the photo unrated.
            atomic_write_bytes(Path(os.path.realpath(path)), result)
        except OSError as err:
            message = f"{path}: cannot write it ({err.strerror or err}); rating not written."
            raise ExifRatingError(message) from err
    return ExifWriteOutcome(path, changed, prior, rating, sha256_hex(result), layout)


def _layout_restored(ifd0: "_Ifd0", layout: dict, path: Path) -> bytes | None:
    """The TIFF block as it was before our write, if nothing but our tags changed since
    (b"": the segment was ours alone); None when it can't be put back exactly."""
    others = [e for e in ifd0.entries if e.tag not in _OUR_TAGS]
    if layout.get("created"):
        return b"" if not others else None
    offset, length = layout.get("ifd0"), layout.get("length")
    if not isinstance(offset, int) or not isinstance(length, int) or not 8 <= length <= len(ifd0.tiff):
        return None
    old = ifd0.tiff[:4] + struct.pack(ifd0.order + "I", offset) + ifd0.tiff[8:length]
    try:
        before = _Ifd0.parse(old, path)
    except ExifRatingError:
        return None
    same = before.entries == others and before.next_ifd == ifd0.next_ifd
    return old if same else None


def stars_from_percent(percent: int) -> int:
    """Windows Explorer's reading of RatingPercent: 1-12 -> 1, 13-37 -> 2, 38-62 -> 3,
    63-87 -> 4, 88 and up -> 5 stars; 0 is unrated."""
    if percent <= 0:
        return 0
    return 1 + bisect.bisect_right(_PERCENT_STEPS, percent)


# --------------------------------------------------------------------------- JPEG segments


@dataclass(frozen=True)
class _Segment:
    start: int  # the 0xFF of the marker
    payload_start: int  # after "Exif\0\0": where the TIFF block begins
    end: int


def _read_jpeg(path: Path) -> bytes:
    if path.suffix.lower() not in JPEG_SUFFIXES:
        kind = path.suffix or "a file without extension"
        raise NotAJpeg(f"{path}: EXIF ratings are only written into JPEG files, not {kind}.")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ExifRatingError(f"{path}: cannot read it ({err.strerror}).") from None
    if not data.startswith(b"\xff\xd8\xff"):
        raise NotAJpeg(
            f"{path}: not a JPEG file (its content says otherwise), EXIF rating not written."
        )
    return data


def _segments(data: bytes, path: Path):
    """(marker, start, payload_start, end) of each header segment, up to the image data."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise ExifRatingError(f"{path}: damaged JPEG header at byte {pos}.")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xDA or marker == 0xD9:  # start of scan / end of image
            return
        length = struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        if length < 2 or pos + 2 + length > len(data):
            raise ExifRatingError(f"{path}: damaged JPEG segment at byte {pos}.")
        yield marker, pos, pos + 4, pos + 2 + length
        pos += 2 + length


def _find_exif_segment(data: bytes, path: Path) -> _Segment | None:
    for marker, start, payload, end in _segments(data, path):
        if marker == 0xE1 and data[payload : payload + 6] == _EXIF_HEADER:
            return _Segment(start, payload + 6, end)
    return None


def _replace_segment_payload(data: bytes, segment: _Segment, tiff: bytes, path: Path) -> bytes:
    payload = _EXIF_HEADER + tiff
    if len(payload) > _MAX_SEGMENT_PAYLOAD:
        raise ExifRatingError(f"{path}: its EXIF block is full (64 KiB); rating not written.")
    header = b"\xff\xe1" + struct.pack(">H", len(payload) + 2)
    return data[: segment.start] + header + payload + data[segment.end :]


def _with_new_exif(data: bytes, rating: int | None, path: Path) -> bytes:
    """`data` with a fresh EXIF segment holding only the rating (none to write: as is)."""
    if rating is None:
        return data
    exif = piexif.dump({"0th": _rating_values(rating)})
    segment = b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif
    insert_at = 2
    for marker, _start, _payload, end in _segments(data, path):
        if marker != 0xE0:  # JFIF/JFXX APP0 must stay first after SOI
            break
        insert_at = end
    return data[:insert_at] + segment + data[insert_at:]


# --------------------------------------------------------------------------- TIFF IFD0

_OUR_TAGS = frozenset({RATING_TAG, RATING_PERCENT_TAG})


def _rating_values(rating: int | None) -> dict[int, int]:
    """Tag -> value for a rating; empty for None (no rating)."""
    if rating is None:
        return {}
    return {RATING_TAG: rating, RATING_PERCENT_TAG: PERCENT_FOR_STARS[rating]}


@dataclass(frozen=True)
class _Entry:
    tag: int
    type: int
    count: int
    value: bytes  # the raw 4-byte value/offset field


class _Ifd0:
    """IFD0 of a TIFF block: its entries and where it sits, enough to add or patch one."""

    def __init__(self, tiff: bytes, order: str, offset: int, entries: list[_Entry], next_ifd: int):
        self.tiff, self.order, self.offset = tiff, order, offset
        self.entries, self.next_ifd = entries, next_ifd

    @classmethod
    def parse(cls, tiff: bytes, path: Path) -> _Ifd0:
        try:
            order = {b"II": "<", b"MM": ">"}[tiff[:2]]
            magic, offset = struct.unpack(order + "HI", tiff[2:8])
            (count,) = struct.unpack(order + "H", tiff[offset : offset + 2])
            entries = [
                _Entry(*struct.unpack(order + "HHI", tiff[pos : pos + 8]), tiff[pos + 8 : pos + 12])
                for pos in range(offset + 2, offset + 2 + 12 * count, 12)
            ]
            (next_ifd,) = struct.unpack(
                order + "I", tiff[offset + 2 + 12 * count : offset + 6 + 12 * count]
            )
        except (KeyError, struct.error):
            raise ExifRatingError(f"{path}: damaged EXIF block; rating not touched.") from None
        if magic != 42 or any(len(e.value) != 4 for e in entries):
            raise ExifRatingError(f"{path}: damaged EXIF block; rating not touched.")
        return cls(tiff, order, offset, entries, next_ifd)

    def _value(self, tag: int) -> int | None:
        entry = next((e for e in self.entries if e.tag == tag), None)
        if entry is None or entry.count != 1 or entry.type not in (1, 3, 4):
            return None
        fmt = {1: "B", 3: "H", 4: "I"}[entry.type]
        return struct.unpack(self.order + fmt, entry.value[: struct.calcsize(fmt)])[0]

    def rating(self) -> int | None:
        stars = self._value(RATING_TAG)
        if stars is not None:
            return min(stars, 5)
        percent = self._value(RATING_PERCENT_TAG)
        return None if percent is None else stars_from_percent(percent)

    def with_rating(self, rating: int | None) -> bytes:
        """The TIFF block with the rating entries set (or removed, for None)."""
        wanted = _rating_values(rating)
        present = {
            e.tag for e in self.entries if e.tag in _OUR_TAGS and (e.type, e.count) == (_SHORT, 1)
        }
        if wanted and present == _OUR_TAGS:
            return self._patched_in_place(wanted)  # same layout, two values changed
        entries = [e for e in self.entries if e.tag not in _OUR_TAGS]
        entries += [_Entry(tag, _SHORT, 1, self._short_field(v)) for tag, v in wanted.items()]
        if len(entries) == len(self.entries) and not wanted:
            return self.tiff  # nothing of ours to remove
        return self._with_ifd0_appended(sorted(entries, key=lambda e: e.tag))

    def _short_field(self, value: int) -> bytes:
        return struct.pack(self.order + "H", value) + b"\x00\x00"

    def _patched_in_place(self, wanted: dict[int, int]) -> bytes:
        tiff = bytearray(self.tiff)
        for index, entry in enumerate(self.entries):
            if entry.tag in wanted:
                field_at = self.offset + 2 + 12 * index + 8
                tiff[field_at : field_at + 4] = self._short_field(wanted[entry.tag])
        return bytes(tiff)

    def _with_ifd0_appended(self, entries: list[_Entry]) -> bytes:
        """Write IFD0 anew at the end of the block, so nothing else has to move.

        If IFD0 already is the last thing in the block (we put it there last time), it is
        overwritten instead, so repeated writes don't grow the file.
        """
        old_end = self.offset + 6 + 12 * len(self.entries)
        base = self.tiff[: self.offset] if old_end == len(self.tiff) else self.tiff
        base += b"\x00" * (len(base) % 2)  # IFDs start on a word boundary
        new_offset = len(base)
        ifd = struct.pack(self.order + "H", len(entries))
        ifd += b"".join(
            struct.pack(self.order + "HHI", e.tag, e.type, e.count) + e.value for e in entries
        )
        ifd += struct.pack(self.order + "I", self.next_ifd)
        header = self.tiff[:4] + struct.pack(self.order + "I", new_offset)
        return header + base[8:] + ifd
