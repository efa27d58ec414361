"""XMP sidecars: find them, read our fields, and change only the fields we own.

A darktable sidecar holds the user's entire edit history (history stack, masks, hashes), so
this module never re-serialises a sidecar. It parses the file with defusedxml (no DTD, no
entities, nothing fetched) only to learn *where* things are, then edits the original bytes
at those places. Every byte outside the fields we own survives unchanged.

Fields we own:

- ``xmp:Rating`` (``http://ns.adobe.com/xap/1.0/``): -1 (darktable's reject) .. 5. Read and
  written where it is: as an attribute of ``rdf:Description`` (darktable, Exiv2) or as an
  element ``<xmp:Rating>3</xmp:Rating>`` (Adobe, ExifTool). The prefix is whatever the file
  binds to the namespace (old Adobe files use ``xap:``).
- Our namespace ``AES_NS`` (prefix ``aes``): ``aes:Score``, ``aes:Percentile``,
  ``aes:Head``, ``aes:Stars`` (see `AesFields`).
- digiKam's pick label ``digiKam:PickLabel`` (``DIGIKAM_NS``), as digiKam itself writes it:
  the text of an integer, 0 none, 1 rejected, 2 pending, 3 accepted (digiKam's
  DMetadata::setItemPickLabel and its PickLabel enum; see targets/digikam.py for the
  citations). Culling sets 3 on keepers and, only when asked, 1 on technical failures.
- Our culling markers ``aes:Pick`` and ``aes:Reject`` (`CullMarks`): the pick label we set,
  and "-1" when the xmp:Rating -1 is our reject. A pick label or reject equal to its
  marker is ours wherever the photo moves (as aes:Stars marks our stars); any other
  value was set by a person and is never overridden.
- Our tags, below the root ``TAG_ROOT`` ("Aesthetic"), in up to three list properties:
  ``lr:hierarchicalSubject`` ("Aesthetic|4 stars"), ``digiKam:TagsList``
  ("Aesthetic/4 stars") and ``dc:subject`` ("Aesthetic|4 stars": dc:subject is a flat
  keyword list, the full path keeps our entries recognisable). An entry is ours when it
  starts with the root and the field's separator; other entries are never touched.

New fields go into the first top-level ``rdf:Description`` (the one with ``rdf:about=""``
when there is one); namespace declarations we need are added to it when no prefix in scope
binds the namespace already.

Sidecar names (`sidecar_for`, `duplicate_sidecars`, `rating_sidecars`): darktable and
digiKam use ``IMG_1.CR2.xmp``; digiKam can use ``IMG_1.xmp`` (Lightroom style), which is
then shared by every file named ``IMG_1.*`` (a RAW+JPEG pair). darktable names the sidecar
of version N>0 of a photo ``IMG_1_NN.CR2.xmp``; each version is a separate darktable image
with its own rating, so we rate every existing version's sidecar the same way as version 0
(each one passes the manual-ratings-win rule on its own). We never create a duplicate's
sidecar: only darktable creates versions.

Writes are atomic (`aes_index.atomic`); a file whose bytes would not change is not
rewritten (its mtime stays).

What darktable 4.2 does with a sidecar we wrote (tests/test_readers.py): on import it
reads xmp:Rating and lr:hierarchicalSubject, then rewrites the whole sidecar from its
database. It keeps foreign properties (our aes:* fields, digiKam:TagsList) but rebuilds
dc:subject as flat components ("Aesthetic", "4 stars"); those stay recognisable as ours
through our lr:hierarchicalSubject entries (`_our_flat_keywords`), so a star change or an
undo replaces or removes them too.
"""

from __future__ import annotations

import enum
import os
import re
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import defusedxml.ElementTree as defused_et
from defusedxml.common import DefusedXmlException

from aes_index.atomic import atomic_write_bytes, sha256_hex
from aes_index.errors import SidecarError
from aes_index.values import NO_PICK, PICK_ACCEPTED, PICK_PENDING, PICK_REJECTED  # noqa: F401 - the pick labels' names, used here and re-exported

RDF_NS = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
XMP_NS = "http://ns.adobe.com/xap/1.0/"
AES_NS = "http://aes-index.org/ns/1.0/"
LR_NS = "http://ns.adobe.com/lightroom/1.0/"
DIGIKAM_NS = "http://www.digikam.org/ns/1.0/"
DC_NS = "http://purl.org/dc/elements/1.1/"
XML_NS = "http://www.w3.org/XML/1998/namespace"

# darktable sidecars with many drawn masks reach a few MB; anything far beyond that is not
# a sidecar we should hold in memory and edit.
MAX_SIDECAR_BYTES = 16 * 1024 * 1024

# Our span bookkeeping costs memory per element; real sidecars hold tens of thousands.
MAX_ELEMENTS = 200_000

TAG_ROOT = "Aesthetic"
MIN_RATING, MAX_RATING = -1, 5


class Keep(enum.Enum):
    """Sentinel type: leave this field as it is."""

    KEEP = "keep"


KEEP = Keep.KEEP


@dataclass(frozen=True)
class TagField:
    """One list property that carries hierarchical tags."""

    key: str
    ns: str
    local: str
    prefix: str  # the prefix we declare when the file has none for `ns`
    separator: str  # hierarchy separator inside this property's entries
    container: str  # rdf:Bag or rdf:Seq when we create the property
    creates: bool = True  # False: only a property the file already has gets our entries

    def entry(self, tag: str) -> str:
        """Our relative tag "a|b" as this property writes it, e.g. "Aesthetic/a/b"."""
        return self.separator.join([TAG_ROOT, *tag.split("|")])

    def relative_tag(self, entry: str) -> str | None:
        """The relative tag of one of our entries, or None when the entry isn't ours."""
        head = TAG_ROOT + self.separator
        if not entry.startswith(head) or len(entry) == len(head):
            return None
        return "|".join(entry[len(head) :].split(self.separator))


TAG_FIELDS: dict[str, TagField] = {
    "lr": TagField("lr", LR_NS, "hierarchicalSubject", "lr", "|", "Bag"),
    # digiKam reads digiKam:TagsList first and then nothing else: a TagsList we created
    # beside a darktable sidecar's lr:hierarchicalSubject would hide every tag of the
    # user's from digiKam. Where there is none, digiKam reads lr:hierarchicalSubject.
    "digikam": TagField("digikam", DIGIKAM_NS, "TagsList", "digiKam", "/", "Seq", creates=False),
    "dc": TagField("dc", DC_NS, "subject", "dc", "|", "Bag"),
}
DEFAULT_TAG_FIELDS = ("lr", "digikam", "dc")


@dataclass(frozen=True)
class AesFields:
    """Our namespace's fields in a sidecar.

    score: the head's score; percentile: 0-100, the photo's rank in its library;
    head_id: which head scored it; stars: the stars our policy gave (may differ from
    xmp:Rating when a manual rating won).
    """

    score: float
    percentile: float | None = None
    head_id: str | None = None
    stars: int | None = None

    def to_xmp(self) -> dict[str, str]:
        """Property name -> text, for the fields that are set."""
        values = {
            "Score": f"{self.score:.6g}",
            "Percentile": None if self.percentile is None else f"{self.percentile:.2f}",
            "Head": self.head_id,
            "Stars": None if self.stars is None else str(int(self.stars)),
        }
        return {name: text for name, text in values.items() if text is not None}

    @classmethod
    def from_xmp(cls, values: dict[str, str]) -> AesFields | None:
        """Parse what `to_xmp` wrote; None when there is no score or it isn't a number."""
        try:
            score = float(values["Score"])
        except (KeyError, ValueError):
            return None
        return cls(
            score=score,
            percentile=_float_or_none(values.get("Percentile")),
            head_id=values.get("Head"),
            stars=_int_or_none(values.get("Stars")),
        )


AES_PROPERTIES = ("Score", "Percentile", "Head", "Stars")

# digiKam's pick labels (digikam_globals.h, enum PickLabel), the values of digiKam:PickLabel:
# values.NO_PICK .. values.PICK_ACCEPTED


@dataclass(frozen=True)
class CullMarks:
    """Our markers of culling values we wrote: `pick` is the digiKam:PickLabel we set,
    `reject` that the xmp:Rating -1 is ours. Stored as aes:Pick and aes:Reject."""

    pick: int | None = None
    reject: bool = False

    def to_xmp(self) -> dict[str, str]:
        values = {"Pick": None if self.pick is None else str(int(self.pick)), "Reject": "-1" if self.reject else None}
        return {name: text for name, text in values.items() if text is not None}

    @classmethod
    def from_xmp(cls, values: dict[str, str]) -> CullMarks | None:
        marks = cls(pick=_int_or_none(values.get("Pick")), reject=values.get("Reject") == "-1")
        return None if marks == cls() else marks


MARK_PROPERTIES = ("Pick", "Reject")


@dataclass(frozen=True)
class SidecarInfo:
    """What a sidecar says about the fields we care about."""

    path: Path
    exists: bool
    rating: int | None = None  # xmp:Rating; None when absent
    aes: AesFields | None = None
    tags: tuple[str, ...] = ()  # our tags, relative to TAG_ROOT, "|"-separated
    content_hash: str | None = None  # sha256 of the bytes read
    pick: int | None = None  # digiKam:PickLabel; None when absent (or not a pick label)
    marks: CullMarks | None = None  # our culling markers (aes:Pick, aes:Reject)
    holds_nothing: bool = False  # a bare skeleton: no property of anyone's is left in it

    @property
    def our_rating(self) -> int | None:
        """The rating, when the sidecar itself says we wrote it (aes:Stars equals
        xmp:Rating): ours wherever the photo has moved, whatever index reads it."""
        return self.rating if self.aes is not None and self.aes.stars == self.rating else None

    @property
    def our_pick(self) -> int | None:
        """The pick label, when our marker says we set it (aes:Pick equals it)."""
        return self.pick if self.marks is not None and self.marks.pick == self.pick else None

    @property
    def our_reject(self) -> bool:
        """Whether the xmp:Rating -1 is our culling reject (aes:Reject)."""
        return self.rating == -1 and self.marks is not None and self.marks.reject


@dataclass(frozen=True)
class WriteOutcome:
    """What `write_sidecar` did (or would do, in a dry run)."""

    path: Path
    created: bool  # there was no sidecar; we made one
    changed: bool  # the bytes on disk changed (or would)
    prior: SidecarInfo  # the state before, for the undo journal
    after: SidecarInfo
    content_hash: str | None  # sha256 of the resulting file; None if there is none
    touched: frozenset[str] = frozenset()  # which of "rating", "aes", "tags", "pick", "marks" were set
    tag_fields: tuple[str, ...] = ()  # the tag fields written, when "tags" was touched
    declared: tuple[str, ...] = ()  # namespaces this write declared in an existing file

    @property
    def changes(self) -> list[str]:
        """One short line per changed field, e.g. "xmp:Rating 1 -> 4"."""
        return _describe_changes(self.prior, self.after)


class SidecarChanged(SidecarError):
    """The sidecar is not what the decision to write it was made on."""


# --------------------------------------------------------------------------- file names


def sidecar_for(image_path: Path) -> Path:
    """The sidecar to use for version 0 of `image_path`.

    ``IMG_1.CR2.xmp`` when it exists, else ``IMG_1.xmp`` when that exists (Lightroom /
    digiKam style), else ``IMG_1.CR2.xmp`` (the name both darktable and digiKam read).
    """
    image_path = Path(image_path)
    default = image_path.with_name(image_path.name + ".xmp")
    if default.exists():
        return default
    lightroom_style = image_path.with_name(image_path.stem + ".xmp")
    if image_path.suffix and lightroom_style.exists():
        return lightroom_style
    return default


def duplicate_sidecars(image_path: Path) -> list[Path]:
    """Existing sidecars of darktable duplicates (``IMG_1_01.CR2.xmp``...), by version.

    A name that matches but belongs to a real file (a photo actually called
    ``IMG_1_01.CR2``) is that photo's own sidecar, not a duplicate, and is left out.
    """
    image_path = Path(image_path)
    pattern = re.compile(
        re.escape(image_path.stem) + r"_(\d+)" + re.escape(image_path.suffix) + r"\.xmp\Z"
    )
    found = []
    try:
        names = os.listdir(image_path.parent)
    except OSError:
        return []
    for name in names:
        match = pattern.match(name)
        if not match or int(match.group(1)) == 0:
            continue
        own_image = image_path.with_name(name[: -len(".xmp")])
        if not own_image.exists():
            found.append((int(match.group(1)), image_path.with_name(name)))
    return [path for _, path in sorted(found)]


def rating_sidecars(image_path: Path) -> list[Path]:
    """Every sidecar a rating of `image_path` goes to: version 0's, then its duplicates'."""
    return [sidecar_for(image_path), *duplicate_sidecars(image_path)]


# --------------------------------------------------------------------------- read / write


def read_sidecar(path: Path) -> SidecarInfo:
    """Our fields as the sidecar holds them; an empty `SidecarInfo` when there is none.

    Raises SidecarError for a file we refuse (too large, DTD/entities, malformed).
    """
    path = Path(path)
    data = _read_limited(path)
    if data is None:
        return SidecarInfo(path=path, exists=False)
    return _info(_parse(data, path), path)


def write_sidecar(
    path: Path,
    *,
    rating: int | Keep | None = KEEP,
    aes: AesFields | Keep | None = KEEP,
    tags: Sequence[str] | None = None,
    tag_fields: Iterable[str] = DEFAULT_TAG_FIELDS,
    dry_run: bool = False,
    expect_hash: str | None | Keep = KEEP,
    undeclare: Iterable[str] = (),
    pick: int | Keep | None = KEEP,
    marks: CullMarks | Keep | None = KEEP,
) -> WriteOutcome:
    """Set our fields in the sidecar at `path`, creating a minimal one when there is none.

    rating: 0..5 or -1 (reject) sets xmp:Rating; None removes it; KEEP leaves it.
    aes: sets our namespace's fields; None removes them; KEEP leaves them.
    pick: 0..3 sets digiKam:PickLabel; None removes it; KEEP leaves it.
    marks: sets our culling markers (aes:Pick, aes:Reject); None removes them; KEEP leaves them.
    tags: our tags relative to TAG_ROOT ("4 stars", "a|b"); our entries in `tag_fields`
    become exactly these (an empty list removes ours); None leaves tags alone.
    Everything else in the file keeps its bytes. With dry_run nothing is written.
    expect_hash: the content hash of the read a decision was made on (None: there was no
    file); when the file no longer matches it, SidecarChanged is raised and nothing written.
    Raises SidecarError (file untouched) for a sidecar we refuse to edit.
    """
    path = Path(path)
    _check_rating(rating)
    _check_pick(pick)
    tags, fields = _checked_tags(tags, tag_fields)
    values = {"rating": rating, "aes": aes, "pick": pick, "marks": marks}
    touched = frozenset(name for name, value in values.items() if value is not KEEP) | ({"tags"} if tags is not None else set())
    tag_keys = tuple(f.key for f in fields) if tags is not None else ()

    original = _read_limited(path)
    if expect_hash is not KEEP and (None if original is None else sha256_hex(original)) != expect_hash:
        raise SidecarChanged(f"{path}: changed since it was read (by a person?); left as it is")
    if original is None and not _sets_anything(rating, aes, tags, pick, marks):
        nothing = SidecarInfo(path=path, exists=False)
        return WriteOutcome(path, False, False, nothing, nothing, None, touched, tag_keys)
    doc = _parse(original if original is not None else _new_packet(), path)
    result, declared = _edited(doc, path, values, tags, fields, tuple(undeclare))
    result_doc = _parse(result, path)
    _check_read_back(result_doc, values, tags, fields, path)

    changed = result != original
    if changed and not dry_run:
        try:
            atomic_write_bytes(_real_path(path), result)
        except OSError as err:
            raise _refusal(path, f"cannot write it ({err.strerror or err})") from err
    after = _info(result_doc, path)
    return WriteOutcome(
        path=path,
        created=original is None,
        changed=changed,
        prior=_info(doc, path) if original is not None else SidecarInfo(path, exists=False),
        after=after,
        content_hash=after.content_hash,
        touched=touched,
        tag_fields=tag_keys,
        declared=declared if original is not None else (),
    )


def _edited(doc, path, values: dict, tags, fields, undeclare=()) -> tuple[bytes, tuple[str, ...]]:
    """The document's bytes with the requested fields set (`values`: rating, aes, pick,
    marks; KEEP leaves one alone), everything else as it was; and the namespaces this
    edit declared."""
    editor = _Editor(doc, path)
    if values["rating"] is not KEEP:
        editor.set_rating(values["rating"])
    if values["aes"] is not KEEP:
        editor.set_aes(values["aes"])
    if values["pick"] is not KEEP:
        editor.set_pick(values["pick"])
    if values["marks"] is not KEEP:
        editor.set_marks(values["marks"])
    for tag_field in fields if tags is not None else ():
        editor.set_tags(tag_field, tags)
    editor.undeclare(undeclare)
    declared = tuple(editor.new_decls.values())
    return editor.result(), declared


def _sets_anything(rating, aes, tags, pick=KEEP, marks=KEEP) -> bool:
    """Whether a call would put something into a sidecar (not only remove things)."""
    return any(value not in (KEEP, None) for value in (rating, aes, pick, marks)) or bool(tags)


def _new_packet() -> bytes:
    """The skeleton of a sidecar we create; our fields are then added to it like to any other.

    The same shape Exiv2 (hence darktable) writes for sidecars: no xpacket wrapper, one
    rdf:Description with rdf:about="". darktable, digiKam, Exiv2 and ExifTool read it.
    """
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="aes-index">\n'
        ' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
        '  <rdf:Description rdf:about=""\n'
        f'    xmlns:xmp="{XMP_NS}"\n'
        f'    xmlns:aes="{AES_NS}"/>\n'
        " </rdf:RDF>\n"
        "</x:xmpmeta>\n"
    ).encode()


def _check_rating(rating) -> None:
    if rating in (KEEP, None):
        return
    if isinstance(rating, bool) or not isinstance(rating, int):
        raise TypeError(f"rating must be an int, None or KEEP, not {rating!r}")
    if not MIN_RATING <= rating <= MAX_RATING:
        raise ValueError(f"rating {rating} is outside {MIN_RATING}..{MAX_RATING}")


def _check_pick(pick) -> None:
    if pick in (KEEP, None):
        return
    if isinstance(pick, bool) or not isinstance(pick, int):
        raise TypeError(f"pick must be an int, None or KEEP, not {pick!r}")
    if not NO_PICK <= pick <= PICK_ACCEPTED:
        raise ValueError(f"pick label {pick} is outside {NO_PICK}..{PICK_ACCEPTED}")


def _checked_tags(tags, tag_fields) -> tuple[list[str] | None, list[TagField]]:
    if isinstance(tags, str):
        raise TypeError("tags must be a list of tags, not one string")
    fields = [_tag_field(key) for key in tag_fields]
    return (None if tags is None else [_check_tag(tag) for tag in tags]), fields


def _check_tag(tag: str) -> str:
    parts = tag.split("|")
    if not tag or any(not part.strip() for part in parts) or "/" in tag:
        # "/" is digiKam's separator: a tag holding one would change level there.
        raise ValueError(f"bad tag {tag!r}: use non-empty 'a|b' paths without '/'")
    return tag


def _tag_field(key: str) -> TagField:
    try:
        return TAG_FIELDS[key]
    except KeyError:
        raise ValueError(f"unknown tag field {key!r}; known: {', '.join(TAG_FIELDS)}") from None


def _check_read_back(doc, values: dict, tags, fields, path) -> None:
    """Guard against our own bugs: never write a file that doesn't say what we meant."""
    problems = []
    rating, aes, pick, marks = values["rating"], values["aes"], values["pick"], values["marks"]
    if rating is not KEEP and (found := _read_rating(doc, path)) != rating:
        problems.append(f"rating reads {found}, not {rating}")
    if aes is not KEEP and (_read_aes(doc) is None) != (aes is None):
        problems.append("aes fields did not read back")
    if pick is not KEEP and (found := _read_pick(doc, path)) != pick:
        problems.append(f"pick label reads {found}, not {pick}")
    if marks is not KEEP and _read_marks(doc) != marks:
        problems.append("culling markers did not read back")
    for tag_field in fields if tags is not None else ():
        if not tag_field.creates and not doc.properties(tag_field.ns, tag_field.local):
            continue  # a property we don't create, and the file has none
        if set(found := _read_tags(doc, [tag_field])) != set(tags):
            problems.append(f"{tag_field.local} reads {sorted(found)}, not {sorted(tags)}")
    if problems:
        raise _refusal(path, "internal check failed after editing: " + "; ".join(problems))


def _real_path(path: Path) -> Path:
    """Write through a symlinked sidecar to its target, keeping the link itself."""
    return Path(os.path.realpath(path)) if path.is_symlink() else path


# --------------------------------------------------------------------------- loading


def _refusal(path: Path, reason: str) -> SidecarError:
    text = f"{path}: XMP sidecar not touched: {reason}"
    # One line, even for a file name holding a newline.
    return SidecarError(text.replace("\r", "\\r").replace("\n", "\\n"))


def _read_limited(path: Path) -> bytes | None:
    """The file's bytes, None when it doesn't exist; never reads past the size limit."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise _refusal(path, f"cannot read it ({err.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise _refusal(path, "it is not a regular file")
    if st.st_size > MAX_SIDECAR_BYTES:
        raise _refusal(path, f"it is {st.st_size:,} bytes, over the {MAX_SIDECAR_BYTES:,} limit")
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_SIDECAR_BYTES + 1)  # the file may have grown since stat
    except OSError as err:
        raise _refusal(path, f"cannot read it ({err.strerror})") from None
    if len(data) > MAX_SIDECAR_BYTES:
        raise _refusal(path, f"it is over the {MAX_SIDECAR_BYTES:,} byte limit")
    return data


# --------------------------------------------------------------------------- parsing


@dataclass(eq=False, slots=True)
class _Attr:
    """One attribute as it sits in the file: byte spans plus its parsed value."""

    qname: str
    ns: str
    local: str
    ws_start: int  # start of the whitespace before the name
    start: int
    value_start: int  # inside the quotes
    value_end: int
    value: str = ""

    @property
    def end(self) -> int:
        return self.value_end + 1  # past the closing quote

    @property
    def is_declaration(self) -> bool:
        return self.qname == "xmlns" or self.qname.startswith("xmlns:")


@dataclass(eq=False, slots=True)
class _Node:
    """One element: where its tags are in the file, its namespaces, children and text."""

    qname: str
    ns: str
    local: str
    start: int
    close_start: int  # where the start tag's ">" or "/>" begins
    start_tag_end: int
    empty: bool
    attrs: list[_Attr]
    scope: dict[str, str]  # prefix -> namespace in scope here ("" = default namespace)
    parent: _Node | None
    children: list[_Node] = field(default_factory=list)
    text_parts: list[str] = field(default_factory=list)
    end_tag_start: int = -1
    end: int = -1

    @property
    def text(self) -> str:
        return "".join(self.text_parts)

    @property
    def prefix(self) -> str:
        return self.qname.partition(":")[0] if ":" in self.qname else ""

    def is_(self, ns: str, local: str) -> bool:
        return self.ns == ns and self.local == local

    def attr(self, ns: str, local: str) -> _Attr | None:
        return next((a for a in self.attrs if a.ns == ns and a.local == local), None)


_NAME_RE = re.compile(rb"<([^\s/>]+)")
_ATTR_RE = re.compile(rb"(\s+)([^\s=/>]+)\s*=\s*(\"[^\"]*\"|'[^']*')")
_CLOSE_RE = re.compile(rb"\s*(/?>)")
_END_TAG_RE = re.compile(rb"</[^>]*>")
_SPACE = b" \t\r\n"


def _decode(raw: bytes) -> str:
    # surrogateescape: names copied from the file go back as the very same bytes.
    return raw.decode("utf-8", "surrogateescape")


class _SpanCollector:
    """Parser target: builds `_Node`s with byte positions taken from expat."""

    def __init__(self, source: bytes):
        self.source = source
        self.expat = None  # set once the parser exists
        self.stack: list[_Node] = []
        self.nodes: list[_Node] = []

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        if len(self.nodes) >= MAX_ELEMENTS:
            raise ValueError(f"more than {MAX_ELEMENTS:,} elements")
        parent = self.stack[-1] if self.stack else None
        node = _scan_start_tag(self.source, self.expat.CurrentByteIndex, parent)
        _check_agrees(node, tag, attrib)
        if parent is not None:
            parent.children.append(node)
        self.stack.append(node)
        self.nodes.append(node)

    def end(self, tag: str) -> None:
        node = self.stack.pop()
        if node.empty:
            node.end = node.start_tag_end
            return
        node.end_tag_start = self.expat.CurrentByteIndex
        match = _END_TAG_RE.match(self.source, node.end_tag_start)
        if match is None:
            raise ValueError("end tag not where the parser reported it")
        node.end = match.end()

    def data(self, text: str) -> None:
        if self.stack:
            self.stack[-1].text_parts.append(text)

    def close(self) -> list[_Node]:
        return self.nodes


def _scan_start_tag(data: bytes, pos: int, parent: _Node | None) -> _Node:
    """Read the start tag at `pos` (already known well-formed) into a `_Node`."""
    name = _NAME_RE.match(data, pos)
    if name is None:
        raise ValueError("start tag not where the parser reported it")
    attrs, cursor = [], name.end()
    while (match := _ATTR_RE.match(data, cursor)) is not None:
        attrs.append(
            _Attr(
                qname=_decode(match.group(2)),
                ns="",
                local="",
                ws_start=match.start(1),
                start=match.start(2),
                value_start=match.start(3) + 1,
                value_end=match.end(3) - 1,
            )
        )
        cursor = match.end()
    close = _CLOSE_RE.match(data, cursor)
    if close is None:
        raise ValueError("start tag not understood")
    scope = parent.scope if parent else {"xml": XML_NS}
    declarations = [a for a in attrs if a.is_declaration]
    if declarations:
        scope = dict(scope)  # shared with the parent unless this element declares some
        for attr in declarations:
            prefix = attr.qname.partition(":")[2]
            scope[prefix] = _decode(data[attr.value_start : attr.value_end])
    qname = _decode(name.group(1))
    node = _Node(
        qname=qname,
        ns="",
        local="",
        start=pos,
        close_start=close.start(1),
        start_tag_end=close.end(),
        empty=close.group(1) == b"/>",
        attrs=attrs,
        scope=scope,
        parent=parent,
    )
    node.ns, node.local = _resolve(qname, scope, element=True)
    for attr in node.attrs:
        if not attr.is_declaration:
            attr.ns, attr.local = _resolve(attr.qname, scope, element=False)
    return node


def _resolve(qname: str, scope: dict[str, str], *, element: bool) -> tuple[str, str]:
    prefix, colon, local = qname.partition(":")
    if not colon:
        # Unprefixed attributes have no namespace; unprefixed elements the default one.
        return (scope.get("", "") if element else ""), qname
    if prefix not in scope:
        raise ValueError(f"undeclared prefix {prefix!r}")
    return scope[prefix], local


def _check_agrees(node: _Node, tag: str, attrib: dict[str, str]) -> None:
    """Our span scanner and the real parser must see the same element, or we don't edit."""
    if _clark(node.ns, node.local) != tag:
        raise ValueError(f"scanner saw {node.qname!r} where the parser saw {tag!r}")
    plain = [a for a in node.attrs if not a.is_declaration]
    if sorted(_clark(a.ns, a.local) for a in plain) != sorted(attrib):
        raise ValueError(f"attributes of {node.qname!r} not understood")
    for attr in plain:
        attr.value = attrib[_clark(attr.ns, attr.local)]


def _clark(ns: str, local: str) -> str:
    return f"{{{ns}}}{local}" if ns else local


@dataclass
class _Doc:
    """A parsed sidecar: its bytes, elements in document order, and its top-level
    rdf:Description elements (where XMP properties live)."""

    data: bytes
    nodes: list[_Node]
    descriptions: list[_Node]

    def properties(self, ns: str, local: str) -> list[_Attr | _Node]:
        """Every occurrence of one property: attributes and child elements of descriptions."""
        found: list[_Attr | _Node] = []
        for desc in self.descriptions:
            found += [a for a in desc.attrs if a.ns == ns and a.local == local]
            found += [c for c in desc.children if c.is_(ns, local)]
        return found

    def uses_namespace(self, ns: str) -> list[_Attr | _Node]:
        """Every element and attribute in namespace `ns`."""
        uses: list[_Attr | _Node] = [n for n in self.nodes if n.ns == ns]
        for node in self.nodes:
            uses += [a for a in node.attrs if a.ns == ns and not a.is_declaration]
        return uses

    def target_description(self) -> _Node:
        """Where new properties go: the first description about this resource (about="")."""
        for desc in self.descriptions:
            about = desc.attr(RDF_NS, "about")
            if about is not None and about.value == "":
                return desc
        return self.descriptions[0]


def _parse(data: bytes, path: Path) -> _Doc:
    """Parse safely (defusedxml: no DTD, entities or external references) into a `_Doc`."""
    if data[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\x00" in data[:4]:
        raise _refusal(path, "it is UTF-16/32 encoded; only UTF-8 sidecars are edited")
    collector = _SpanCollector(data)
    parser = defused_et.DefusedXMLParser(
        target=collector, forbid_dtd=True, forbid_entities=True, forbid_external=True
    )
    collector.expat = parser.parser
    try:
        parser.feed(data)
        nodes = parser.close()
    except DefusedXmlException as err:
        raise _refusal(path, f"it declares a DTD or entities ({type(err).__name__})") from None
    except defused_et.ParseError as err:
        raise _refusal(path, f"it is not well-formed XML ({err})") from None
    except ValueError as err:
        raise _refusal(path, f"its layout is not understood ({err})") from None
    rdf = next((n for n in nodes if n.is_(RDF_NS, "RDF")), None)
    if rdf is None:
        raise _refusal(path, "it has no rdf:RDF element")
    descriptions = [c for c in rdf.children if c.is_(RDF_NS, "Description")]
    if not descriptions:
        raise _refusal(path, "it has no rdf:Description element")
    return _Doc(data=data, nodes=nodes, descriptions=descriptions)


def _info(doc: _Doc, path: Path) -> SidecarInfo:
    return SidecarInfo(
        path=path,
        exists=True,
        rating=_read_rating(doc, path),
        aes=_read_aes(doc),
        tags=_read_tags(doc),
        content_hash=sha256_hex(doc.data),
        pick=_read_pick(doc, path),
        marks=_read_marks(doc),
        holds_nothing=_holds_nothing(doc),
    )


_SKELETON = {("adobe:ns:meta/", "xmpmeta"), (RDF_NS, "RDF"), (RDF_NS, "Description")}
_SKELETON_ATTRS = {("adobe:ns:meta/", "xmptk"), (RDF_NS, "about")}


def _holds_nothing(doc: _Doc) -> bool:
    """Whether the file is only the skeleton every sidecar has (x:xmpmeta, rdf:RDF, bare
    rdf:Description elements, namespace declarations): no value of ours or of anyone
    else's is in it. Undo removes such a sidecar when we created it."""
    for node in doc.nodes:
        if (node.ns, node.local) not in _SKELETON or node.text.strip():
            return False
        if any(not a.is_declaration and (a.ns, a.local) not in _SKELETON_ATTRS for a in node.attrs):
            return False
    return True


def _simple_value(prop: _Attr | _Node) -> str | None:
    """The text of a simple property (attribute or leaf element); None for structures."""
    if isinstance(prop, _Attr):
        return prop.value
    return None if prop.children else prop.text.strip()


def _read_rating(doc: _Doc, path: Path) -> int | None:
    props = doc.properties(XMP_NS, "Rating")
    if len(props) > 1:
        # Two values (two rdf:Description blocks): Exiv2, hence darktable and digiKam,
        # rejects the file ("Duplicate property"); which one a reader shows is anyone's guess.
        raise _refusal(path, f"it holds {len(props)} xmp:Rating values; keep one (e.g. re-save it in darktable)")
    for prop in props:
        text = _simple_value(prop)
        try:
            return round(float(text))
        except (TypeError, ValueError, OverflowError):
            # Unknown content is someone's data; refusing keeps us from overwriting it.
            raise _refusal(path, f"xmp:Rating holds {text!r}, not a number") from None
    return None


def _read_pick(doc: _Doc, path: Path) -> int | None:
    """digiKam:PickLabel as digiKam reads it (DMetadata::getItemPickLabel: an integer
    0..3); anything else, or two values, is refused like an unreadable rating."""
    props = doc.properties(DIGIKAM_NS, "PickLabel")
    if len(props) > 1:
        raise _refusal(path, f"it holds {len(props)} digiKam:PickLabel values; keep one")
    if not props:
        return None
    text = _simple_value(props[0])
    value = _int_or_none(text)
    if value is None or not NO_PICK <= value <= PICK_ACCEPTED:
        # digiKam would show no pick label, but the value is someone's: never overwritten
        raise _refusal(path, f"digiKam:PickLabel holds {text!r}, not a pick label 0..3")
    return value


def _read_marks(doc: _Doc) -> CullMarks | None:
    values = {}
    for name in MARK_PROPERTIES:
        props = doc.properties(AES_NS, name)
        if props and (text := _simple_value(props[0])) is not None:
            values[name] = text
    return CullMarks.from_xmp(values)


def _read_aes(doc: _Doc) -> AesFields | None:
    values = {}
    for name in AES_PROPERTIES:
        props = doc.properties(AES_NS, name)
        if props and (text := _simple_value(props[0])) is not None:
            values[name] = text
    return AesFields.from_xmp(values)


def _read_tags(doc: _Doc, fields: Iterable[TagField] = TAG_FIELDS.values()) -> tuple[str, ...]:
    tags: dict[str, None] = {}  # ordered set
    for tag_field in fields:
        for prop in doc.properties(tag_field.ns, tag_field.local):
            for item in _list_items(prop):
                relative = tag_field.relative_tag(item.text)
                if relative is not None and not item.children:
                    tags[relative] = None
    return tuple(tags)


def _list_items(prop: _Attr | _Node) -> list[_Node]:
    """The rdf:li items of a list property; [] when it isn't a plain Bag/Seq."""
    container = _list_container(prop)
    return [] if container is None else [c for c in container.children]


def _list_container(prop: _Attr | _Node) -> _Node | None:
    if isinstance(prop, _Attr) or len(prop.children) != 1:
        return None
    container = prop.children[0]
    if container.ns != RDF_NS or container.local not in ("Bag", "Seq"):
        return None
    if not all(c.is_(RDF_NS, "li") for c in container.children):
        return None
    return container


def _float_or_none(text: str | None) -> float | None:
    try:
        return None if text is None else float(text)
    except ValueError:
        return None


def _int_or_none(text: str | None) -> int | None:
    try:
        return None if text is None else int(text)
    except ValueError:
        return None


# --------------------------------------------------------------------------- editing


def _escape_text(text: str) -> str:
    """Escape for element content; non-ASCII as character references, so the insert is
    right whatever ASCII-compatible encoding the file declares."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.encode("ascii", "xmlcharrefreplace").decode("ascii")


def _escape_attr(text: str, quote: str = '"') -> str:
    text = _escape_text(text).replace(quote, "&quot;" if quote == '"' else "&apos;")
    return text.replace("\t", "&#9;").replace("\n", "&#10;").replace("\r", "&#13;")


def _quote_of(data: bytes, attr: _Attr) -> str:
    return chr(data[attr.value_start - 1])


class _Editor:
    """Collects byte edits against one parsed sidecar and applies them in one pass.

    Edits never overlap; attributes and children added to the same description are
    gathered and inserted together at the end of its start tag / after its last child.
    """

    def __init__(self, doc: _Doc, path: Path):
        self.doc = doc
        self.path = path
        self.edits: list[tuple[int, int, str]] = []
        self.new_decls: dict[str, str] = {}  # prefix -> ns, on the target description
        self.new_attrs: list[tuple[str, str]] = []  # (qname, value) for the target
        self.new_children: list[tuple[str, str, str, list[str]]] = []  # new list properties
        self.target = doc.target_description()
        self.removed: list[_Attr | _Node] = []  # everything this edit takes out

    # -- public operations

    def set_rating(self, rating: int | None) -> None:
        self._set_simple(XMP_NS, "xmp", "Rating", None if rating is None else str(rating))

    def set_aes(self, aes: AesFields | None) -> None:
        self._set_our_properties(AES_PROPERTIES, aes.to_xmp() if aes is not None else {})

    def set_marks(self, marks: CullMarks | None) -> None:
        self._set_our_properties(MARK_PROPERTIES, marks.to_xmp() if marks is not None else {})

    def set_pick(self, pick: int | None) -> None:
        self._set_simple(DIGIKAM_NS, "digiKam", "PickLabel", None if pick is None else str(pick))

    def _set_our_properties(self, names: Sequence[str], wanted: dict[str, str]) -> None:
        """Our namespace's properties `names` become `wanted`; the declaration goes once
        nothing in the file uses our namespace any more."""
        for name in names:
            self._set_simple(AES_NS, "aes", name, wanted.get(name))
        if not wanted:
            self._drop_unused_declarations(AES_NS, self.removed)

    def set_tags(self, tag_field: TagField, tags: Sequence[str]) -> None:
        """Make our entries in one list property exactly `tags`; others stay untouched."""
        wanted = list(dict.fromkeys(tag_field.entry(tag) for tag in tags))
        props = self.doc.properties(tag_field.ns, tag_field.local)
        containers = [self._container_or_refuse(prop) for prop in props]
        kept: set[str] = set()
        flat = _our_flat_keywords(self.doc) if tag_field.key == "dc" else frozenset()
        stale = [_stale_entries(c, tag_field, wanted, kept, flat) for c in containers]
        missing = [entry for entry in wanted if entry not in kept]
        for index, (prop, container) in enumerate(zip(props, containers, strict=True)):
            receives_new = index == 0 and bool(missing)
            if stale[index] and len(stale[index]) == len(container.children) and not receives_new:
                self._remove(prop)  # the property held only our stale entries
            else:
                for item in stale[index]:
                    self._remove(item)
        if missing and containers:
            self._append_items(containers[0], missing)
        elif missing and tag_field.creates:
            self._add_list_property(tag_field, missing)

    def undeclare(self, namespaces: Iterable[str]) -> None:
        """Drop the target description's declarations of `namespaces` (ones an earlier
        write of ours added there, as the journal says) once nothing inside it uses them:
        an undo gives back the bytes."""
        for ns in namespaces:
            self._drop_unused_declarations(ns, self.removed, within=self.target)

    def result(self) -> bytes:
        self._flush_target_insertions()
        data = self.doc.data
        pieces, cursor = [], 0
        for start, end, text in sorted(self.edits, key=lambda e: (e[0], e[1])):
            if start < cursor:
                raise _refusal(self.path, "internal error: overlapping edits")
            pieces += [data[cursor:start], text.encode("utf-8", "surrogateescape")]
            cursor = end
        pieces.append(data[cursor:])
        return b"".join(pieces)

    # -- simple properties

    def _set_simple(self, ns: str, prefix: str, local: str, text: str | None) -> list:
        """Set (text) or remove (None) every occurrence of a simple property.

        Returns the occurrences removed. A missing property is added as an attribute
        of the target description, the way darktable and Exiv2 write simple values.
        """
        props = self.doc.properties(ns, local)
        if text is None:
            for prop in props:
                self._remove(prop)
            return props
        if not props:
            self.new_attrs.append((f"{self._prefix(ns, prefix)}:{local}", text))
        for prop in props:
            self._replace_value(prop, text)
        return []

    def _replace_value(self, prop: _Attr | _Node, text: str) -> None:
        if isinstance(prop, _Attr):
            quote = _quote_of(self.doc.data, prop)
            self.edits.append((prop.value_start, prop.value_end, _escape_attr(text, quote)))
        elif prop.children:
            raise _refusal(self.path, f"{prop.qname} is a structure, not a simple value")
        elif prop.empty:
            start_tag = _decode(self.doc.data[prop.start : prop.close_start])
            self.edits.append(
                (prop.start, prop.end, f"{start_tag}>{_escape_text(text)}</{prop.qname}>")
            )
        else:
            self.edits.append((prop.start_tag_end, prop.end_tag_start, _escape_text(text)))

    def _remove(self, item: _Attr | _Node) -> None:
        """Remove an attribute or element together with the whitespace before it."""
        self.removed.append(item)
        if isinstance(item, _Attr):
            self.edits.append((item.ws_start, item.end, ""))
            return
        self.edits.append((_whitespace_start(self.doc.data, item.start), item.end, ""))

    def _drop_unused_declarations(self, ns: str, removed: list, within: _Node | None = None) -> None:
        """Remove declarations of `ns` once nothing in the file uses it any more; with
        `within`, only that element's own declarations, once nothing inside it does."""
        removed_ids = {id(item) for item in removed} | {id(item) for item in self.removed}  # never removed twice
        owner = {id(attr): node for node in self.doc.nodes for attr in node.attrs}
        uses = [use for use in self.doc.uses_namespace(ns) if id(use) not in removed_ids]
        if within is not None:
            uses = [use for use in uses if _inside(use if isinstance(use, _Node) else owner[id(use)], {id(within)})]
        if uses:
            return
        for node in [within] if within is not None else self.doc.nodes:
            if _inside(node, removed_ids):
                continue  # goes away with the element being removed
            for attr in node.attrs:
                if attr.is_declaration and node.scope.get(attr.qname.partition(":")[2]) == ns and id(attr) not in removed_ids:
                    self._remove(attr)

    # -- list properties (tags)

    def _container_or_refuse(self, prop: _Attr | _Node) -> _Node:
        container = _list_container(prop)
        if container is None:
            # e.g. an rdf:nodeID reference: editing it would mean restructuring the file.
            raise _refusal(self.path, f"{prop.qname} is not a plain rdf:Bag/rdf:Seq list")
        return container

    def _append_items(self, container: _Node, entries: list[str]) -> None:
        data = self.doc.data
        if container.children:
            last = container.children[-1]
            before = _decode(data[_whitespace_start(data, last.start) : last.start])
            li = last.qname
            items = "".join(f"{before}<{li}>{_escape_text(e)}</{li}>" for e in entries)
            self.edits.append((last.end, last.end, items))
            return
        indent = _indent_of(data, container.start)
        li = _qualified(container.prefix, "li")
        items = "".join(f"\n{indent} <{li}>{_escape_text(e)}</{li}>" for e in entries)
        if container.empty:
            closing = f">{items}\n{indent}</{container.qname}>"
            self.edits.append((container.close_start, container.start_tag_end, closing))
        else:
            self.edits.append((container.start_tag_end, container.start_tag_end, items))

    def _add_list_property(self, tag_field: TagField, entries: list[str]) -> None:
        prop = f"{self._prefix(tag_field.ns, tag_field.prefix)}:{tag_field.local}"
        rdf_prefix = self._prefix(RDF_NS, "rdf")
        kind, li = f"{rdf_prefix}:{tag_field.container}", f"{rdf_prefix}:li"
        self.new_children.append((prop, kind, li, entries))

    # -- insertions into the target description

    def _prefix(self, ns: str, preferred: str) -> str:
        """A prefix bound to `ns` at the target description, declaring one if needed."""
        scope = {**self.target.scope, **self.new_decls}
        if scope.get(preferred) == ns:
            return preferred
        bound = sorted(p for p, uri in scope.items() if uri == ns and p)
        if bound:
            return bound[0]
        prefix, number = preferred, 1
        while prefix in scope:
            prefix, number = f"{preferred}{number}", number + 1
        self.new_decls[prefix] = ns
        return prefix

    def _flush_target_insertions(self) -> None:
        if self.new_decls or self.new_attrs:
            self._insert_attributes(self.target)
        if self.new_children:
            self._insert_children(self.target)

    def _insert_attributes(self, desc: _Node) -> None:
        """New declarations and attributes go after the last attribute, in its style
        (the whitespace before it, its quote character)."""
        data, attrs = self.doc.data, desc.attrs
        decls = [a for a in attrs if a.is_declaration]
        anchor = attrs[-1].end if attrs else desc.close_start
        plain_ws = _decode(data[attrs[-1].ws_start : attrs[-1].start]) if attrs else " "
        decl_ws = _decode(data[decls[-1].ws_start : decls[-1].start]) if decls else plain_ws
        quote = _quote_of(data, attrs[-1]) if attrs else '"'
        new = [(decl_ws, f"xmlns:{p}", ns) for p, ns in self.new_decls.items()]
        new += [(plain_ws, qname, value) for qname, value in self.new_attrs]
        text = "".join(
            f"{ws}{qname}={quote}{_escape_attr(value, quote)}{quote}" for ws, qname, value in new
        )
        self.edits.append((anchor, anchor, text))

    def _insert_children(self, desc: _Node) -> None:
        """New list properties go after the description's last child, at its indent."""
        data = self.doc.data
        if desc.children:
            last = desc.children[-1]
            text = self._render_children(_indent_of(data, last.start))
            self.edits.append((last.end, last.end, text))
            return
        outer = _indent_of(data, desc.start)
        text = self._render_children(outer + " ")
        if desc.empty:
            closing = f">{text}\n{outer}</{desc.qname}>"
            self.edits.append((desc.close_start, desc.start_tag_end, closing))
        else:
            self.edits.append((desc.start_tag_end, desc.start_tag_end, text))

    def _render_children(self, indent: str) -> str:
        """New list properties laid out as darktable does, one space per level."""
        out = []
        for prop, kind, li, entries in self.new_children:
            out.append(f"\n{indent}<{prop}>\n{indent} <{kind}>")
            out += [f"\n{indent}  <{li}>{_escape_text(entry)}</{li}>" for entry in entries]
            out.append(f"\n{indent} </{kind}>\n{indent}</{prop}>")
        return "".join(out)


def _stale_entries(container: _Node, tag_field: TagField, wanted: list[str], kept: set[str], flat: frozenset = frozenset()):
    """Our entries in `container` that must go (not wanted, or a duplicate); the wanted
    ones found are added to `kept`. Entries that aren't ours are never returned; `flat`
    are plain keywords that are ours too (see `_our_flat_keywords`)."""
    stale = []
    for item in container.children:
        if item.children or (tag_field.relative_tag(item.text) is None and item.text not in flat):
            continue
        if item.text in wanted and item.text not in kept:
            kept.add(item.text)
        else:
            stale.append(item)
    return stale


def _our_flat_keywords(doc: "_Doc") -> frozenset[str]:
    """dc:subject keywords darktable made of our tags: it rewrites dc:subject as the flat
    components of every tag it holds, so our "Aesthetic|3 stars" comes back as "Aesthetic"
    and "3 stars". Those components are ours unless one of the user's own tags in
    lr:hierarchicalSubject has the same component (then the keyword is theirs too)."""
    lr = TAG_FIELDS["lr"]
    ours, theirs = set(), set()
    for prop in doc.properties(lr.ns, lr.local):
        container = _list_container(prop)
        for item in container.children if container is not None else ():
            parts = item.text.split(lr.separator)
            (ours if lr.relative_tag(item.text) is not None else theirs).update(parts)
    return frozenset(ours - theirs)


def _inside(node: _Node | None, node_ids: set[int]) -> bool:
    while node is not None:
        if id(node) in node_ids:
            return True
        node = node.parent
    return False


def _whitespace_start(data: bytes, pos: int) -> int:
    while pos > 0 and data[pos - 1] in _SPACE:
        pos -= 1
    return pos


def _indent_of(data: bytes, pos: int) -> str:
    """The whitespace that indents the line on which `pos` starts ("" if not at line start)."""
    line_start = data.rfind(b"\n", 0, pos) + 1
    leading = data[line_start:pos]
    return _decode(leading) if not leading.strip(_SPACE) else ""


def _qualified(prefix: str, local: str) -> str:
    return f"{prefix}:{local}" if prefix else local


def _describe_changes(before: SidecarInfo, after: SidecarInfo) -> list[str]:
    lines = []
    if not before.exists and after.exists:
        lines.append("sidecar created")
    if before.rating != after.rating:
        lines.append(f"xmp:Rating {_show(before.rating)} -> {_show(after.rating)}")
    if before.aes != after.aes:
        lines.append(f"aes fields {_show(before.aes)} -> {_show(after.aes)}")
    if before.pick != after.pick:
        lines.append(f"digiKam:PickLabel {_show(before.pick)} -> {_show(after.pick)}")
    if before.marks != after.marks:
        lines.append(f"culling markers {_show(before.marks)} -> {_show(after.marks)}")
    added = [t for t in after.tags if t not in before.tags]
    dropped = [t for t in before.tags if t not in after.tags]
    if added or dropped:
        lines.append("tags " + " ".join([*(f"+{t}" for t in added), *(f"-{t}" for t in dropped)]))
    return lines


def _show(value) -> str:
    return "none" if value is None else str(value)
