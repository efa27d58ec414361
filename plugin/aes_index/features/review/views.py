"""What the review page shows, read from the library: run on the index's own thread
(server.IndexThread), each function taking the open Library first and returning plain,
JSON-ready data. Photos are named by their index id; a path never comes from the page.

The data comes from the features that own it, never computed again here: groups and
flags from culling (`load_groups`, `load_flagged`), the gallery's rows from the static
gallery's own functions (report.py), a person's rating and pick from decisions.py.
"""

from __future__ import annotations

import os
from pathlib import Path

from ...errors import NothingScored
from ...paths import inside_roots
from ..culling.model import PAIR
from ..report import readable_path

GALLERY_THUMB = 256  # the gallery's cells ask the image route for this size


def head_of(library) -> str | None:
    """The head whose scores are shown: the settings' --head, else the active one; None
    before anything was scored (sharpness alone then decides keepers)."""
    from ...model.head_choice import scored_head_id

    try:
        return scored_head_id(library.index, library.settings.head)
    except NothingScored:
        return None


def session(library, under=()) -> dict:
    index = library.index
    return {
        "library": [_text(readable_path(root)) for root in (under or index.roots())],
        "db": _text(readable_path(str(index.path))),
        "head": head_of(library),
        "culled": index.culling.was_culled(),
        "separator": os.sep,
    }


# --------------------------------------------------------------------------- groups


def group_list(library, under=()) -> dict:
    """Every group `cull` made (not a RAW+JPEG pair: one photo), in the index's order,
    read without the members' facts; and the first group whole, so that the page shows
    it from one answer."""
    index = library.index
    if under:
        paths = {image_id: fact["path"] for image_id, fact in index.images.facts().items()}
        rows = [(row.id, row.kind, len(row.members)) for row in index.culling.groups()
                if any(inside_roots(paths.get(i, ""), under) for i in row.members)]  # fmt: skip
    else:
        rows = index.culling.group_sizes()
    listed = [{"id": gid, "kind": kind, "size": size} for gid, kind, size in rows if kind != PAIR and size >= 2]
    return {
        "culled": index.culling.was_culled(),
        "head": head_of(library),
        "groups": listed,
        "first": group(library, listed[0]["id"]) if listed else None,
    }


def group(library, group_id: int) -> dict | None:
    """One group as culling loads it (keeper first, with the keeper a person's choice
    makes now), each member with its facts and the person's current rating and pick."""
    group, facts = _load_group(library, group_id)
    if group is None:
        return None
    return {
        "id": group.id, "kind": group.kind, "reason": group.reason, "chosenBy": group.chosen_by,
        "keeper": group.keeper_id,
        "members": [_photo_entry(library, member, facts.get(member.image_id, {}), group) for member in group.members],
    }


def _load_group(library, group_id: int):
    from ..culling.cull import load_groups

    index = library.index
    (row,) = index.culling.groups(ids=[group_id]) or (None,)
    if row is None or row.kind == PAIR:
        return None, {}
    head = head_of(library)
    facts = index.culling.member_facts(row.members, head)
    found = load_groups(index, head, facts=facts, ids=[group_id])
    return (found[0] if found else None), facts


# --------------------------------------------------------------------------- one photo


def photo(library, image_id: int) -> dict | None:
    """A photo's detail: its group's view of it when it is in one, else its own flags."""
    from ..culling.cull import load_flagged

    image = _image(library, image_id)
    if image is None:
        return None
    index = library.index
    group_id = index.culling.memberships().get(image_id)
    if group_id is not None:
        group, facts = _load_group(library, group_id)
        member = next((m for m in group.members if m.image_id == image_id), None) if group else None
        if member is not None:
            return {**_photo_entry(library, member, facts[image_id], group), "group": group.id}
    facts = index.culling.member_facts([image_id], head_of(library))
    if image_id in facts:
        flagged = load_flagged(index, head_of(library), facts=facts, groups=[], pairs=[])
        member = flagged[0] if flagged else _plain_member(facts[image_id])
        return {**_photo_entry(library, member, facts[image_id], None), "group": None}
    return {**_unmeasured_entry(library, image), "group": None}


def _plain_member(fact: dict):
    from ..culling.model import Member

    return Member(fact["image_id"], fact["path"], fact.get("score"), fact.get("sharpness"), fact.get("clipped_highlights"),
                  fact.get("clipped_shadows"), fact.get("taken_at_text"))  # fmt: skip


def _image(library, image_id: int) -> dict | None:
    """The index's row of a present photo inside the library's roots, else None."""
    from sqlite_utils.db import NotFoundError

    try:
        image = library.index.images.get(image_id)
    except NotFoundError:
        return None
    if image.get("status") not in ("new", "ok") or not inside_roots(image["path"], library.index.roots()):
        return None
    return image


def path_of(library, image_id: int) -> str | None:
    image = _image(library, image_id)
    return None if image is None else image["path"]


def _photo_entry(library, member, fact: dict, group) -> dict:
    clipped = (member.clipped_highlights, member.clipped_shadows)
    return {
        **_file_entry(library, member.image_id, member.path),
        "score": member.score,
        "sharpness": member.sharpness,
        "edgeWidth": member.edge_width,
        "clipped": None if None in clipped else list(clipped),
        "blown": member.blown_highlights,
        "flags": list(member.flags),
        "keeper": group is not None and member.image_id == group.keeper_id,
        "taken": member.taken_at,
        "camera": fact.get("camera"),
        "exposureBias": fact.get("exposure_bias"),
        "pixels": [fact.get("width"), fact.get("height")],
        "encoding": fact.get("encoding"),
        "quality": fact.get("quality"),
        "software": fact.get("software"),
    }


def _unmeasured_entry(library, image: dict) -> dict:
    """A photo without capture facts (indexed before culling, or not decodable)."""
    score = None
    head = head_of(library)
    if head:
        found = library.index.scores.of(image["id"], head)
        score = found[0] if found else None
    return {**_file_entry(library, image["id"], image["path"]), "score": score, "flags": [], "keeper": False}


def _file_entry(library, image_id: int, path: str) -> dict:
    try:
        stat = os.stat(path)
        size, version = stat.st_size, stat.st_mtime_ns
    except OSError:
        size = version = None
    folder, name = os.path.split(path)
    return {
        "id": image_id, "name": _text(name), "folder": _text(readable_path(folder)), "fullPath": path,
        "fileSize": size, "version": version, "state": current_state(library, path),
    }


# --------------------------------------------------------------------------- decisions


def current_state(library, path: str) -> dict | None:
    from .decisions import current

    return current(library, path).as_dict()


def decide(library, image_id: int, action: str, value, seen) -> tuple[int, dict] | None:
    """(200, the decision) or (409, the place's state now) when it changed since shown."""
    from . import decisions

    path = path_of(library, image_id)
    if path is None:
        return None
    try:
        decision = decisions.decide(library, path, action, value=value, seen=seen)
    except decisions.ChangedSinceShown as exc:
        return 409, {"error": str(exc), "state": _as_dict(exc.state), "id": image_id}
    return 200, {"decision": decision.as_dict(), "id": image_id, "state": current_state(library, path)}


def undo(library, decision) -> dict:
    from . import decisions

    return {"undone": _as_dict(decisions.undo(library, decision))}


# --------------------------------------------------------------------------- the gallery


def gallery(library, under=()) -> dict:
    """The static gallery's data (report.page_data: sort by aesthetic, stars, filters,
    groups), whose thumbnails the page asks of the image route by id instead of files."""
    from ..report import Thumbnails, load_culling, load_photos, page_data
    from ..stars import RatingPolicy

    head = head_of(library)
    if head is None:
        raise NothingScored()
    settings = library.settings
    policy = RatingPolicy.parse(settings.policy, settings.cuts, settings.reject_below)
    photos = load_photos(library.index, head)
    if under:
        photos = [photo for photo in photos if inside_roots(photo.path, under)]
    thumbs = Thumbnails(Path(os.devnull), GALLERY_THUMB)  # names only; none is made
    return page_data(library.index, head, photos, thumbs, policy, "", load_culling(library.index, head))


# --------------------------------------------------------------------------- search


def search(library, text: str, n: int, rank: str) -> dict:
    from ..search import search as find

    return {"query": text, "rank": rank, "results": _hits(library, find(library, text, n=n, rank=rank))}


def similar(library, image_id: int, n: int) -> dict | None:
    from ..search import similar as alike

    path = path_of(library, image_id)
    if path is None:
        return None
    return {"like": image_id, "results": _hits(library, alike(library, path, n=n))}


def _hits(library, hits) -> list[dict]:
    found = []
    for hit in hits:
        data = _as_dict(hit)
        path = data.get("path")
        image_id = data.get("image_id", data.get("id"))
        if image_id is None and path is not None:
            row = library.index.images.by_path(path)
            image_id = row["id"] if row else None
        if image_id is None:
            continue
        folder, name = os.path.split(path or "")
        found.append({**{k: v for k, v in data.items() if k != "path"}, "id": image_id, "name": _text(name),
                      "folder": _text(readable_path(folder))})  # fmt: skip
    return found


def _as_dict(value):
    if hasattr(value, "as_dict"):
        return value.as_dict()
    if isinstance(value, (list, tuple)):
        return [_as_dict(v) for v in value]
    return value


def _text(value: str | None) -> str | None:
    """Bytes that are not UTF-8 (surrogate escapes) as U+FFFD: JSON is UTF-8."""
    return None if value is None else value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
