"""Does a measure of clipped highlights tell an overexposed photo from one with lamps in it?
Prints JSON.

    python tests/benchmarks/bench_exposure.py [--long-side 1600]

Input: the 12 nature photographs of Debian's mate-backgrounds (tests/culling_photos.py) and
tests/fixtures/photos/evening-glow.jpg, each as a camera frame (3:2, `--long-side` px,
sensor noise, JPEG quality 92) clean, with light sources painted in (tests/exposure_scenes.py:
lamps, bokeh, a sun, glints; the photo is not overexposed) and blown (+2 EV, a blown sky, a
blown wall). Each file goes through the decode rebuild runs (`decode_image(path, 224,
probe=FactsProbe())`), and on the model's image it reports, per case (min, median, max over
the photos):

* `clipped`: the share of pixels at white (facts.clipping, the old overexposed measure);
* `blown`: the share of the frame in clipped areas of at least facts.BLOWN_AREA of it
  (facts.blown, the new one), and the same at other least areas (`blown_at`) to show the choice;
* `added_clipped`, `added_blown`: the same less the clean photo's own (mate's Aqua, a
  high-key water drop, clips 8 % of its frame in one area before anything is painted);
* `flagged_old` / `flagged_new`: how many photos keeper.flags_of calls overexposed under the
  old rule (clipped above 10 %) and the rule it has now.

A +2 EV push does not blow every photo (a dark one stays within range): `blown_photos`
lists, per blown kind, those whose old measure says more than 10 % of the pixels clip.
`cost_ms`: facts.blown on the model's images (median of 20 runs each, then the median and
maximum over the images), beside facts.clipping for scale.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parents[1] / "plugin"), str(HERE.parent), str(HERE)]

import culling_camera as camera  # noqa: E402
import culling_photos  # noqa: E402
import exposure_scenes as scenes  # noqa: E402
from _measure import machine  # noqa: E402
from aes_index.features.culling import keeper  # noqa: E402
from aes_index.features.culling.model import OVEREXPOSED, Member  # noqa: E402
from aes_index.index import facts  # noqa: E402
from aes_index.index.decode import decode_image  # noqa: E402

EVENING_GLOW = HERE.parent / "fixtures" / "photos" / "evening-glow.jpg"
LEAST_AREAS = (0.0025, 0.005, 0.01, 0.02)  # least areas shown beside the chosen one
OLD_OVEREXPOSED_ABOVE = 0.10


def frames(long_side: int) -> dict[str, Image.Image]:
    photos = [*culling_photos.mate_nature_photos(), EVENING_GLOW]
    found = {}
    for path in photos:
        with Image.open(path) as source:
            found[path.stem] = camera.scene_of(source.convert("RGB")).resize((long_side, round(long_side / 1.5)), Image.Resampling.LANCZOS)
    return found


def model_image(frame: Image.Image, seed: int) -> Image.Image:
    """What rebuild's decode gives the facts: the frame as a camera JPEG, decoded at 224."""
    noisy = camera.crush_blacks(camera.sensor_noise(np.asarray(frame), 4.0, seed))
    data = io.BytesIO()
    Image.fromarray(noisy).save(data, "JPEG", quality=92)
    path = Path("/tmp") / f"aes-bench-exposure-{seed}.jpg"
    path.write_bytes(data.getvalue())
    try:
        return decode_image(path, 224, probe=facts.FactsProbe())
    finally:
        path.unlink()


def measure(image: Image.Image) -> dict:
    clipped = facts.clipping(image)[0]
    member = Member(0, "", None, None, clipped, 0.0, None, blown_highlights=facts.blown(image))
    row = {"clipped": clipped, "blown": member.blown_highlights, "flagged_new": OVEREXPOSED in keeper.flags_of(member),
           "flagged_old": clipped > OLD_OVEREXPOSED_ABOVE}
    chosen = facts.BLOWN_AREA
    for least in LEAST_AREAS:
        facts.BLOWN_AREA = least
        row[f"blown_at_{least}"] = facts.blown(image)
    facts.BLOWN_AREA = chosen
    return row


def cost_ms(images: list[Image.Image]) -> dict:
    def median_ms(call, image) -> float:
        times = []
        for _ in range(20):
            start = time.perf_counter()
            call(image)
            times.append((time.perf_counter() - start) * 1000)
        return statistics.median(times)

    blown = [median_ms(facts.blown, image) for image in images]
    clipping = [median_ms(facts.clipping, image) for image in images]
    return {"blown_median": round(statistics.median(blown), 3), "blown_max": round(max(blown), 3),
            "clipping_median": round(statistics.median(clipping), 3), "image_size": list(images[0].size)}


def summarise(rows: list[dict]) -> dict:
    out = {}
    clean = {row["photo"]: row for row in rows if row["case"] == "clean"}
    for case in dict.fromkeys(row["case"] for row in rows):
        mine = [row for row in rows if row["case"] == case]
        numbers = [key for key in mine[0] if key.startswith(("clipped", "blown"))]
        out[case] = {key: _spread([row[key] for row in mine]) for key in numbers}
        for key in ("clipped", "blown"):  # what the paint or the push added to the photo's own clipping
            out[case][f"added_{key}"] = _spread([row[key] - clean[row["photo"]][key] for row in mine])
        out[case]["flagged_old"] = sum(row["flagged_old"] for row in mine)
        out[case]["flagged_new"] = sum(row["flagged_new"] for row in mine)
        out[case]["photos"] = len(mine)
        out[case]["flagged_new_photos"] = [row["photo"] for row in mine if row["flagged_new"]]
    return out


def _spread(values: list[float]) -> dict:
    return {"min": round(min(values), 4), "median": round(statistics.median(values), 4), "max": round(max(values), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--long-side", type=int, default=1600)
    args = parser.parse_args()
    rows, images = [], []
    for seed, (name, frame) in enumerate(frames(args.long_side).items()):
        cases = {"clean": frame}
        cases.update({kind: scenes.lit(frame, kind, seed) for kind in scenes.LIGHTS})
        cases.update({kind: scenes.blown(frame, kind, seed) for kind in scenes.BLOWN})
        for case, picture in cases.items():
            image = model_image(picture, seed)
            images.append(image)
            rows.append({"photo": name, "case": case, **measure(image)})
    blown_photos = {kind: [r["photo"] for r in rows if r["case"] == kind and r["clipped"] > OLD_OVEREXPOSED_ABOVE] for kind in scenes.BLOWN}
    report = {
        "machine": machine(),
        "rule": {"blown_area": facts.BLOWN_AREA, "blown_above": keeper.BLOWN_ABOVE, "clipped_above": keeper.OVEREXPOSED_ABOVE},
        "cases": summarise(rows),
        "blown_photos": blown_photos,
        "cost_ms": cost_ms(images[:: max(1, len(images) // 20)]),
        "rows": rows,
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
