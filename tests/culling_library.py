"""A photographer's library with a known answer, made from real photographs, for culling.

    build_library(folder, LibrarySpec(...)) -> Truth

From the nature photographs of Debian's mate-backgrounds (culling_photos.py) it writes what a
shoot and its aftermath leave on disk, and the ground truth beside it (truth.json):

* bursts: 3-8 frames of one scene by one camera, 0.1-1 s apart, each reframed a little
  (shifted and cropped by 1-4 %), at its own exposure (-1..+1 EV, in thirds), with its own
  sensor noise; exactly one frame is sharp, every other one is defocused (Gaussian) or shaken
  (straight motion) at one of the planted strengths. The sharp frame is often not the best
  exposed one, so a keeper rule that follows brightness or contrast picks wrong. Every fourth
  burst starts 2-4 s after the previous one ends, same camera, another scene: close in time,
  not alike, not one group.
* duplicate sets: an original camera frame and what becomes of it: re-encoded at another JPEG
  quality (EXIF kept), resized for the web (EXIF stripped), lightly cropped (3-8 %) and
  re-encoded, lightly edited (contrast and colour) with other EXIF (an editor's: no camera,
  the export's time), a byte-identical copy in a backup folder.
* singles: other scenes by the same cameras, hours or days apart; some planted with clipped
  exposure (+2 or +2.5 EV: highlights; -4 EV: shadows, crushed by the camera's tone curve)
  or with blur.

Scenes: each photograph gives one scene of its whole frame and four of its disjoint quadrants
(a quadrant is a different picture, though the same subject: a hard negative). Bursts use the
whole-frame scenes first (they carry the finest detail, which the keeper must see), duplicate
sets and singles the quadrants. truth.json records every file's scene and source photo, so
a benchmark can tell a merge of two quadrants of one photo from a merge of unrelated pictures.

Blur strengths are in pixels of a 24 MP frame (culling_camera.py) whatever the size built:
`long_side` 1600 for tests, 6000 (24 MP) for the benchmark.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

import culling_camera as camera
from culling_camera import Camera, Shot, View

FORMAT = 2  # bump when what is built changes (2: a camera toe; underexposed singles at -4 EV)
CAMERAS = (
    Camera("NIKON CORPORATION", "NIKON Z 6_2", "3012345", "+02:00"),
    Camera("FUJIFILM", "X-T4", "1AB23456", "+01:00"),
    Camera("Canon", "Canon EOS R6", "082021001234", "-04:00"),
)
EDITOR = "darktable 4.6.1"  # the Software of an edited export
START = datetime(2024, 6, 1, 7, 30, 0)
EV_STEPS = (-1.0, -2 / 3, -1 / 3, 0.0, 1 / 3, 2 / 3, 1.0)
QUADRANTS = (View(0.0, 0.0, 0.5), View(0.5, 0.0, 0.5), View(0.0, 0.5, 0.5), View(0.5, 0.5, 0.5))
WHOLE = View(0.03, 0.03, 0.94)  # the whole frame, less a margin that burst shifts move within


@dataclass(frozen=True)
class LibrarySpec:
    long_side: int = 1600
    bursts: int = 12
    duplicate_sets: int = 6
    singles: int = 12
    frames: tuple[int, int] = (3, 8)  # frames per burst, inclusive
    defocus: tuple[float, ...] = (4.0, 8.0, 16.0)  # Gaussian sigma, px at 24 MP
    motion: tuple[float, ...] = (16.0, 32.0, 64.0)  # straight shake, px at 24 MP
    clipped_singles: tuple[str, ...] = ("over", "under", "over", "under")  # planted among the singles
    blurred_singles: tuple[float, ...] = (8.0, 16.0)  # defocus planted among the singles
    quality: int = 92
    noise_sigma: float = 4.0
    seed: int = 0

    def key(self) -> str:
        text = json.dumps({"format": FORMAT, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass
class Truth:
    """What a perfect cull says about the library: truth.json."""

    root: str
    spec: dict
    photos: dict[str, dict] = field(default_factory=dict)  # relative path -> facts planted
    groups: list[dict] = field(default_factory=list)  # {id, kind, members, sharp|original}

    def group_of(self) -> dict[str, str]:
        return {member: g["id"] for g in self.groups for member in g["members"]}

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> Truth:
        return cls(**json.loads(path.read_text()))


def cached_library(cache: Path, spec: LibrarySpec, photos: list[Path], workers: int | None = None) -> Truth:
    """The library for `spec` under cache/, built once (keyed by the spec), then reused."""
    folder = cache / f"culling-{spec.long_side}-{spec.key()}"
    if (folder / ".complete").is_file():
        return Truth.load(folder / "truth.json")
    if folder.exists():
        shutil.rmtree(folder)
    truth = build_library(folder, spec, photos, workers)
    (folder / ".complete").write_text("ok\n")
    return truth


def build_library(folder: Path, spec: LibrarySpec, photos: list[Path], workers: int | None = None,
                  name: str = "Photos") -> Truth:
    """Write the library under folder/<name> and its ground truth to folder/truth.json."""
    root = folder / name
    plan = _Planner(spec, [str(p) for p in photos], root).plan()
    workers = workers if workers is not None else min(4, os.cpu_count() or 1)
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            written = list(pool.map(_write_job, plan.jobs))
    else:
        written = [_write_job(job) for job in plan.jobs]
    for measured in written:
        for rel, facts in measured.items():
            plan.truth.photos[rel].update(facts)
    plan.truth.save(folder / "truth.json")
    return plan.truth


# --- the plan: which scene, shot and file each photo is ----------------------------------------


@dataclass
class _Plan:
    truth: Truth
    jobs: list[dict]


class _Planner:
    def __init__(self, spec: LibrarySpec, photos: list[str], root: Path):
        self.spec, self.photos, self.root = spec, photos, root
        self.rng = np.random.default_rng(spec.seed)
        self.truth = Truth(root=str(root), spec=asdict(spec))
        self.jobs: list[dict] = []
        self.clock = START
        self.counters = {c.serial: 1000 * (i + 1) for i, c in enumerate(CAMERAS)}
        self.scenes = _scenes([Path(photo).stem for photo in photos])

    def plan(self) -> _Plan:
        whole_scenes = [s for s in self.scenes if s[1] == "whole"]
        quadrant_scenes = [s for s in self.scenes if s[1] != "whole"]
        burst_scenes = (whole_scenes + quadrant_scenes)[: self.spec.bursts]
        rest = [s for s in quadrant_scenes if s not in burst_scenes]
        needed = self.spec.bursts + self.spec.duplicate_sets + self.spec.singles
        if needed > len(self.scenes):
            raise ValueError(f"{needed} scenes wanted, {len(self.scenes)} available from {len(self.photos)} photos")
        for b, scene in enumerate(burst_scenes):
            self._burst(b, scene)
        for d, scene in enumerate(rest[: self.spec.duplicate_sets]):
            self._duplicate_set(d, scene)
        for s, scene in enumerate(rest[self.spec.duplicate_sets :][: self.spec.singles]):
            self._single(s, scene)
        return _Plan(self.truth, self.jobs)

    # bursts

    def _burst(self, b: int, scene: tuple[int, str, View]) -> None:
        spec, rng = self.spec, self.rng
        cam = CAMERAS[b % 2]  # two bodies shoot the bursts; the third only singles
        adjacent = b % 4 == 3
        self.clock += timedelta(seconds=float(rng.uniform(2, 4))) if adjacent else timedelta(minutes=float(rng.uniform(20, 50)))
        frames = int(rng.integers(spec.frames[0], spec.frames[1] + 1))
        sharp = int(rng.integers(frames))
        evs = self._burst_exposures(frames, sharp)
        group = {"id": f"burst-{b:02d}", "kind": "burst", "members": [], "sharp": None, "adjacent_to_previous": adjacent}
        for k in range(frames):
            if k:
                self.clock += timedelta(seconds=float(rng.uniform(0.1, 1.0)))
            taken = camera.hundredths(self.clock)
            blur = {} if k == sharp else self._blur()
            shot = Shot(view=_jitter(scene[2], rng), ev=evs[k], noise_sigma=spec.noise_sigma,
                        seed=int(rng.integers(2**31)), motion_axis=int(rng.integers(2)), **blur)
            rel = self._camera_file(cam, taken)
            self._frame(rel, scene, shot, cam, taken, role="burst", group=group["id"], sharp=k == sharp, blur=blur)
            group["members"].append(rel)
            if k == sharp:
                group["sharp"] = rel
        self.truth.groups.append(group)

    def _burst_exposures(self, frames: int, sharp: int) -> list[float]:
        """Each frame's EV; in most bursts some blurred frame is brighter than the sharp one."""
        evs = [float(self.rng.choice(EV_STEPS)) for _ in range(frames)]
        if frames > 1 and self.rng.random() < 0.7:
            evs[sharp] = min(evs[sharp], -1 / 3)
            other = (sharp + 1 + int(self.rng.integers(frames - 1))) % frames
            evs[other] = max(evs[other], 1 / 3)
        return evs

    def _blur(self) -> dict:
        options = [("defocus_sigma", s) for s in self.spec.defocus] + [("motion_px", m) for m in self.spec.motion]
        name, strength = options[int(self.rng.integers(len(options)))]
        return {name: strength}

    # duplicates

    def _duplicate_set(self, d: int, scene: tuple[int, str, View]) -> None:
        rng = self.rng
        cam = CAMERAS[d % 3]
        self.clock += timedelta(hours=float(rng.uniform(3, 30)))
        taken = camera.hundredths(self.clock)
        original = self._camera_file(cam, taken)
        shot = Shot(view=scene[2], ev=float(rng.choice([-1 / 3, 0.0, 1 / 3])), noise_sigma=self.spec.noise_sigma,
                    seed=int(rng.integers(2**31)))
        stem = Path(original).stem
        variants = [
            {"kind": "reencoded", "rel": f"Exports/{stem}_q75.jpg", "quality": 75, "exif": "original"},
            {"kind": "resized", "rel": f"Exports/web/{stem}.jpg", "quality": 85, "exif": None,
             "resize": float(rng.uniform(0.4, 0.6))},
            {"kind": "cropped", "rel": f"Exports/{stem}_crop.jpg", "quality": 90, "exif": "original",
             "crop": float(rng.uniform(0.03, 0.08))},
            {"kind": "edited", "rel": f"Exports/edited/{stem}_edit.jpg", "quality": 88, "exif": "editor",
             "contrast": float(rng.uniform(1.1, 1.25)), "colour": float(rng.uniform(0.8, 1.25))},
            {"kind": "copy", "rel": f"Backup/{original}"},
        ]
        rng.shuffle(variants)
        keep = variants[: int(rng.integers(2, len(variants) + 1))]
        group = {"id": f"duplicate-{d:02d}", "kind": "duplicate", "members": [original] + [v["rel"] for v in keep],
                 "original": original}
        self.truth.groups.append(group)
        exif = camera.exif_bytes(cam, taken)
        self.truth.photos[original] = self._facts(scene, shot, cam, taken, role="duplicate", group=group["id"], sharp=True, blur={})
        for v in keep:
            self.truth.photos[v["rel"]] = {**self.truth.photos[original], "variant": v["kind"],
                                           "exif": v.get("exif", "original") or "none"}
        self.truth.photos[original]["variant"] = "original"
        self.jobs.append({"kind": "duplicates", "root": str(self.root), "photo": self.photos[scene[0]],
                          "shot": _shot_dict(shot), "long_side": self.spec.long_side, "original": original,
                          "quality": self.spec.quality, "exif": exif, "variants": keep,
                          "editor_exif": _editor_exif(taken + timedelta(days=int(rng.integers(1, 60))))})

    # singles

    def _single(self, s: int, scene: tuple[int, str, View]) -> None:
        rng, spec = self.rng, self.spec
        cam = CAMERAS[s % 3]
        self.clock += timedelta(hours=float(rng.uniform(2, 20)))
        taken = camera.hundredths(self.clock)
        clipped = spec.clipped_singles[s] if s < len(spec.clipped_singles) else None
        k = s - len(spec.clipped_singles)
        blur = {"defocus_sigma": spec.blurred_singles[k]} if 0 <= k < len(spec.blurred_singles) else {}
        ev = {"over": float(rng.choice([2.0, 2.5])), "under": -4.0, None: float(rng.choice(EV_STEPS[2:5]))}[clipped]
        shot = Shot(view=scene[2], ev=ev, noise_sigma=spec.noise_sigma, seed=int(rng.integers(2**31)), **blur)
        rel = self._camera_file(cam, taken)
        self._frame(rel, scene, shot, cam, taken, role="single", group=None, sharp=not blur, blur=blur, clipped=clipped)

    # files

    def _camera_file(self, cam: Camera, taken: datetime) -> str:
        self.counters[cam.serial] += 1
        prefix = {"NIKON CORPORATION": "DSC_", "FUJIFILM": "DSCF", "Canon": "IMG_"}[cam.make]
        return f"{taken:%Y}/{taken:%Y-%m-%d}/{prefix}{self.counters[cam.serial] % 10000:04d}.JPG"

    def _frame(self, rel, scene, shot, cam, taken, *, role, group, sharp, blur, clipped=None) -> None:
        self.truth.photos[rel] = self._facts(scene, shot, cam, taken, role=role, group=group, sharp=sharp, blur=blur, clipped=clipped)
        self.jobs.append({"kind": "frame", "root": str(self.root), "rel": rel, "photo": self.photos[scene[0]],
                          "shot": _shot_dict(shot), "long_side": self.spec.long_side, "quality": self.spec.quality,
                          "exif": camera.exif_bytes(cam, taken)})

    def _facts(self, scene, shot, cam, taken, *, role, group, sharp, blur, clipped=None) -> dict:
        planted_blur = None
        if blur:
            (name, strength), = blur.items()
            planted_blur = {"kind": "defocus" if name == "defocus_sigma" else "motion", "strength": strength}
        return {
            "role": role, "group": group, "scene": f"{Path(self.photos[scene[0]]).stem}/{scene[1]}",
            "source_photo": Path(self.photos[scene[0]]).name, "camera": f"{cam.make} {cam.model} #{cam.serial}",
            "taken_at": taken.isoformat(timespec="milliseconds") + cam.offset, "ev": round(shot.ev, 3),
            "sharp": sharp, "planted_blur": planted_blur, "planted_clipping": clipped,
        }


# Quadrants of mate-backgrounds' macro photographs that hold nothing in focus (the source's
# own bokeh or a soft petal, judged by eye on a contact sheet of all 48): no camera frame of
# them is a "sharp" frame, so no scene is made of them.
NOTHING_IN_FOCUS = frozenset({"Aqua/q0", "Garden/q0", "FreshFlower/q1"})


def _scenes(names: list[str]) -> list[tuple[int, str, View]]:
    """(photo index, name, view): the whole frames first, then quadrants photo by photo,
    less those with nothing in focus."""
    whole = [(p, "whole", WHOLE) for p in range(len(names))]
    quadrants = [(p, f"q{q}", QUADRANTS[q]) for q in range(4) for p in range(len(names))]
    return whole + [s for s in quadrants if f"{names[s[0]]}/{s[1]}" not in NOTHING_IN_FOCUS]


def _jitter(view: View, rng) -> View:
    """A burst frame's framing: cropped by 1-4 % and shifted within the scene's view."""
    width = view.width * (1 - float(rng.uniform(0.01, 0.04)))
    slack = view.width - width
    margin = min(view.left, view.top, 1 - view.left - view.width, 1 - view.top - view.width, 0.015)
    left = view.left + float(rng.uniform(-margin, slack + margin))
    top = view.top + float(rng.uniform(-margin, slack + margin))
    return View(left, top, width)


def _shot_dict(shot: Shot) -> dict:
    data = asdict(shot)
    data["view"] = asdict(shot.view)
    return data


def _editor_exif(exported: datetime) -> bytes:
    """An editor's export: its own Software and a DateTimeOriginal of the export, no camera."""
    import piexif

    zeroth = {piexif.ImageIFD.Software: EDITOR.encode()}
    exif = {piexif.ExifIFD.DateTimeOriginal: exported.strftime("%Y:%m:%d %H:%M:%S").encode()}
    return piexif.dump({"0th": zeroth, "Exif": exif})


# --- writing (in worker processes) -------------------------------------------------------------


def _write_job(job: dict) -> dict[str, dict]:
    """Render and write one job's files; returns what was measured on each (relative path ->
    facts: the frame's own clipped shares, so that an unplanted but clipped frame is known)."""
    with Image.open(job["photo"]) as opened:
        scene = camera.scene_of(opened.convert("RGB"))
    shot = job["shot"]
    frame = camera.render(scene, Shot(**{**shot, "view": View(**shot["view"])}), job["long_side"])
    root = Path(job["root"])
    if job["kind"] == "frame":
        _write(root / job["rel"], camera.jpeg_bytes(frame, job["quality"], job["exif"]))
        return {job["rel"]: _clipped_shares(frame)}
    original = camera.jpeg_bytes(frame, job["quality"], job["exif"])
    _write(root / job["original"], original)
    measured = {job["original"]: _clipped_shares(frame)}
    for variant in job["variants"]:
        if variant["kind"] == "copy":
            _write(root / variant["rel"], original)
            measured[variant["rel"]] = measured[job["original"]]
            continue
        image = _variant_image(frame, variant)
        exif = {"original": job["exif"], "editor": job["editor_exif"], None: None}[variant["exif"]]
        _write(root / variant["rel"], camera.jpeg_bytes(image, variant["quality"], exif))
        measured[variant["rel"]] = _clipped_shares(image)
    return measured


def _variant_image(frame: Image.Image, variant: dict) -> Image.Image:
    image = frame
    if "crop" in variant:  # a crop of `crop` of the width and height, off-centre
        dx, dy = int(frame.width * variant["crop"]), int(frame.height * variant["crop"])
        image = image.crop((dx // 3, dy * 2 // 3, frame.width - (dx - dx // 3), frame.height - (dy - dy * 2 // 3)))
    if "resize" in variant:
        image = image.resize((int(image.width * variant["resize"]), int(image.height * variant["resize"])), Image.Resampling.LANCZOS)
    if "contrast" in variant:
        image = ImageEnhance.Contrast(image).enhance(variant["contrast"])
        image = ImageEnhance.Color(image).enhance(variant["colour"])
    return image


def _clipped_shares(image: Image.Image) -> dict:
    grey = np.asarray(image.convert("L"))
    return {"clipped_highlights": round(float((grey >= 250).mean()), 4), "clipped_shadows": round(float((grey <= 5).mean()), 4)}


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
