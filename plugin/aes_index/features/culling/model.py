"""What culling produces, as every reader (CLI, gallery, darktable, digiKam, XMP) sees it."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ...values import BLURRY, FLAGS, OVEREXPOSED, UNDEREXPOSED  # noqa: F401 - culling's vocabulary, named here too

BURST, DUPLICATE, BRACKET = "burst", "duplicate", "bracket"
PAIR = "pair"  # the files of one capture (a RAW and the camera's JPEG beside it): one photo, no group to cull
BY_US, BY_YOU = "aes-index", "you"  # who chose a group's keeper


@dataclass(frozen=True)
class Member:
    """One photo of a group (or a flagged single), with the facts its keeper rule used."""

    image_id: int
    path: str
    score: float | None  # the aesthetic score of the active head
    sharpness: float | None
    clipped_highlights: float | None  # share of pixels at white, 0..1
    clipped_shadows: float | None  # share of pixels at black, 0..1
    taken_at: str | None  # capture time, ISO 8601 (fraction and offset where the camera gave them)
    flags: tuple[str, ...] = ()  # among FLAGS
    brightest: float | None = None  # luminance of its brightest 1 %, 0..1
    short_side: int | None = None  # the file's short side in pixels (a web copy is small)
    # Which copy of a picture this file is (keeper.py's order of copies):
    pixels: int | None = None  # width x height of the file
    encoding: str | None = None  # facts.RAW, LOSSLESS, JPEG or LOSSY
    quality: int | None = None  # a JPEG's quality, estimated from its quantisation tables
    camera_file: bool = False  # written by a camera (its EXIF, no editor's name), not an export
    frame: int | None = None  # in a burst: the frame it is a copy of (grouping.frames_of), None: its own
    exposure_bias: float | None = None  # EXIF exposure compensation, EV (a bracket steps it)
    edge_width: float | None = None  # blur of its crispest edges, px at the analysis scale (facts.edge_width)
    blown_highlights: float | None = None  # share of the frame in large clipped areas (sky, wall, face), 0..1
    clipped_channel: float | None = None  # share of pixels with any channel at white (a colour blown out), 0..1

    def as_dict(self) -> dict:
        data = asdict(self)
        data["flags"] = list(self.flags)
        return data


@dataclass(frozen=True)
class Group:
    """A burst or a set of near-duplicates: members with the keeper first."""

    id: int
    kind: str  # BURST, BRACKET, DUPLICATE (or PAIR: stored, never shown as a group)
    members: tuple[Member, ...]  # keeper first, then by capture time, then path
    keeper_id: int
    reason: str  # the keeper rule's reason in words: "sharpest of 7, best score"
    chosen_by: str  # BY_US, or BY_YOU when a person's pick or rating decided

    @property
    def keeper(self) -> Member:
        return self.members[0]

    def as_dict(self) -> dict:
        return {
            "id": self.id, "kind": self.kind, "size": len(self.members), "keeper": self.keeper.path,
            "keeper_id": self.keeper_id, "reason": self.reason, "chosen_by": self.chosen_by,
            "members": [m.as_dict() for m in self.members],
        }
