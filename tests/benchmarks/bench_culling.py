"""Culling on real photographs, and what it costs. Prints JSON.

    python tests/benchmarks/bench_culling.py [--library mate|plasma|both] [--long-side 6000]
        [--bursts 12] [--duplicate-sets 6] [--singles 12] [--models tiny,vit-b-32] [--decode-n 24]
        [--cull-photos 100000] [--skip accuracy,decode,cull]

accuracy  A library built from the 12 nature photographs of Debian's mate-backgrounds
          (tests/culling_library.py: bursts of 3-8 camera-like frames with one sharp frame,
          the others defocused or shaken; duplicate sets: re-encoded, resized, cropped,
          edited exports and a backup copy; unrelated singles, some planted with clipped
          exposure or blur), at --long-side px (default 6000: 24 MP, as cameras write them).
          Each model: `aes-index rebuild`, `cull`, `groups --json` through the real CLI in a
          subprocess, then tests/culling_scoring.py against the ground truth: pairwise
          precision and recall of the grouping, keeper = sharp frame (bursts) / original
          (duplicates), detection of planted blur per kind and strength and of clipping,
          unrelated singles grouped, and the wrong and missed pairs named.
          --library plasma (or both, the default) adds a second library, made from the 8
          camera photographs of Debian's plasma-workspace-wallpapers and 3 smooth ones
          (LibrarySpec.second(): what the first lacks): each burst's sharp frame exported
          into exports/ (half size, quality 72, no EXIF); duplicate sets of quality-70 backups
          (EXIF kept), PNG exports, half-size exports and byte copies; RAW+JPEG pairs (a DNG
          with an RGB preview beside its JPEG) as singles and one burst; -2/0/+2 EV brackets;
          a shallow depth of field and lamps or bokeh discs, as singles and in bursts; smooth
          frames (fog, a dusk sky, synthetic skies and scans); defocused singles (8, 16 px).
          Both libraries are scored per case against the issue's targets (score_cases:
          keeper = the sharp camera original, false flags on clean frames, defocus >= 8 px
          flagged, brackets kept whole, RAW+JPEG keeper = the RAW, grouping precision and
          recall). --bursts, --duplicate-sets and --singles shape the first library only.
          Models: `tiny` (the tests' tiny open_clip config, random weights, as a local
          checkpoint) and `vit-b-32` (ViT-B-32 with aes-index's seeded random weights,
          `--pretrained random`, as bench_pipeline.py uses: it costs what the real one costs).
decode    Extra decode cost of the capture facts on 24 MP JPEGs (the camera frames of the
          6000 px library): `decode_image(path, 224)` against the same with a FactsProbe
          (what rebuild runs), inline on one core, CPU ms per photo (each file 3 times,
          interleaved, the minimum of each). Target: facts <= 25 % of the plain decode.
cull      `aes-index cull` over an index of --cull-photos photos whose facts were written
          through the store API (index.culling.put_facts; images and a head's scores as the
          other benchmarks write them): shoots of singles and bursts from 3 cameras over
          years, 3 % re-exported duplicates without EXIF, 64-bit signatures close within a
          burst. First cull (everything new), a second with nothing new, a third after 1,000
          new photos. Through the CLI in a subprocess, end to end. Target: <= 30 s.

Inputs are built once under $AES_BENCH_DIR (default /tmp/aes-bench) and reused: the 24 MP
library takes several minutes to build the first time (~100 frames, ~8 MB each). Figures only:
nothing here asserts. Run it alone: on a busy machine times are slower (the load is recorded).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import fields, replace
from pathlib import Path

ORIGINAL_ENV = dict(os.environ)
HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
REPO = TESTS.parent
sys.path[:0] = [str(REPO / "plugin"), str(TESTS), str(HERE)]

import _measure  # noqa: E402
import culling_photos  # noqa: E402
from culling_library import LibrarySpec, Truth, cached_library  # noqa: E402
from culling_scoring import score_cull  # noqa: E402

BENCH_DIR = Path(os.environ.get("AES_BENCH_DIR", "/tmp/aes-bench"))
TARGETS = {"precision": 0.98, "recall": 0.95, "keeper_is_sharp": 0.95, "singles_grouped": 0,
           "facts_share_of_decode": 0.25, "cull_100k_s": 30.0}
LIBRARIES = ("mate", "plasma")


def main() -> None:
    args = parse_args()
    skip = set(filter(None, args.skip.split(",")))
    env = subprocess_env()
    report: dict = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "machine": _measure.machine()}
    photos = culling_photos.mate_nature_photos()
    spec = LibrarySpec(long_side=args.long_side, bursts=args.bursts, duplicate_sets=args.duplicate_sets, singles=args.singles)
    libraries = LIBRARIES if args.library == "both" else (args.library,)
    if "accuracy" not in skip and "mate" in libraries:
        truth = _library(spec, photos, "the accuracy library")
        report["library"] = describe(truth)
        report["accuracy"] = {name: accuracy(truth, name, env) for name in args.models.split(",")}
    if "accuracy" not in skip and "plasma" in libraries:
        plasma, smooth = culling_photos.plasma_photos()
        truth = _library(LibrarySpec.second(long_side=args.long_side), plasma, "the second library", smooth=smooth, label="plasma")
        report["second_library"] = describe(truth, culling_photos.PLASMA)
        report["second_accuracy"] = {name: accuracy(truth, name, env, library="plasma") for name in args.models.split(",")}
    if "decode" not in skip:
        full = _library(replace(spec, long_side=6000), photos, "the 24 MP library")
        report["decode_facts"] = run_json([sys.executable, __file__, "_decode", *camera_frames(full, args.decode_n)], env)
    if "cull" not in skip:
        report["cull"] = time_cull(args.cull_photos, env)
    report["targets"] = check_targets(report)
    print(json.dumps(report, indent=1))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--library", choices=(*LIBRARIES, "both"), default="both",
                        help="mate: the first library (mate-backgrounds); plasma: the second (plasma-workspace-wallpapers); both (default)")
    parser.add_argument("--long-side", type=int, default=6000, help="frame size of the accuracy library (default 6000: 24 MP)")
    parser.add_argument("--bursts", type=int, default=12)
    parser.add_argument("--duplicate-sets", type=int, default=6)
    parser.add_argument("--singles", type=int, default=12)
    parser.add_argument("--models", default="tiny,vit-b-32", help="tiny, vit-b-32 (comma-separated)")
    parser.add_argument("--decode-n", type=int, default=24, help="24 MP photos whose decode is timed (default 24)")
    parser.add_argument("--cull-photos", type=int, default=100_000, help="photos in the index `cull` runs over (default 100000)")
    parser.add_argument("--skip", default="", help="comma-separated parts to leave out: accuracy, decode, cull")
    return parser.parse_args()


def subprocess_env() -> dict:
    """This checkout's aes_index, the benchmark's cache, no network, no user config."""
    env = {k: v for k, v in ORIGINAL_ENV.items() if not k.startswith("AES_INDEX_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "plugin"), str(TESTS), ORIGINAL_ENV.get("PYTHONPATH")]))
    env["AES_INDEX_CACHE_DIR"] = str(BENCH_DIR / "cache")
    env["XDG_CONFIG_HOME"] = str(BENCH_DIR / "config")
    env["HF_HUB_OFFLINE"] = "1"
    env["AES_INDEX_STABLE_SECONDS"] = "0"
    return env


def run_json(command: list[str], env: dict, ok=(0,)) -> dict:
    measured = _measure.run(command, env)
    if measured.returncode not in ok:
        raise SystemExit(f"failed ({measured.returncode}): {' '.join(map(str, command[:5]))} ...\n{measured.stderr[-3000:]}")
    result = json.loads(measured.stdout)
    if isinstance(result, dict):
        result["measured"] = measured.figures()
    return result


def _library(spec: LibrarySpec, photos: list[Path], what: str, smooth: list[Path] = (), label: str = "") -> Truth:
    started = time.perf_counter()
    truth = cached_library(BENCH_DIR, spec, photos, smooth=smooth, label=label)
    took = time.perf_counter() - started
    if took > 5:
        print(f"built {what} in {took:.0f} s ({Path(truth.root).parent})", file=sys.stderr, flush=True)
    return truth


def describe(truth: Truth, package=culling_photos.MATE) -> dict:
    from culling_scoring import case_of

    roles: dict[str, int] = {}
    cases: dict[str, int] = {}
    for facts in truth.photos.values():
        roles[facts["role"]] = roles.get(facts["role"], 0) + 1
        cases[case_of(facts)] = cases.get(case_of(facts), 0) + 1
    kinds: dict[str, int] = {}
    for group in truth.groups:
        kinds[group["kind"]] = kinds.get(group["kind"], 0) + 1
    spec = truth.spec
    return {"root": truth.root, "photos": len(truth.photos), "by_role": roles, "by_case": dict(sorted(cases.items())),
            "groups": len(truth.groups), "groups_by_kind": kinds,
            "long_side": spec["long_side"], "defocus_sigma_px_24mp": spec["defocus"], "motion_px_24mp": spec["motion"],
            "source": package.describe()}


def camera_frames(truth: Truth, n: int) -> list[str]:
    """n of the camera's own files (burst frames, originals, singles), spread over the library."""
    frames = sorted(p for p, f in truth.photos.items() if f.get("variant") in (None, "original"))
    n = min(n, len(frames))
    return [str(Path(truth.root) / frames[i * len(frames) // n]) for i in range(n)]


# --- accuracy ------------------------------------------------------------------------------


def model_options(name: str) -> list[str]:
    if name == "vit-b-32":
        return ["--model", "ViT-B-32", "--pretrained", "random"]
    if name == "tiny":
        config, checkpoint = tiny_model()
        return ["--model", str(config), "--pretrained", str(checkpoint)]
    raise SystemExit(f"unknown model {name!r}: tiny or vit-b-32")


def tiny_model() -> tuple[Path, Path]:
    """The tests' tiny open_clip config (conftest.TINY_CONFIG), random weights, saved once."""
    folder = BENCH_DIR / "tiny-model"
    config, checkpoint = folder / "tiny-clip.json", folder / "tiny-clip.safetensors"
    if not checkpoint.is_file():
        import open_clip
        import torch
        from conftest import TINY_CONFIG
        from safetensors.torch import save_file

        folder.mkdir(parents=True, exist_ok=True)
        config.write_text(json.dumps(TINY_CONFIG))
        open_clip.add_model_config(config)
        torch.manual_seed(1234)
        model = open_clip.create_model("tiny-clip")
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(checkpoint))
    return config, checkpoint


def accuracy(truth: Truth, model: str, env: dict, library: str = "mate") -> dict:
    db = BENCH_DIR / "work" / (f"culling-{model}.db" if library == "mate" else f"culling-{library}-{model}.db")
    db.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    options = [*model_options(model), "--db", str(db), "--json", "-q"]
    cli = [sys.executable, "-m", "aes_index.cli"]
    rebuild = run_json([*cli, "rebuild", truth.root, *options], env)
    cull = run_json([*cli, "cull", truth.root, *options], env)
    listed = run_json([*cli, "groups", *options], env)
    score = score_cull(truth, listed["groups"], listed["flagged"])
    score["rebuild_s"] = rebuild["measured"]["wall_s"]
    score["cull_s"] = cull["measured"]["wall_s"]
    score["cull_summary"] = {k: v for k, v in cull.items() if k != "measured"}
    return score


# --- decode cost (run in its own process: `bench_culling.py _decode FILE...`) ---------------


def decode_cost(paths: list[str]) -> dict:
    from aes_index.index.facts import FactsProbe
    from aes_index.index.decode import decode_image

    def plain(path):
        decode_image(path, 224)

    def with_facts(path):
        probe = FactsProbe()
        decode_image(path, 224, probe=probe)
        probe.facts()

    for path in paths[:2]:  # first calls import and warm up
        plain(path)
        with_facts(path)
    best = {"plain": [], "facts": []}
    for path in paths:
        times = {"plain": [], "facts": []}
        for _ in range(3):
            for name, call in (("plain", plain), ("facts", with_facts)):
                started = time.process_time()
                call(path)
                times[name].append(1000 * (time.process_time() - started))
        for name in best:
            best[name].append(min(times[name]))
    plain_ms, facts_ms = (sum(best[k]) / len(paths) for k in ("plain", "facts"))
    return {"photos": len(paths), "size": "6000x4000 JPEG, quality 92", "plain_decode_cpu_ms": round(plain_ms, 1),
            "decode_with_facts_cpu_ms": round(facts_ms, 1), "extra_cpu_ms": round(facts_ms - plain_ms, 1),
            "extra_share": round((facts_ms - plain_ms) / plain_ms, 3)}


# --- cull over a big index --------------------------------------------------------------------


def time_cull(photos: int, env: dict) -> dict:
    pristine = big_index(photos)
    db = BENCH_DIR / "work" / "cull-big.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    shutil.copy(pristine, db)
    command = [sys.executable, "-m", "aes_index.cli", "cull", "--db", str(db), "--json", "-q"]
    first = run_json(command, env)
    again = run_json(command, env)
    added = add_photos(db, 1000, seed=photos)
    third = run_json(command, env)
    keep = ("photos", "considered", "groups", "bursts", "duplicates", "grouped_photos", "formed", "joined", "seconds")
    return {
        "photos": photos, "first_cull_s": first["measured"]["wall_s"], "first": {k: first.get(k) for k in keep},
        "nothing_new_s": again["measured"]["wall_s"], "after_new_photos": added,
        "incremental_s": third["measured"]["wall_s"], "incremental": {k: third.get(k) for k in keep},
        "measured_first": first["measured"],
    }


def big_index(photos: int) -> Path:
    """An index of `photos` scored photos with capture facts (built once, then copied)."""
    from aes_index.index.facts import FACTS_VERSION

    from _library import built_before

    folder = BENCH_DIR / f"cull-{photos}"
    db = folder / "index.db"
    done = folder / f".complete-facts{FACTS_VERSION}"
    if built_before(folder, done):
        return db
    _fill_index(db, 0, photos, seed=0, new_head=True)
    from aes_index.index.store import Index

    with Index(db) as index:  # all in the main file: a copy of it is the whole index
        index.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    done.write_text("ok\n")
    return db


def add_photos(db: Path, count: int, seed: int) -> int:
    from aes_index.index.store import Index

    with Index(db) as index:
        start = index.db.execute("SELECT max(id) FROM images").fetchone()[0]
    _fill_index(db, start, count, seed=seed, new_head=False)
    return count


def _fill_index(db: Path, start: int, count: int, seed: int, new_head: bool) -> None:
    """Rows for photos start+1 .. start+count: images, a synthetic head's scores (as
    conftest.synthetic_scored_index writes them: raw SQL, in bulk), and capture facts
    through the store API."""
    import numpy as np

    from aes_index.index import store

    rng = np.random.default_rng(seed)
    ids = list(range(start + 1, start + count + 1))
    facts = synthetic_facts(rng, count, time_origin=1.5e9 + start * 300.0)
    now = store.utcnow()
    with store.Index(db) as index, index.transaction():
        index.db.conn.executemany(
            "INSERT INTO images (id, path, size, mtime_ns, fingerprint, status, first_seen, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            ((i, f"/photos/{i // 1000:04d}/IMG_{i:07d}.JPG", 8_000_000, i, f"{i:032x}", store.OK, now, now) for i in ids),
        )
        if new_head:
            index.add_roots(["/photos"])
            index.db.execute("INSERT INTO heads (id, hash, kind) VALUES ('synthetic', 'h', 'linear')")
            index.db.execute("INSERT INTO score_batches (id, head_id, head_hash) VALUES (1, 'synthetic', 'h')")
            index.db.execute("INSERT INTO runs (command, status, head_id) VALUES ('rebuild', 'done', 'synthetic')")
        index.db.conn.executemany(
            "INSERT INTO scores (image_id, head_id, score, batch) VALUES (?, 'synthetic', ?, 1)",
            [(i, float(s)) for i, s in zip(ids, rng.normal(5, 1, count))],
        )
        index.culling.put_facts(ids, facts)


def synthetic_facts(rng, count: int, time_origin: float) -> list:
    """What years of shooting look like to culling: shoots of singles and bursts (2-8 frames
    0.1-1 s apart) from 3 cameras, minutes between frames of a shoot, days between shoots;
    3 % exports without EXIF that duplicate an earlier photo. Signatures: random per picture,
    a few bits apart within a burst and between a photo and its export."""
    from aes_index.index.facts import CaptureFacts

    names = {f.name for f in fields(CaptureFacts)}
    cameras = [("NIKON Z 6_2", "3012345"), ("FUJIFILM X-T4", "1AB23456"), ("Canon EOS R6", "082021001234")]
    out, clock, made = [], time_origin, []
    while len(out) < count:
        if rng.random() < 0.03 and made:  # an export of an earlier photo
            out.append(_facts(CaptureFacts, names, None, None, None, _flip(rng, made[int(rng.integers(len(made)))], 3), rng))
            continue
        clock += float(rng.exponential(90.0)) if rng.random() > 0.01 else float(rng.uniform(1, 20)) * 86400
        camera = cameras[int(rng.integers(3))]
        base = int(rng.integers(0, 2**63))
        frames = int(rng.integers(2, 9)) if rng.random() < 0.3 else 1
        for _ in range(min(frames, count - len(out))):
            clock += float(rng.uniform(0.1, 1.0))
            signature = _flip(rng, base, int(rng.integers(0, 8)))
            made.append(signature)
            out.append(_facts(CaptureFacts, names, clock, camera[0], camera[1], signature, rng))
    return out


def _facts(cls, names: set[str], taken_at, camera, serial, signature: int, rng):
    values = {
        "taken_at": taken_at, "camera": camera, "serial": serial, "width": 6000, "height": 4000,
        "sharpness": float(rng.uniform(0.4, 0.9)), "clipped_highlights": float(rng.uniform(0, 0.05)),
        "clipped_shadows": float(rng.uniform(0, 0.05)), "signature": _signed(signature),
        "signature_inner": _signed(signature ^ int(rng.integers(0, 2**8))), "signature_core": _signed(signature ^ int(rng.integers(0, 2**8))),
    }
    if taken_at is not None:
        values["taken_at_text"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(taken_at))
    return cls(**{k: v for k, v in values.items() if k in names})


def _flip(rng, signature: int, bits: int) -> int:
    for bit in rng.choice(64, size=bits, replace=False):
        signature ^= 1 << int(bit)
    return signature


def _signed(value: int) -> int:
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >= 1 << 63 else value


# --- targets ---------------------------------------------------------------------------------


def check_targets(report: dict) -> dict:
    checks = {}
    for model, score in report.get("accuracy", {}).items():
        checks[f"{model}_precision"] = (score["pairwise"]["precision"], ">=", TARGETS["precision"])
        checks[f"{model}_recall"] = (score["pairwise"]["recall"], ">=", TARGETS["recall"])
        checks[f"{model}_keeper_is_sharp"] = (score["keeper"]["all_groups"], ">=", TARGETS["keeper_is_sharp"])
        checks[f"{model}_singles_grouped"] = (len(score["singles_grouped"]), "<=", TARGETS["singles_grouped"])
    for library, key in (("mate", "accuracy"), ("plasma", "second_accuracy")):  # the targets, per case
        for model, score in report.get(key, {}).items():
            for name, case in score["cases"].items():
                if case["value"] is None or "target" not in case:  # not held here (the first has no brackets), or no target
                    continue
                op, target = case["target"].split()
                checks[f"{library}_{model}_{name}"] = (case["value"], op, float(target))
    if "decode_facts" in report:
        checks["facts_share_of_decode"] = (report["decode_facts"]["extra_share"], "<=", TARGETS["facts_share_of_decode"])
    if "cull" in report and report["cull"]["photos"] >= 100_000:
        checks["cull_100k_s"] = (report["cull"]["first_cull_s"], "<=", TARGETS["cull_100k_s"])
    return {
        name: {"value": value, "target": f"{op} {target}",
               "met": value is not None and (value >= target if op == ">=" else value <= target)}
        for name, (value, op, target) in checks.items()
    }


if __name__ == "__main__":
    if sys.argv[1:2] == ["_decode"]:
        print(json.dumps(decode_cost(sys.argv[2:])))
    else:
        started = time.perf_counter()
        main()
        print(f"benchmark took {time.perf_counter() - started:.0f} s", file=sys.stderr)
