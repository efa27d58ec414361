"""XMP sidecars: names, targeted edits that keep every other byte, hostile files, atomicity."""

from __future__ import annotations

import os
import random
import re
import shutil
import stat
import time
from pathlib import Path

import exiv2
import pytest

from aes_index import atomic
from aes_index.formats import xmp
from aes_index.errors import SidecarError
from aes_index.formats.xmp import KEEP, AesFields, read_sidecar, write_sidecar

from conftest import FIXTURES

DARKTABLE_SIDECARS = sorted((FIXTURES / "darktable-xmp").glob("*.xmp"))
SAMPLE_SIDECARS = sorted((FIXTURES / "metadata-samples").glob("*.xmp"))
AES = AesFields(score=6.25, percentile=91.3, head_id="emd-vitb32-ava@1", stars=4)
OUR_KEYS = re.compile(
    r"^Xmp\.(xmp\.Rating|aes\.|lr\.hierarchicalSubject|digiKam\.TagsList|dc\.subject)"
)
LIST_TAGS = {
    "Xmp.lr.hierarchicalSubject": "Aesthetic|4 stars",
    "Xmp.digiKam.TagsList": "Aesthetic/4 stars",
    "Xmp.dc.subject": "Aesthetic|4 stars",
}


def exiv2_properties(path: Path) -> dict[str, tuple[str, object]]:
    """Every XMP property as Exiv2 (darktable's and digiKam's metadata engine) reads it."""
    image = exiv2.ImageFactory.open(str(path))
    image.readMetadata()
    found = {}
    for datum in image.xmpData():
        kind = datum.typeName()
        if kind in ("XmpBag", "XmpSeq", "XmpAlt"):
            value = tuple(datum.toString(i) for i in range(datum.count()))
        else:
            value = datum.toString()
        found[datum.key()] = (kind, value)
    return found


def copy_fixture(source: Path, tmp_path: Path) -> Path:
    target = tmp_path / source.name
    shutil.copyfile(source, target)
    return target


def temp_files(directory: Path) -> list[Path]:
    return [p for p in directory.iterdir() if p.name.startswith(atomic.TEMP_PREFIX)]


def test_fixtures_are_there():
    assert len(DARKTABLE_SIDECARS) >= 5, f"expected darktable sidecars in {FIXTURES}"


# --------------------------------------------------------------------------- names


def test_sidecar_for_prefers_the_full_name_then_lightroom_style(tmp_path):
    image = tmp_path / "IMG_1.CR2"
    assert xmp.sidecar_for(image) == tmp_path / "IMG_1.CR2.xmp"  # default, not existing
    (tmp_path / "IMG_1.xmp").write_text("x")
    assert xmp.sidecar_for(image) == tmp_path / "IMG_1.xmp"
    (tmp_path / "IMG_1.CR2.xmp").write_text("x")
    assert xmp.sidecar_for(image) == tmp_path / "IMG_1.CR2.xmp"


def test_sidecar_for_a_file_without_extension(tmp_path):
    assert xmp.sidecar_for(tmp_path / "scan") == tmp_path / "scan.xmp"


def test_duplicate_sidecars_are_darktable_versions_in_order(tmp_path):
    image = tmp_path / "IMG_1.CR2"
    for name in [
        "IMG_1_10.CR2.xmp",
        "IMG_1_01.CR2.xmp",
        "IMG_1_02.CR2.xmp",
        "IMG_1_03.CR2.xmp",
        "IMG_10_01.CR2.xmp",
        "IMG_1_01.JPG.xmp",
        "IMG_1_xx.CR2.xmp",
        "IMG_1.CR2.xmp",
    ]:
        (tmp_path / name).write_text("x")
    (tmp_path / "IMG_1_03.CR2").write_bytes(b"a real photo with that name")
    assert xmp.duplicate_sidecars(image) == [
        tmp_path / "IMG_1_01.CR2.xmp",
        tmp_path / "IMG_1_02.CR2.xmp",
        tmp_path / "IMG_1_10.CR2.xmp",
    ]
    assert xmp.rating_sidecars(image)[0] == tmp_path / "IMG_1.CR2.xmp"
    assert len(xmp.rating_sidecars(image)) == 4


def test_duplicate_sidecars_of_a_missing_folder_is_empty(tmp_path):
    assert xmp.duplicate_sidecars(tmp_path / "nope" / "IMG_1.CR2") == []


# ------------------------------------------------------------------ every darktable sidecar


@pytest.mark.parametrize("source", DARKTABLE_SIDECARS, ids=lambda p: p.name)
def test_darktable_sidecar_keeps_every_other_property(source, tmp_path):
    path = copy_fixture(source, tmp_path)
    before = exiv2_properties(path)
    assert "Xmp.darktable.history_current_hash" in before

    outcome = write_sidecar(path, rating=4, aes=AES, tags=["4 stars"])

    assert outcome.changed and not outcome.created
    after = exiv2_properties(path)
    theirs_before = {k: v for k, v in before.items() if not OUR_KEYS.match(k)}
    theirs_after = {k: v for k, v in after.items() if not OUR_KEYS.match(k)}
    assert theirs_after == theirs_before  # history, masks, hashes, timestamps...
    assert after["Xmp.xmp.Rating"] == ("XmpText", "4")
    assert after["Xmp.aes.Score"][1] == "6.25"
    assert after["Xmp.aes.Percentile"][1] == "91.30"
    assert after["Xmp.aes.Head"][1] == "emd-vitb32-ava@1"
    assert after["Xmp.aes.Stars"][1] == "4"
    for key, ours in LIST_TAGS.items():
        if key == "Xmp.digiKam.TagsList" and key not in before:
            assert key not in after  # never created: digiKam would then read it alone
            continue
        old_items = before.get(key, ("", ()))[1]
        assert after[key][1] == (*old_items, ours)  # existing tags kept, in order


@pytest.mark.parametrize("source", DARKTABLE_SIDECARS, ids=lambda p: p.name)
def test_darktable_sidecar_bytes_change_only_in_our_fields(source, tmp_path):
    path = copy_fixture(source, tmp_path)
    old = source.read_text(encoding="utf-8")
    write_sidecar(path, rating=4, aes=AES, tags=["4 stars", "top 10%"])
    new = path.read_text(encoding="utf-8")
    assert strip_our_edits(new, old) == old


def strip_our_edits(new: str, old: str) -> str:
    """Undo, by pattern, exactly the kinds of edits we are allowed to make."""
    old_rating = re.search(r'xmp:Rating="(-?\d)"', old).group(1)
    new = re.sub(r'xmp:Rating="-?\d"', f'xmp:Rating="{old_rating}"', new)
    new = re.sub(r'\s+aes:\w+="[^"]*"', "", new)
    new = re.sub(r"\s+<rdf:li>Aesthetic[|/][^<]*</rdf:li>", "", new)
    for decl in re.findall(r'\s+xmlns:(?:aes|lr|digiKam|dc)="[^"]*"', new):
        if decl not in old:
            new = new.replace(decl, "")
    return re.sub(
        r"\s+<(lr:hierarchicalSubject|digiKam:TagsList|dc:subject)>\s*"
        r"<rdf:(Bag|Seq)>\s*</rdf:\2>\s*</\1>",
        lambda m: "" if m.group(0) not in old else m.group(0),
        new,
    )


@pytest.mark.parametrize("source", DARKTABLE_SIDECARS, ids=lambda p: p.name)
def test_reading_a_darktable_sidecar(source):
    info = read_sidecar(source)
    assert info.exists and info.rating == 1  # darktable's default initial rating
    assert info.aes is None and info.tags == ()


def test_undoing_our_fields_restores_the_exact_bytes(tmp_path):
    source = FIXTURES / "darktable-xmp" / "evening-glow-places.jpg.xmp"  # has lr: and dc:, no digiKam:
    path = copy_fixture(source, tmp_path)
    fields = ("lr", "dc")
    first = write_sidecar(path, rating=5, aes=AES, tags=["5 stars"], tag_fields=fields)
    assert first.changed
    write_sidecar(path, rating=first.prior.rating, aes=None, tags=[], tag_fields=fields)
    assert path.read_bytes() == source.read_bytes()


def test_writing_the_same_values_again_changes_nothing(tmp_path):
    path = copy_fixture(DARKTABLE_SIDECARS[0], tmp_path)
    write_sidecar(path, rating=3, aes=AES, tags=["3 stars"])
    stamp = path.stat().st_mtime_ns
    content = path.read_bytes()
    again = write_sidecar(path, rating=3, aes=AES, tags=["3 stars"])
    assert not again.changed and again.changes == []
    assert path.read_bytes() == content and path.stat().st_mtime_ns == stamp


def test_stale_tags_of_ours_are_replaced_and_others_kept(tmp_path):
    path = copy_fixture(FIXTURES / "darktable-xmp" / "evening-glow-folk-toto.jpg.xmp", tmp_path)
    write_sidecar(path, tags=["3 stars", "keep|me"])
    outcome = write_sidecar(path, tags=["4 stars", "keep|me"])
    assert outcome.changes == ["tags +4 stars -3 stars"]
    props = exiv2_properties(path)
    assert props["Xmp.lr.hierarchicalSubject"][1] == (
        "Folk",
        "toto",
        "Aesthetic|keep|me",
        "Aesthetic|4 stars",
    )
    assert "Xmp.digiKam.TagsList" not in props  # it had none: we create none
    assert read_sidecar(path).tags == ("keep|me", "4 stars")


def test_removing_our_tags_removes_lists_we_created(tmp_path):
    path = copy_fixture(FIXTURES / "darktable-xmp" / "evening-glow-folk-toto.jpg.xmp", tmp_path)
    write_sidecar(path, tags=["4 stars"])
    write_sidecar(path, tags=[])
    props = exiv2_properties(path)
    assert "Xmp.digiKam.TagsList" not in props
    assert props["Xmp.lr.hierarchicalSubject"][1] == ("Folk", "toto")
    assert "<digiKam:TagsList>" not in path.read_text()


def test_only_chosen_tag_fields_are_written(tmp_path):
    path = copy_fixture(FIXTURES / "darktable-xmp" / "evening-glow-folk-toto.jpg.xmp", tmp_path)
    write_sidecar(path, tags=["4 stars"], tag_fields=["dc"])
    props = exiv2_properties(path)
    assert props["Xmp.lr.hierarchicalSubject"][1] == ("Folk", "toto")
    assert props["Xmp.dc.subject"][1][-1] == "Aesthetic|4 stars"


DIGIKAM_SIDECAR = """<?xml version="1.0" encoding="UTF-8"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about="" xmlns:digiKam="http://www.digikam.org/ns/1.0/"
    xmlns:lr="http://ns.adobe.com/lightroom/1.0/">
   <digiKam:TagsList><rdf:Seq><rdf:li>People/Folk</rdf:li></rdf:Seq></digiKam:TagsList>
   <lr:hierarchicalSubject><rdf:Bag><rdf:li>People|Folk</rdf:li></rdf:Bag></lr:hierarchicalSubject>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
"""


def test_a_digikam_tagslist_is_kept_in_step_and_never_created(tmp_path):
    """digiKam reads digiKam:TagsList first and nothing else. A darktable sidecar has none
    (its tags are in lr:hierarchicalSubject and dc:subject): a TagsList holding only our
    tag would hide the user's tags from digiKam. One digiKam wrote gets our entry too."""
    darktable = copy_fixture(FIXTURES / "darktable-xmp" / "evening-glow-folk-toto.jpg.xmp", tmp_path)
    write_sidecar(darktable, tags=["3 stars"])
    assert "Xmp.digiKam.TagsList" not in exiv2_properties(darktable)
    assert exiv2_properties(darktable)["Xmp.lr.hierarchicalSubject"][1] == ("Folk", "toto", "Aesthetic|3 stars")

    digikam = tmp_path / "IMG_2.jpg.xmp"
    digikam.write_text(DIGIKAM_SIDECAR)
    write_sidecar(digikam, tags=["3 stars"])
    assert exiv2_properties(digikam)["Xmp.digiKam.TagsList"][1] == ("People/Folk", "Aesthetic/3 stars")


def test_keep_leaves_fields_alone(tmp_path):
    path = copy_fixture(FIXTURES / "darktable-xmp" / "evening-glow-folk-toto.jpg.xmp", tmp_path)
    write_sidecar(path, rating=2, aes=AES, tags=["2 stars"])
    write_sidecar(path, rating=KEEP, aes=KEEP, tags=None)
    info = read_sidecar(path)
    assert (info.rating, info.aes.stars, info.tags) == (2, 4, ("2 stars",))
    write_sidecar(path, rating=None)
    assert read_sidecar(path).rating is None
    assert "Xmp.xmp.Rating" not in exiv2_properties(path)


# --------------------------------------------------------------------------- other writers' styles


def test_rating_as_element_in_a_later_description(tmp_path):
    path = copy_fixture(FIXTURES / "metadata-samples" / "PLUS.xmp", tmp_path)
    before = exiv2_properties(path)
    assert read_sidecar(path).rating == 0
    write_sidecar(path, rating=5, aes=AES)
    text = path.read_text(encoding="utf-8")
    assert "<xmp:Rating>5</xmp:Rating>" in text and "xmp:Rating=" not in text
    assert "aes:Score='6.25'" in text  # the file's quote style is followed
    after = exiv2_properties(path)
    assert {k: v for k, v in after.items() if not OUR_KEYS.match(k)} == {
        k: v for k, v in before.items() if not OUR_KEYS.match(k)
    }


def test_rating_under_another_prefix_is_found(tmp_path):
    path = copy_fixture(FIXTURES / "metadata-samples" / "XMP.xmp", tmp_path)
    assert read_sidecar(path).rating == 1
    write_sidecar(path, rating=3, tags=["3 stars"])
    text = path.read_text(encoding="utf-8")
    assert 'xap:Rating="3"' in text and "xmlns:xmp=" not in text
    # the CDATA keyword beside ours survives
    assert exiv2_properties(path)["Xmp.dc.subject"][1] == (
        "test1",
        "&-&amp;-&",
        "Aesthetic|3 stars",
    )


def test_nonstandard_dc_prefix_is_reused(tmp_path):
    path = copy_fixture(FIXTURES / "metadata-samples" / "XMP3.xmp", tmp_path)
    write_sidecar(path, rating=2, tags=["2 stars"], tag_fields=["dc"])
    text = path.read_text(encoding="utf-8")
    assert "<dd:subject>" in text and "xmlns:dc=" not in text


@pytest.mark.parametrize("source", SAMPLE_SIDECARS, ids=lambda p: p.name)
def test_every_sample_sidecar_is_edited_or_refused_cleanly(source, tmp_path):
    path = copy_fixture(source, tmp_path)
    try:
        write_sidecar(path, rating=4, aes=AES, tags=["4 stars"])
    except SidecarError as err:
        assert "\n" not in str(err)
        assert path.read_bytes() == source.read_bytes()
        return
    info = read_sidecar(path)
    assert (info.rating, info.tags) == (4, ("4 stars",))


def test_a_list_property_by_node_reference_is_refused_for_tags(tmp_path):
    path = tmp_path / "nodeid.xmp"
    path.write_text(
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF'
        ' xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"'
        ' xmlns:dc="http://purl.org/dc/elements/1.1/">'
        '<rdf:Bag rdf:nodeID="b"><rdf:li>x</rdf:li></rdf:Bag>'
        '<rdf:Description rdf:about=""><dc:subject rdf:nodeID="b"/></rdf:Description>'
        "</rdf:RDF></x:xmpmeta>"
    )
    original = path.read_bytes()
    with pytest.raises(SidecarError, match="dc:subject"):
        write_sidecar(path, tags=["4 stars"])
    assert path.read_bytes() == original
    write_sidecar(path, rating=4)  # the rating alone is fine
    assert read_sidecar(path).rating == 4


def test_empty_description_gets_children(tmp_path):
    path = tmp_path / "empty.xmp"
    path.write_text(
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">\n'
        ' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
        '  <rdf:Description rdf:about=""/>\n'
        " </rdf:RDF>\n</x:xmpmeta>\n"
    )
    write_sidecar(path, rating=1, tags=["1 star"])
    props = exiv2_properties(path)
    assert props["Xmp.xmp.Rating"][1] == "1"
    assert props["Xmp.lr.hierarchicalSubject"][1] == ("Aesthetic|1 star",)


def test_values_are_escaped(tmp_path):
    path = tmp_path / "IMG.JPG.xmp"
    head = 'a "quoted" <head> & ünïcode'
    tag = '5 < "stars" & ü {0}'
    write_sidecar(path, aes=AesFields(1.0, head_id=head), tags=[tag])
    info = read_sidecar(path)
    assert info.aes.head_id == head and info.tags == (tag,)
    assert exiv2_properties(path)["Xmp.aes.Head"][1] == head
    assert path.read_bytes().isascii()  # non-ASCII went in as character references


def test_reject_is_written_as_minus_one(tmp_path):
    path = tmp_path / "IMG.JPG.xmp"
    write_sidecar(path, rating=-1)
    assert read_sidecar(path).rating == -1


@pytest.mark.parametrize("bad", [6, -2, 2.5, True, "3"])
def test_bad_ratings_are_refused(bad, tmp_path):
    with pytest.raises((ValueError, TypeError)):
        write_sidecar(tmp_path / "x.xmp", rating=bad)


@pytest.mark.parametrize("bad", ["", "a||b", "a/b", "|x"])
def test_bad_tags_are_refused(bad, tmp_path):
    with pytest.raises(ValueError):
        write_sidecar(tmp_path / "x.xmp", tags=[bad])


@pytest.mark.parametrize("value", ["lots", "inf", "nan", ""])
def test_unreadable_rating_is_refused(value, tmp_path):
    path = tmp_path / "x.xmp"
    path.write_text(
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF'
        ' xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/"'
        f' xmp:Rating="{value}"/></rdf:RDF></x:xmpmeta>'
    )
    with pytest.raises(SidecarError, match="Rating"):
        read_sidecar(path)


# --------------------------------------------------------------------------- new sidecars


def test_a_new_sidecar_is_minimal_and_readable(tmp_path):
    path = tmp_path / "IMG_0001.CR2.xmp"
    outcome = write_sidecar(path, rating=4, aes=AES, tags=["4 stars"])
    assert outcome.created and outcome.changed and not outcome.prior.exists
    assert outcome.changes[0] == "sidecar created"
    assert outcome.content_hash == atomic.sha256_hex(path.read_bytes())
    props = exiv2_properties(path)
    assert props["Xmp.xmp.Rating"][1] == "4"
    assert props["Xmp.aes.Stars"][1] == "4"
    assert props["Xmp.lr.hierarchicalSubject"][1] == ("Aesthetic|4 stars",)
    assert "Xmp.digiKam.TagsList" not in props  # digiKam reads lr:hierarchicalSubject then
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_nothing_to_write_creates_nothing(tmp_path):
    path = tmp_path / "IMG.JPG.xmp"
    outcome = write_sidecar(path, rating=None, aes=None, tags=[])
    assert not outcome.changed and not outcome.created and not path.exists()


def test_dry_run_writes_nothing(tmp_path):
    path = tmp_path / "IMG.JPG.xmp"
    outcome = write_sidecar(path, rating=4, dry_run=True)
    assert outcome.changed and outcome.created and not path.exists()
    existing = copy_fixture(DARKTABLE_SIDECARS[0], tmp_path)
    outcome = write_sidecar(existing, rating=5, dry_run=True)
    assert outcome.changes == ["xmp:Rating 1 -> 5"]
    assert existing.read_bytes() == DARKTABLE_SIDECARS[0].read_bytes()


def test_missing_sidecar_reads_as_empty(tmp_path):
    info = read_sidecar(tmp_path / "none.xmp")
    assert not info.exists and info.rating is None and info.tags == ()


# --------------------------------------------------------------------------- hostile files


def assert_refused_untouched(path: Path, *, match: str | None = None) -> SidecarError:
    original = path.read_bytes() if path.stat().st_size < 1_000_000 else None
    stamp = path.stat().st_mtime_ns
    for call in (lambda: read_sidecar(path), lambda: write_sidecar(path, rating=5, tags=["x"])):
        with pytest.raises(SidecarError, match=match) as err:
            call()
        message = str(err.value)
        assert "\n" not in message and str(path.name) in message
    assert path.stat().st_mtime_ns == stamp
    if original is not None:
        assert path.read_bytes() == original
    assert temp_files(path.parent) == []
    return err.value


def test_billion_laughs_is_refused(tmp_path):
    entities = "".join(
        f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10}">' for i in range(1, 10)
    )
    path = tmp_path / "laughs.xmp"
    path.write_text(
        f'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol0 "lol">{entities}]>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">&lol9;</x:xmpmeta>'
    )
    assert_refused_untouched(path, match="DTD")


def test_external_entity_is_refused(tmp_path):
    path = tmp_path / "xxe.xmp"
    path.write_text(
        '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF'
        ' xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/">'
        "<dc:title>&xxe;</dc:title></rdf:Description></rdf:RDF></x:xmpmeta>"
    )
    error = assert_refused_untouched(path, match="DTD")
    assert "root:" not in str(error)


def test_a_bare_doctype_is_refused(tmp_path):
    path = tmp_path / "dtd.xmp"
    path.write_text(
        '<?xml version="1.0"?><!DOCTYPE x:xmpmeta><x:xmpmeta xmlns:x="adobe:ns:meta/"/>'
    )
    assert_refused_untouched(path)


def test_a_huge_file_is_refused_without_reading_it(tmp_path, monkeypatch):
    path = tmp_path / "huge.xmp"
    with open(path, "wb") as handle:
        handle.write(b"<x:xmpmeta>")
        handle.truncate(100 * 1024 * 1024)  # sparse: 100 MB that takes no disk
    reads = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda *a, **k: reads.append(a) or real_open(*a, **k))
    started = time.monotonic()
    assert_refused_untouched(path, match="limit")
    assert time.monotonic() - started < 1.0
    assert reads == []


def test_malformed_xml_is_refused(tmp_path):
    path = tmp_path / "broken.xmp"
    path.write_bytes(DARKTABLE_SIDECARS[0].read_bytes()[:-40])
    assert_refused_untouched(path, match="well-formed")


def test_xml_without_rdf_is_refused(tmp_path):
    path = tmp_path / "plain.xmp"
    path.write_text("<note>not XMP</note>")
    assert_refused_untouched(path, match="rdf")


def test_utf16_is_refused(tmp_path):
    path = tmp_path / "wide.xmp"
    path.write_bytes('<?xml version="1.0" encoding="UTF-16"?><a/>'.encode("utf-16"))
    assert_refused_untouched(path, match="UTF-16")


def test_a_directory_is_refused(tmp_path):
    (tmp_path / "dir.xmp").mkdir()
    with pytest.raises(SidecarError, match="regular file"):
        read_sidecar(tmp_path / "dir.xmp")


# --------------------------------------------------------------------------- atomic writes


def test_a_crash_before_the_rename_leaves_the_old_sidecar_whole(tmp_path, monkeypatch):
    path = copy_fixture(DARKTABLE_SIDECARS[0], tmp_path)
    original = path.read_bytes()

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(SidecarError, match="cannot write it"):
        write_sidecar(path, rating=5)
    assert path.read_bytes() == original
    assert temp_files(tmp_path) == []


def test_a_crash_mid_write_leaves_the_old_sidecar_whole(tmp_path, monkeypatch):
    path = copy_fixture(DARKTABLE_SIDECARS[0], tmp_path)
    original = path.read_bytes()
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        write_sidecar(path, rating=5)
    assert path.read_bytes() == original
    assert temp_files(tmp_path) == []


def test_permissions_are_kept(tmp_path):
    path = copy_fixture(DARKTABLE_SIDECARS[0], tmp_path)
    path.chmod(0o640)
    write_sidecar(path, rating=5)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_a_symlinked_sidecar_is_written_through(tmp_path):
    real = copy_fixture(DARKTABLE_SIDECARS[0], tmp_path)
    link = tmp_path / "IMG.CR2.xmp"
    link.symlink_to(real.name)
    write_sidecar(link, rating=5)
    assert link.is_symlink() and read_sidecar(real).rating == 5


# --------------------------------------------------------------------------- random edit sequences


@pytest.mark.parametrize(
    "source",
    [*DARKTABLE_SIDECARS, FIXTURES / "metadata-samples" / "PLUS.xmp"],
    ids=lambda p: p.name,
)
def test_random_edit_sequences_read_back_and_keep_the_rest(source, tmp_path):
    rng = random.Random(source.name)
    path = copy_fixture(source, tmp_path)
    original = exiv2_properties(path)
    rating, aes, tags = read_sidecar(path).rating, None, set()
    for _ in range(25):
        new_rating = rng.choice([KEEP, None, -1, 0, 1, 2, 3, 4, 5])
        new_aes = rng.choice([KEEP, None, AesFields(rng.random() * 10, rng.random() * 100, "h", 3)])
        new_tags = rng.choice([None, [], rng.sample(["1 star", "2 stars", "a|b", "ü & <x>"], 2)])
        write_sidecar(path, rating=new_rating, aes=new_aes, tags=new_tags)
        rating = rating if new_rating is KEEP else new_rating
        aes = aes if new_aes is KEEP else new_aes
        tags = tags if new_tags is None else set(new_tags)
        info = read_sidecar(path)
        assert (info.rating, info.aes is None, set(info.tags)) == (rating, aes is None, tags)
    write_sidecar(
        path,
        rating=int(original["Xmp.xmp.Rating"][1]),  # every sample has one
        aes=None,
        tags=[],
    )
    assert exiv2_properties(path) == original


def test_a_flood_of_elements_is_refused(tmp_path):
    path = tmp_path / "flood.xmp"
    path.write_bytes(
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF'
        b' xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description rdf:about="">'
        + b"<a/>" * (xmp.MAX_ELEMENTS + 1)
        + b"</rdf:Description></rdf:RDF></x:xmpmeta>"
    )
    assert_refused_untouched(path, match="elements")


def test_a_sidecar_holds_nothing_only_when_no_property_of_anyone_is_left(tmp_path):
    path = tmp_path / "IMG_1.jpg.xmp"
    write_sidecar(path, rating=3, aes=AesFields(score=5.0, percentile=50.0, head_id="h", stars=3), tags=["3 stars"])
    assert not read_sidecar(path).holds_nothing
    write_sidecar(path, rating=None, aes=None, tags=[])  # ours taken out again: a bare skeleton
    assert read_sidecar(path).holds_nothing
    path.write_bytes(path.read_bytes().replace(b'rdf:about=""', b'rdf:about="" photoshop:City="Oslo" xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/"'))
    assert not read_sidecar(path).holds_nothing  # someone else's value
    for source in DARKTABLE_SIDECARS:
        assert not read_sidecar(source).holds_nothing, source.name
