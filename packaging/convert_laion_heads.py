#!/usr/bin/env python3
"""Convert the published LAION aesthetic predictors into aes-index heads (reproducibly).

    python packaging/convert_laion_heads.py [--upstream DIR] [--out DIR] [--check]

Reads the .pth files exactly as their repositories publish them (tests/fixtures/upstream-heads
holds byte-for-byte copies, see its PROVENANCE.md), refuses any whose sha256 differs from
the one recorded below, loads them only with torch.load(weights_only=True) (a .pth is a
pickle: the restricted loader refuses anything that would run code), and writes for each:

    plugin/aes_index/heads/<name>.safetensors   the head, with its metadata
    plugin/aes_index/heads/<name>.md            its model card
    plugin/aes_index/heads/LICENSE.<repo>.txt   the upstream licence it ships under

The same inputs always give the same bytes (no timestamps), so `--check` converts into a
scratch folder and fails if anything differs from what the package ships.

LAION v2 (improved-aesthetic-predictor) is five Linear layers with Dropout between them
and no activation: its published inference code has every ReLU commented out
(simple_inference.py, class MLP, in the same repository), and the state dict's layer indices
0, 2, 4, 6, 7 leave room for exactly one parameter-free module at 1, 3 and 5 (the
Dropouts, identity at inference) and none between 6 and 7. A chain of affine maps is one
affine map, so it folds (in float64) into a single 768 -> 1 linear head; tests/test_shipped_heads.py
checks the folded head against the original layer stack.
"""

from __future__ import annotations

import argparse
import filecmp
import hashlib
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_UPSTREAM = REPO / "tests" / "fixtures" / "upstream-heads"
DEFAULT_OUT = REPO / "plugin" / "aes_index" / "heads"

V2_REPO = "christophschuhmann/improved-aesthetic-predictor"
V2_COMMIT = "6934dd81792f086e613a121dbce43082cb8be85e"
V1_REPO = "LAION-AI/aesthetic-predictor"
V1_COMMIT = "6d122adad522ab246644d9dc1c6d7a3810ee255f"

# The v2 layer stack as published: (state-dict prefix, in, out), applied in this order.
V2_LAYERS = (("layers.0", 768, 1024), ("layers.2", 1024, 128), ("layers.4", 128, 64), ("layers.6", 64, 16), ("layers.7", 16, 1))

SCALE = "mean rating, about 1-10 (LAION aesthetic scale)"


@dataclass(frozen=True)
class Source:
    name: str  # the head's name: what --head and the index call it
    file: str  # in the upstream folder
    sha256: str
    repo: str
    commit: str
    path: str  # in the repository
    licence: str
    licence_file: str
    backbone: str  # aes-index backbone key the head reads
    input_dim: int
    title: str
    training_data: str
    published: dict  # {"ava": {...}} or {}
    notes: str


SOURCES = (
    Source(
        name="laion-v2-vit-l-14",
        file="laion-v2-sac+logos+ava1-l14-linearMSE.pth",
        sha256="21dd590f3ccdc646f0d53120778b296013b096a035a2718c9cb0d511bff0f1e0",
        repo=V2_REPO, commit=V2_COMMIT, path="sac+logos+ava1-l14-linearMSE.pth",
        licence="Apache-2.0", licence_file="LICENSE.improved-aesthetic-predictor.txt",
        backbone="ViT-L-14/openai", input_dim=768,
        title="LAION aesthetic predictor v2 (improved-aesthetic-predictor, sac+logos+ava1-l14-linearMSE)",
        training_data=(
            "mean ratings of SAC (Simulacra Aesthetic Captions: ratings of generated images), LAION-Logos "
            "and AVA (photographs rated by the dpchallenge.com community), MSE loss. LAION used it to build "
            "LAION-Aesthetics."
        ),
        published={"ava": {
            "srcc": 0.665, "plcc": 0.666,
            "source": "the pyiqa (IQA-PyTorch) benchmark on AVA",
            "caveat": "AVA is in its training data and its split is not AVA's official one: this figure may be optimistic",
        }},
        notes=(
            "Published as an MLP (768->1024->128->64->16->1) with Dropout between the layers and no activation "
            "(the ReLUs are commented out in its published inference code, simple_inference.py); folded here into the single "
            "affine map it computes at inference."
        ),
    ),
    Source(
        name="laion-v1-vit-b-32",
        file="laion-v1-sa_0_4_vit_b_32_linear.pth",
        sha256="c7b14cead230694acc7b9447974d3cad78003c72da032e402a303b6c2429e85f",
        repo=V1_REPO, commit=V1_COMMIT, path="sa_0_4_vit_b_32_linear.pth",
        licence="MIT", licence_file="LICENSE.aesthetic-predictor.txt",
        backbone="ViT-B-32/openai", input_dim=512,
        title="LAION aesthetic predictor v1 (aesthetic-predictor, sa_0_4_vit_b_32_linear)",
        training_data="ratings from SAC (Simulacra Aesthetic Captions): people's ratings of AI-generated images, not photographs",
        published={},
        notes="One linear layer as published; no AVA figure has been published for it.",
    ),
)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_state(path: Path, expected_sha256: str) -> dict[str, np.ndarray]:
    """The .pth's tensors as float64 arrays, after checking it is the published file."""
    import torch

    actual = sha256_of(path)
    if actual != expected_sha256:
        raise SystemExit(f"{path.name}: sha256 {actual} is not the published file's {expected_sha256}")
    state = torch.load(path, map_location="cpu", weights_only=True)  # never a full unpickle
    return {key: value.detach().to(torch.float64).numpy() for key, value in state.items()}


def fold_v2(state: dict[str, np.ndarray]) -> tuple[np.ndarray, float]:
    """The v2 stack y = L7(L6(L4(L2(L0 x)))) as one (weight, bias): weight = W7 W6 W4 W2 W0,
    bias = the stack applied to the zero vector. Refuses a state dict of any other shape,
    since a different stack (one with activations, say) would not fold."""
    expected = {f"{p}.{t}" for p, _, _ in V2_LAYERS for t in ("weight", "bias")}
    if set(state) != expected:
        raise SystemExit(f"unexpected v2 layers {sorted(state)}; expected {sorted(expected)}")
    weight, bias = np.eye(V2_LAYERS[0][1]), np.zeros(V2_LAYERS[0][1])
    for prefix, n_in, n_out in V2_LAYERS:
        w, b = state[f"{prefix}.weight"], state[f"{prefix}.bias"]
        if w.shape != (n_out, n_in) or b.shape != (n_out,):
            raise SystemExit(f"{prefix}: shape {w.shape}, expected {(n_out, n_in)}")
        weight, bias = w @ weight, w @ bias + b
    return weight.reshape(-1), float(bias[0])


def linear_v1(state: dict[str, np.ndarray], dim: int) -> tuple[np.ndarray, float]:
    if set(state) != {"weight", "bias"} or state["weight"].shape != (1, dim) or state["bias"].shape != (1,):
        raise SystemExit(f"unexpected v1 layer {({k: v.shape for k, v in state.items()})}; expected weight (1, {dim}), bias (1,)")
    return state["weight"].reshape(-1), float(state["bias"][0])


def convert(source: Source, upstream: Path):
    """The aes-index Head for one published file."""
    sys.path.insert(0, str(REPO / "plugin"))
    from aes_index.model.heads import Head

    state = load_state(upstream / source.file, source.sha256)
    weight, bias = fold_v2(state) if source.name.startswith("laion-v2") else linear_v1(state, source.input_dim)
    metadata = {
        "name": source.name,
        "kind": "linear",
        "backbone": source.backbone,
        "input_space": "projected",  # CLIP's projected image embedding divided by its L2 norm
        "input_dim": source.input_dim,
        "score_scale": SCALE,
        "score_range": [1, 10],
        "threshold": 5.0,  # AVA's binary cut, on the same 1-10 scale (aes-train evaluate)
        "title": source.title,
        "source": {
            "repository": f"https://github.com/{source.repo}", "commit": source.commit, "path": source.path,
            "sha256": source.sha256, "licence": source.licence, "licence_file": source.licence_file,
        },
        "data": {"training": source.training_data},
        "published": source.published,
        "conversion": {"script": "packaging/convert_laion_heads.py", "notes": source.notes},
    }
    tensors = {"weight": weight.astype(np.float32), "bias": np.array([bias], np.float32)}
    return Head(metadata, tensors)


def model_card(head, source: Source, head_path: Path) -> str:
    ava = source.published.get("ava")
    figure = (
        f"SRCC {ava['srcc']:.3f}, PLCC {ava['plcc']:.3f} on AVA ({ava['source']}). {ava['caveat'][0].upper() + ava['caveat'][1:]}."
        if ava else "None published on AVA."
    )
    return "\n".join([
        f"# {head.name}",
        "",
        f"{source.title}, converted into an aes-index head. Third-party weights: credit to their authors.",
        "",
        "| | |",
        "|---|---|",
        f"| source | [{source.repo}](https://github.com/{source.repo}) @ `{source.commit}`, `{source.path}` |",
        f"| licence | {source.licence} (`{source.licence_file}`, shipped beside this card) |",
        f"| sha256 of the published file | `{source.sha256}` |",
        f"| training data | {source.training_data} |",
        f"| backbone | `{source.backbone}` (open_clip; OpenAI's CLIP weights) |",
        f"| input | the image embedding after CLIP's projection, divided by its L2 norm ({source.input_dim}-d): aes-index's `projected` space |",
        f"| output | {SCALE}; higher is better |",
        f"| published figures | {figure} For comparison, the paper aes-index follows (Hentschel et al. 2022, ViT-B/32, AVA SRCC): zero-shot ensemble 0.539, linear probe 0.683, fine-tuned 0.731. |",
        f"| conversion | {source.notes} |",
        f"| aes-index head hash | `{head.hash}` |",
        f"| sha256 of {head_path.name} | `{sha256_of(head_path)}` |",
        "",
        "## Use",
        "",
        "```",
        f"aes-index rescore --model {source.backbone.split('/')[0]} --pretrained openai --head {head.name}",
        "```",
        "",
        "`aes-index doctor` says whether `--head auto` picks it for its backbone, and why.",
        "",
        "## Reproduce",
        "",
        "```",
        "python packaging/convert_laion_heads.py          # writes this folder's LAION heads",
        "python packaging/convert_laion_heads.py --check  # the shipped files are exactly what it writes",
        "```",
        "",
    ])


def write_all(upstream: Path, out: Path) -> list[Path]:
    sys.path.insert(0, str(REPO / "plugin"))
    from aes_index.model.heads import save_head

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for source in SOURCES:
        head = convert(source, upstream)
        path = save_head(head, out / f"{source.name}.safetensors")
        card = out / f"{source.name}.md"
        card.write_text(model_card(head, source, path), encoding="utf-8")
        licence = out / source.licence_file
        shutil.copyfile(upstream / source.licence_file, licence)
        written += [path, card, licence]
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", type=Path, default=DEFAULT_UPSTREAM, help="folder of the published .pth files and licences")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="heads folder to write (default: the package's)")
    parser.add_argument("--check", action="store_true", help="convert into a scratch folder; fail if --out differs")
    args = parser.parse_args(argv)
    if not args.check:
        for path in write_all(args.upstream, args.out):
            print(path)
        return 0
    with tempfile.TemporaryDirectory() as scratch:
        fresh = write_all(args.upstream, Path(scratch))
        differing = [p.name for p in fresh if not (args.out / p.name).is_file() or not filecmp.cmp(p, args.out / p.name, shallow=False)]
    for name in differing:
        print(f"differs: {name}", file=sys.stderr)
    return 1 if differing else 0


if __name__ == "__main__":
    sys.exit(main())
