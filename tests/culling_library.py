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

The second library (LibrarySpec.second(), from plasma-workspace-wallpapers) adds what the
first lacks, each case planted by the plan and recorded in truth.json (a photo's "case"),
never read back from what aes-index says:

* exports: each burst's sharp frame exported into exports/ (half size, JPEG quality 72, no
  EXIF): a copy of the keeper's frame, which must not become the keeper;
* duplicate sets of other copies: a quality-70 backup that kept the EXIF, a PNG export, a
  half-size export, a byte copy;
* RAW+JPEG: singles and one burst shot as a DNG (an RGB preview and the Bayer mosaic,
  culling_camera.write_dng) beside its JPEG, same name, same capture EXIF: the RAW keeps;
* brackets: -2/0/+2 EV, 0.3 s apart, one camera, ExposureBiasValue per frame: kept whole;
* a shallow depth of field (a sharp subject, a Gaussian-blurred surround), as singles and
  in bursts (whose other frames are defocused or shaken as a whole);
* lamps and bokeh discs (white blobs on 5-15 % of a correctly exposed frame), as singles and
  in bursts: not overexposed;
* smooth frames: the package's nearly featureless photographs whole, then synthetic skies
  and scans (culling_camera.gradient_scene): not blurry;
* more defocused singles (8 and 16 px at 24 MP).

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
import io
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

RAW_CAMERA = Camera("RICOH IMAGING COMPANY, LTD.", "PENTAX K-3 Mark III", "1234567", "+02:00")  # writes DNG + JPEG

FORMAT = 2  # bump when what is built changes (2: a camera toe; underexposed singles at -4 EV)
SECOND_FORMAT = 2  # bump when what only the second library's cases build changes (keys the second library alone)
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
    # The second library's cases (see the module's docstring); at these defaults the library
    # is the first one, file for file, and its cache key is unchanged.
    exports: bool = False  # each burst's sharp frame exported into exports/ (half size, quality 72, no EXIF)
    copies: tuple[str, ...] = ()  # the copies a duplicate set draws from (COPIES); () the first library's five
    shallow_bursts: int = 0  # the first bursts: a shallow depth of field (sharp subject, soft surround)
    lamp_bursts: int = 0  # the next ones: lamps or bokeh in the frame, correctly exposed
    raw_bursts: int = 0  # the next ones: shot RAW+JPEG
    raw_pairs: int = 0  # singles shot RAW+JPEG
    brackets: int = 0  # -2/0/+2 EV, 0.3 s apart
    shallow_singles: int = 0
    lamp_singles: int = 0
    smooth_singles: int = 0  # the smooth photographs whole, then synthetic skies and scans
    dof_sigma: float = 16.0  # a shallow depth of field's surround: Gaussian sigma, px at 24 MP
    metering: bool = False  # each frame's EV is a step from what a meter gives its framing (culling_camera.meter)
    lamp_share: tuple[float, float] = (0.09, 0.18)  # planned share of lamps and bokeh discs (edges and overlaps: 5-15 % clip)

    def key(self) -> str:
        values = asdict(self)
        for name in _SECOND_FIELDS:  # at their defaults, the first library's key as it was
            if values[name] == _DEFAULTS[name]:
                del values[name]
        if any(name in values for name in _SECOND_FIELDS):
            values["second_format"] = SECOND_FORMAT
        text = json.dumps({"format": FORMAT, **values}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @classmethod
    def second(cls, **overrides) -> LibrarySpec:
        """The second library: what the first lacks (plasma-workspace-wallpapers' 8 photographs
        give 37 scenes with something in focus; these cases use all 37)."""
        values = dict(bursts=10, duplicate_sets=6, singles=10, clipped_singles=("over", "under"),
                      blurred_singles=(8.0, 16.0, 8.0, 16.0, 8.0, 16.0), exports=True,
                      copies=("backup_q70", "png", "export", "copy"), shallow_bursts=3, lamp_bursts=2, raw_bursts=1,
                      raw_pairs=3, brackets=3, shallow_singles=3, lamp_singles=2, smooth_singles=5, metering=True)
        return cls(**{**values, **overrides})


_SECOND_FIELDS = ("exports", "copies", "shallow_bursts", "lamp_bursts", "raw_bursts", "raw_pairs", "brackets",
                  "shallow_singles", "lamp_singles", "smooth_singles", "dof_sigma", "metering", "lamp_share")
_DEFAULTS = {name: getattr(LibrarySpec, name) for name in _SECOND_FIELDS}


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


def cached_library(cache: Path, spec: LibrarySpec, photos: list[Path], workers: int | None = None,
                   smooth: list[Path] = (), label: str = "") -> Truth:
    """The library for `spec` under cache/, built once (keyed by the spec), then reused;
    `label` names another package's library apart (the first one has none)."""
    folder = cache / f"culling-{label + '-' if label else ''}{spec.long_side}-{spec.key()}"
    if (folder / ".complete").is_file():
        return Truth.load(folder / "truth.json")
    if folder.exists():
        shutil.rmtree(folder)
    truth = build_library(folder, spec, photos, workers, smooth=smooth)
    (folder / ".complete").write_text("ok\n")
    return truth


def build_library(folder: Path, spec: LibrarySpec, photos: list[Path], workers: int | None = None,
                  name: str = "Photos", smooth: list[Path] = ()) -> Truth:
    """Write the library under folder/<name> and its ground truth to folder/truth.json.
    `smooth`: nearly featureless photographs for the smooth singles (spec.smooth_singles)."""
    root = folder / name
    plan = _Planner(spec, [str(p) for p in photos], root, [str(p) for p in smooth]).plan()
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
    def __init__(self, spec: LibrarySpec, photos: list[str], root: Path, smooth: list[str] = ()):
        self.spec, self.root = spec, root
        self.photos = list(photos) + list(smooth)  # scenes index the first ones; smooth singles the rest
        self.smooth = list(range(len(photos), len(photos) + len(smooth)))
        self.rng = np.random.default_rng(spec.seed)
        self.extra = np.random.default_rng([spec.seed, 2])  # the second library's cases draw here only
        self.second = any(getattr(spec, name) != _DEFAULTS[name] for name in _SECOND_FIELDS)
        self.truth = Truth(root=str(root), spec=asdict(spec))
        self.jobs: list[dict] = []
        self.clock = START
        self.counters = {c.serial: 1000 * (i + 1) for i, c in enumerate((*CAMERAS, RAW_CAMERA))}
        self.scenes = _scenes([_photo_name(photo) for photo in photos])

    def plan(self) -> _Plan:
        whole_scenes = [s for s in self.scenes if s[1] == "whole"]
        quadrant_scenes = [s for s in self.scenes if s[1] != "whole"]
        burst_scenes = (whole_scenes + quadrant_scenes)[: self.spec.bursts]
        rest = [s for s in quadrant_scenes if s not in burst_scenes]
        spec = self.spec
        later = (spec.raw_pairs, spec.brackets, spec.shallow_singles, spec.lamp_singles)
        needed = spec.bursts + spec.duplicate_sets + spec.singles + sum(later)
        if needed > len(self.scenes):
            raise ValueError(f"{needed} scenes wanted, {len(self.scenes)} available from {len(self.photos)} photos")
        for b, scene in enumerate(burst_scenes):
            self._burst(b, scene)
        for d, scene in enumerate(rest[: spec.duplicate_sets]):
            self._duplicate_set(d, scene)
        for s, scene in enumerate(rest[spec.duplicate_sets :][: spec.singles]):
            self._single(s, scene)
        more = iter(rest[spec.duplicate_sets + spec.singles :])
        for k in range(spec.raw_pairs):
            self._raw_pair(k, next(more))
        for k in range(spec.brackets):
            self._bracket(k, next(more))
        for k in range(spec.shallow_singles):
            self._case_single(k, next(more), "single_shallow", self._shallow())
        for k in range(spec.lamp_singles):
            self._case_single(k, next(more), "single_lamps", self._lamps())
        for k in range(spec.smooth_singles):
            self._smooth_single(k)
        return _Plan(self.truth, self.jobs)

    # the second library's cases

    def _burst_case(self, b: int) -> str:
        spec = self.spec
        bounds = np.cumsum([spec.shallow_bursts, spec.lamp_bursts, spec.raw_bursts])
        for case, bound in zip(("burst_shallow", "burst_lamps", "burst_raw"), bounds):
            if b < bound:
                return case
        return "burst"

    def _shallow(self) -> dict:
        rng = self.extra
        return {"dof_sigma": self.spec.dof_sigma, "subject_at": (float(rng.uniform(0.35, 0.65)), float(rng.uniform(0.4, 0.6))),
                "subject_radius": float(rng.uniform(0.22, 0.32))}

    def _lamps(self) -> dict:
        return {"lamps": float(self.extra.uniform(*self.spec.lamp_share)), "lamp_seed": int(self.extra.integers(2**31))}

    def _raw_pair(self, k: int, scene) -> None:
        """A single shot RAW+JPEG: IMGP1234.DNG beside IMGP1234.JPG; the RAW keeps."""
        cam = RAW_CAMERA
        self.clock += timedelta(hours=float(self.extra.uniform(2, 20)))
        taken = camera.hundredths(self.clock)
        shot = Shot(view=scene[2], ev=float(self.extra.choice(EV_STEPS[2:5])), noise_sigma=self.spec.noise_sigma,
                    seed=int(self.extra.integers(2**31)))
        jpeg = self._camera_file(cam, taken)
        raw = str(Path(jpeg).with_suffix(".DNG"))
        group = {"id": f"raw-pair-{k:02d}", "kind": "raw_pair", "members": [raw, jpeg], "original": raw}
        self._frame(jpeg, scene, shot, cam, taken, role="raw_pair", group=group["id"], sharp=True, blur={},
                    case="raw_pair", raw=raw)
        self.truth.photos[raw] = {**self.truth.photos[jpeg], "variant": "raw"}
        self.truth.groups.append(group)

    def _bracket(self, k: int, scene) -> None:
        """-2, 0, +2 EV, 0.3 s apart, one camera on a tripod (one framing), the bias in EXIF."""
        cam = CAMERAS[k % 2]
        self.clock += timedelta(hours=float(self.extra.uniform(2, 20)))
        group = {"id": f"bracket-{k:02d}", "kind": "bracket", "members": [], "lead": None}
        for n, ev in enumerate((-2.0, 0.0, 2.0)):
            if n:
                self.clock += timedelta(seconds=0.3)
            taken = camera.hundredths(self.clock)
            shot = Shot(view=scene[2], ev=ev, noise_sigma=self.spec.noise_sigma, seed=int(self.extra.integers(2**31)))
            rel = self._camera_file(cam, taken)
            self._frame(rel, scene, shot, cam, taken, role="bracket", group=group["id"], sharp=True, blur={},
                        case="bracket", exposure_bias=ev)
            group["members"].append(rel)
            if ev == 0:
                group["lead"] = rel
        self.truth.groups.append(group)

    def _case_single(self, k: int, scene, case: str, look: dict) -> None:
        cam = CAMERAS[k % 3]
        self.clock += timedelta(hours=float(self.extra.uniform(2, 20)))
        taken = camera.hundredths(self.clock)
        shot = Shot(view=scene[2], ev=float(self.extra.choice(EV_STEPS[2:5])), noise_sigma=self.spec.noise_sigma,
                    seed=int(self.extra.integers(2**31)), **look)
        rel = self._camera_file(cam, taken)
        self._frame(rel, scene, shot, cam, taken, role="single", group=None, sharp=True, blur={}, case=case)

    def _smooth_single(self, k: int) -> None:
        """A smooth photograph whole, or (once they are used) a synthetic sky or scan."""
        if k < len(self.smooth):
            scene = (self.smooth[k], "whole", WHOLE)
            gradient = None
        else:
            gradient = k - len(self.smooth)
            scene = (None, f"{'sky' if gradient % 2 else 'scan'}-{gradient}", View())
        self._case_single(k, scene, "single_smooth", {})
        if gradient is not None:
            rel = self.jobs[-1]["rel"]
            self.jobs[-1]["gradient"] = gradient
            self.truth.photos[rel].update(scene=f"synthetic/{scene[1]}", source_photo=f"synthetic {scene[1]}")

    # bursts

    def _burst(self, b: int, scene: tuple[int, str, View]) -> None:
        spec, rng = self.spec, self.rng
        cam = CAMERAS[b % 2]  # two bodies shoot the bursts; the third only singles
        adjacent = b % 4 == 3
        self.clock += timedelta(seconds=float(rng.uniform(2, 4))) if adjacent else timedelta(minutes=float(rng.uniform(20, 50)))
        frames = int(rng.integers(spec.frames[0], spec.frames[1] + 1))
        sharp = int(rng.integers(frames))
        evs = self._burst_exposures(frames, sharp)
        case = self._burst_case(b)
        look = {"burst_shallow": self._shallow, "burst_lamps": self._lamps}.get(case, dict)()
        if case == "burst_lamps":  # correctly exposed: the white is the lamps'
            evs = [float(self.extra.choice(EV_STEPS[2:5])) for _ in evs]
        if case == "burst_raw":
            cam = RAW_CAMERA
        group = {"id": f"burst-{b:02d}", "kind": "burst", "members": [], "sharp": None, "adjacent_to_previous": adjacent}
        for k in range(frames):
            if k:
                self.clock += timedelta(seconds=float(rng.uniform(0.1, 1.0)))
            taken = camera.hundredths(self.clock)
            blur = {} if k == sharp else self._blur()
            shot = Shot(view=_jitter(scene[2], rng), ev=evs[k], noise_sigma=spec.noise_sigma,
                        seed=int(rng.integers(2**31)), motion_axis=int(rng.integers(2)), **blur, **look)
            rel = self._camera_file(cam, taken)
            raw = str(Path(rel).with_suffix(".DNG")) if case == "burst_raw" else None
            export = f"exports/{Path(rel).stem}.jpg" if spec.exports and k == sharp else None
            self._frame(rel, scene, shot, cam, taken, role="burst", group=group["id"], sharp=k == sharp, blur=blur,
                        case=case if self.second else None, raw=raw, export=export)
            group["members"].append(rel)
            if raw:
                self.truth.photos[raw] = {**self.truth.photos[rel], "variant": "raw"}
                group["members"].append(raw)
            if export:
                self.truth.photos[export] = {**self.truth.photos[rel], "variant": "export", "exif": "none", "case": "export"}
                group["members"].append(export)
            if k == sharp:
                group["sharp"] = raw or rel  # the sharp camera original: the RAW of a RAW+JPEG frame
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
        if self.spec.copies:
            self._other_copies(d, scene, cam, taken, original, shot)
            return
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

    def _other_copies(self, d: int, scene, cam: Camera, taken: datetime, original: str, shot: Shot) -> None:
        """The second library's duplicate sets: 2-3 of spec.copies, always a quality-70 backup or a
        PNG export among them."""
        stem = Path(original).stem
        made = {
            "backup_q70": {"kind": "backup_q70", "rel": f"Backup/q70/{original}", "quality": 70, "exif": "original"},
            "png": {"kind": "png", "rel": f"Exports/png/{stem}.png", "format": "PNG", "exif": None},
            "export": {"kind": "export", "rel": f"exports/{stem}.jpg", "quality": 72, "exif": None, "resize": 0.5},
            "copy": {"kind": "copy", "rel": f"Backup/{original}"},
        }
        names = list(self.spec.copies)
        first = ("backup_q70", "png")[d % 2] if {"backup_q70", "png"} <= set(names) else names[0]
        others = [n for n in names if n != first]
        self.extra.shuffle(others)
        keep = [made[first]] + [made[n] for n in others[: int(self.extra.integers(1, 3))]]
        group = {"id": f"duplicate-{d:02d}", "kind": "duplicate", "members": [original] + [v["rel"] for v in keep],
                 "original": original}
        self.truth.groups.append(group)
        self.truth.photos[original] = self._facts(scene, shot, cam, taken, role="duplicate", group=group["id"], sharp=True,
                                                  blur={}, case="duplicate")
        for v in keep:
            self.truth.photos[v["rel"]] = {**self.truth.photos[original], "variant": v["kind"],
                                           "exif": v.get("exif", "original") or "none", "case": f"copy:{v['kind']}"}
        self.truth.photos[original]["variant"] = "original"
        self.jobs.append({"kind": "duplicates", "root": str(self.root), "photo": self.photos[scene[0]],
                          "shot": _shot_dict(shot), "long_side": self.spec.long_side, "original": original,
                          "quality": self.spec.quality, "exif": camera.exif_bytes(cam, taken), "variants": keep,
                          "editor_exif": None, "meter": self.spec.metering})

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
        prefix = {"NIKON CORPORATION": "DSC_", "FUJIFILM": "DSCF", "Canon": "IMG_", RAW_CAMERA.make: "IMGP"}[cam.make]
        return f"{taken:%Y}/{taken:%Y-%m-%d}/{prefix}{self.counters[cam.serial] % 10000:04d}.JPG"

    def _frame(self, rel, scene, shot, cam, taken, *, role, group, sharp, blur, clipped=None, case=None,
               exposure_bias=None, raw=None, export=None) -> None:
        self.truth.photos[rel] = self._facts(scene, shot, cam, taken, role=role, group=group, sharp=sharp, blur=blur,
                                             clipped=clipped, case=case)
        job = {"kind": "frame", "root": str(self.root), "rel": rel, "photo": self.photos[scene[0]] if scene[0] is not None else None,
               "shot": _shot_dict(shot), "long_side": self.spec.long_side, "quality": self.spec.quality,
               "exif": camera.exif_bytes(cam, taken, exposure_bias=exposure_bias), "meter": self.spec.metering}
        if raw:  # the DNG the camera wrote beside the JPEG: same frame, same capture EXIF
            job["raw"] = {"rel": raw, "camera": asdict(cam), "taken": taken.isoformat(), "exposure_bias": exposure_bias}
        if export:
            job["export"] = export
        if exposure_bias is not None:
            self.truth.photos[rel]["exposure_bias"] = exposure_bias
        self.jobs.append(job)

    def _facts(self, scene, shot, cam, taken, *, role, group, sharp, blur, clipped=None, case=None) -> dict:
        planted_blur = None
        if blur:
            (name, strength), = blur.items()
            planted_blur = {"kind": "defocus" if name == "defocus_sigma" else "motion", "strength": strength}
        source = self.photos[scene[0]] if scene[0] is not None else None
        facts = {
            "role": role, "group": group, "scene": f"{_photo_name(source)}/{scene[1]}",
            "source_photo": _photo_name(source, full=True), "camera": f"{cam.make} {cam.model} #{cam.serial}",
            "taken_at": taken.isoformat(timespec="milliseconds") + cam.offset, "ev": round(shot.ev, 3),
            "sharp": sharp, "planted_blur": planted_blur, "planted_clipping": clipped,
        }
        if case is not None:  # the second library names each photo's case
            facts["case"] = case
        if shot.dof_sigma:
            facts["shallow_dof"] = {"surround_sigma": shot.dof_sigma, "subject_at": list(shot.subject_at),
                                    "subject_radius": round(shot.subject_radius, 3)}
        if shot.lamps:
            facts["lamps_share_planned"] = round(shot.lamps, 3)
        return facts


def _photo_name(path: str | None, full: bool = False) -> str:
    """A photograph's name: its file's stem, or its folder's for wallpapers kept as
    <Name>/contents/images/2560x1600.jpg."""
    if path is None:
        return "synthetic"
    p = Path(path)
    name = p.parents[2].name if p.parent.name == "images" and p.parent.parent.name == "contents" else None
    if name:
        return f"{name}/{p.name}" if full else name
    return p.name if full else p.stem


# Quadrants of mate-backgrounds' macro photographs that hold nothing in focus (the source's
# own bokeh or a soft petal, judged by eye on a contact sheet of all 48): no camera frame of
# them is a "sharp" frame, so no scene is made of them.
# The same for plasma-workspace-wallpapers' photographs (the second library; judged by eye on
# a contact sheet of its 32): a soft sky over a lens-blurred shore, bokeh round a blurred
# leaf, a blue sky with nothing in it.
NOTHING_IN_FOCUS = frozenset({"Aqua/q0", "Garden/q0", "FreshFlower/q1", "BytheWater/q0", "FallenLeaf/q0", "Kite/q3"})


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
    if job["photo"] is None:
        scene = camera.gradient_scene(job["gradient"])
    else:
        with Image.open(job["photo"]) as opened:
            scene = camera.scene_of(opened.convert("RGB"))
    shot = dict(job["shot"])
    shot["subject_at"] = tuple(shot["subject_at"])
    shot["view"] = View(**shot["view"])
    metered = {}
    if job.get("meter"):  # the planted EV is a step from the meter's exposure of this framing
        offset = camera.meter(scene, shot["view"])
        shot["ev"] += offset
        metered = {"metered_ev": round(offset, 3)}
    frame = camera.render(scene, Shot(**shot), job["long_side"])
    root = Path(job["root"])
    if job["kind"] == "frame":
        _write(root / job["rel"], camera.jpeg_bytes(frame, job["quality"], job["exif"]))
        measured = {job["rel"]: {**_clipped_shares(frame), **metered}}
        if "raw" in job:
            raw = job["raw"]
            path = root / raw["rel"]
            path.parent.mkdir(parents=True, exist_ok=True)
            camera.write_dng(path, frame, Camera(**raw["camera"]), datetime.fromisoformat(raw["taken"]), raw["exposure_bias"])
            measured[raw["rel"]] = dict(measured[job["rel"]])
        if "export" in job:  # the photographer's export of the burst's best frame
            small = frame.resize((frame.width // 2, frame.height // 2), Image.Resampling.LANCZOS)
            _write(root / job["export"], camera.jpeg_bytes(small, 72, None))
            measured[job["export"]] = {**_clipped_shares(small), **metered}
        return measured
    original = camera.jpeg_bytes(frame, job["quality"], job["exif"])
    _write(root / job["original"], original)
    measured = {job["original"]: {**_clipped_shares(frame), **metered}}
    for variant in job["variants"]:
        if variant["kind"] == "copy":
            _write(root / variant["rel"], original)
            measured[variant["rel"]] = measured[job["original"]]
            continue
        image = _variant_image(frame, variant)
        exif = {"original": job["exif"], "editor": job["editor_exif"], None: None}[variant["exif"]]
        if variant.get("format") == "PNG":
            out = io.BytesIO()
            image.save(out, "PNG", compress_level=1)
            _write(root / variant["rel"], out.getvalue())
        else:
            _write(root / variant["rel"], camera.jpeg_bytes(image, variant["quality"], exif))
        measured[variant["rel"]] = {**_clipped_shares(image), **metered}
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
