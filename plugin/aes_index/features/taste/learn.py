"""`aes-index learn`: a personal head from the decisions a person already made, adopted as
this library's `--head auto` only when it ranks their held-out decisions better than the
active head; `aes-index learn undo` goes back (nothing is deleted: every learned head stays
on disk, the shipped head's scores are recomputed from the cached embeddings).

Why in aes-index and not `aes-train personal`: the engine must own the choice of
`--head auto` (model/head_choice.py reads the adoption this records in the index), and
the watcher (features/watch.py) retrains after new decisions; neither may import
aes_train (aes_train imports aes_index, never the reverse), and learning needs no more
than numpy over the cached embeddings. `aes-train personal` stays the researcher's
tool (stars from sidecars and EXIF, a head file to pass with --head).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ...config import Settings
from ...errors import IndexUnavailable, NothingScored
from ...model.head_choice import PERSONAL_META
from ...model.heads import Head, save_head
from . import model
from .sources import Places, find_choices

HEAD_NAME = "personal"
MIN_TO_TRAIN = 10  # fewer decisions than this: nothing is fitted at all
STAGES = ("decisions", "embeddings", "fit", "measure", "save")


@dataclass(frozen=True)
class LearnOptions:
    places: Places = Places()
    adopt: bool = True  # False: learn and measure, keep the head by name, never adopt
    seed: int = 0
    heads_dir: Path | None = None  # where head files go (default: $XDG_DATA_HOME/aes-index/heads)


def heads_dir() -> Path:
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "aes-index" / "heads"


def learn(index, settings: Settings, options: LearnOptions, progress=None) -> dict:
    """Find the decisions, fit, measure against the active head, save, adopt or not.
    Returns the report (README "Your taste" shows it)."""
    from ...index.runner import BackboneSession, Progress, rescore

    progress = progress or Progress()
    session = BackboneSession(index, settings)
    if session.id is None:
        raise IndexUnavailable(f"no embeddings from {session.key} yet: run `aes-index rebuild` first")
    active_id = index.runs.active_head_id()
    if active_id is None:
        raise NothingScored()
    progress.start("learn", total=len(STAGES))
    clock = _Clock()
    photos = index.embeddings.present_with(session.id)
    found = find_choices(index, photos, options.places)
    facts = index.culling.member_facts(None, None)
    groups = [group.members for group in index.culling.groups()]
    shoot = model.shoots({i: (path, (facts.get(i) or {}).get("taken_at")) for i, path in photos}, groups)
    decisions = model.build_decisions(found.choices, found.ours, shoot, groups, options.seed)
    report = {"backbone": session.key, "active_head": active_id, "photos": len(photos),
              "found": dict(found.by_source), "decisions": decisions.counts(), "adopted": False}
    report["seconds"] = clock.lap("decisions")
    progress.advance()
    if decisions.count < MIN_TO_TRAIN or (len(set(decisions.stars.values())) < 2 and not decisions.pairs):
        report["reason"] = (f"{decisions.count} decisions ({len(decisions.stars)} choices, {len(decisions.pairs)} pairs); "
                            f"learning needs at least {MIN_TO_TRAIN} and two different choices")
        progress.finish()
        return report

    active = index.scores.by_image(active_id)
    features = _features(index, session.id, decisions, active, options.seed)
    clock.lap("embeddings")
    progress.advance()
    train_shoots, test_shoots = model.split_by_shoot(decisions, seed=options.seed)
    train, test = decisions.part(train_shoots), decisions.part(test_shoots)
    fitted = model.fit(train, features, seed=options.seed)
    clock.lap("fit")
    progress.advance()
    test_ids = test.ids()
    personal = dict(zip(test_ids, fitted.scores(features, test_ids).tolist()))
    figures = model.compare(test, personal, active, options.seed)
    adopt, why = model.adoption(figures, decisions.count)
    report.update(held_out=figures, split={"train_shoots": len(train_shoots), "held_out_shoots": len(test_shoots)},
                  alpha=fitted.alpha)
    clock.lap("measure")
    progress.advance()
    # every decision (the train part's equations plus the held-out part's); the figures above are its estimate
    held_gram = model.gram(test, features)
    final = model.fit(decisions, features, fitted.alpha, normal=tuple(t + h for t, h in zip(fitted.normal, held_gram)))
    head = personal_head(final, features, session.key, report)
    path = save_head(head, (options.heads_dir or heads_dir()) / f"{HEAD_NAME}-{_safe(session.key)}-{head.hash}.safetensors")
    adopted = adopt and options.adopt
    reason = why if options.adopt or not adopt else f"{why} (kept, not adopted: --no-adopt)"
    record = {"path": str(path), "hash": head.hash, "name": head.name, "backbone": session.key, "adopted": adopted,
              "reason": reason, "decisions": decisions.count, "choices": len(found.choices), "held_out": figures,
              "learned": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    previous = index.get_meta(PERSONAL_META) or {}
    index.set_meta(PERSONAL_META, {**record, "history": [*previous.get("history", [])[-19:], _brief(record)]})
    report.update(head=str(path), adopted=adopted, reason=reason)
    clock.lap("refit and save")
    progress.advance()
    progress.finish()
    if adopted:
        report["rescored"] = _rescore(index, settings, rescore)
    return report


class _Clock:
    """Seconds per stage, for the report (and bench_learn.py)."""

    def __init__(self):
        import time

        self._now = time.perf_counter
        self._last = self._now()
        self.seconds: dict[str, float] = {}

    def lap(self, name: str) -> dict[str, float]:
        now = self._now()
        self.seconds[name] = round(now - self._last, 3)
        self._last = now
        return self.seconds


def new_choices(index, settings: Settings, places: Places) -> int:
    """How many more choices the sources hold than the last `learn` learned from (a reader
    of every place: the watcher asks at its periodic rescans only)."""
    from ...index.runner import BackboneSession

    session = BackboneSession(index, settings)
    if session.id is None:
        return 0
    found = find_choices(index, index.embeddings.present_with(session.id), places)
    return len(found.choices) - int((index.get_meta(PERSONAL_META) or {}).get("choices", 0))


def maybe_learn(index, settings: Settings, places: Places, after: int) -> dict | None:
    """The watcher's question: learn again when at least `after` choices are new since the
    last learn (`learn_after` in the settings; 0: never). The report, or None."""
    if after <= 0 or new_choices(index, settings, places) < after:
        return None
    return learn(index, settings, LearnOptions(places=places))


def undo(index, settings: Settings) -> dict:
    """Back to the shipped head: the personal head is no longer adopted (its file and record
    stay: `aes-index learn` measures again, `--head FILE` still uses it), and the library is
    scored again from the cached embeddings with what `--head auto` picks now."""
    from ...index.runner import rescore

    record = index.get_meta(PERSONAL_META)
    if not record or not record.get("adopted"):
        return {"undone": False, "reason": "no personal head is adopted: the shipped head scores already",
                "head": record.get("path") if record else None}
    index.set_meta(PERSONAL_META, {**record, "adopted": False, "reason": "undone by `aes-index learn undo`",
                                   "undone": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    return {"undone": True, "head": record["path"], "rescored": _rescore(index, settings, rescore)}


def _rescore(index, settings: Settings, rescore) -> dict:
    if settings.head not in ("auto", "", None):
        return {"skipped": f"--head {settings.head} is set, so `--head auto` is not what scores this library"}
    summary = rescore(index, settings)
    return {"head": summary.head, "scored": summary.scored}


def _brief(record: dict) -> dict:
    figures = record["held_out"]
    return {k: record[k] for k in ("path", "hash", "adopted", "decisions", "learned")} | {
        "gain": figures.get("gain"), "personal_pairwise": figures.get("personal_pairwise")}


def _safe(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", key)


def _features(index, backbone_id: int, decisions: model.Decisions, active: dict[int, float], seed: int) -> model.Features:
    """Standardised features of the decided photos, and the active head distilled from a
    sample of up to DISTIL_ROWS scored photos: cached embeddings only, nothing decoded."""
    rng = np.random.default_rng(seed)
    scored = np.array(sorted(active), dtype=np.int64)
    sample = scored if len(scored) <= model.DISTIL_ROWS else np.sort(rng.choice(scored, model.DISTIL_ROWS, replace=False))
    wanted = sorted({*decisions.ids(), *sample.tolist()})
    vectors: dict[int, np.ndarray] = {}
    for ids, matrix, _ in index.embeddings.iter(backbone_id, wanted):
        vectors.update(zip(ids.tolist(), matrix.astype(np.float32)))
    missing = [i for i in decisions.ids() if i not in vectors]
    if missing:
        raise IndexUnavailable(f"{len(missing)} decided photos lost their embeddings meanwhile; run `aes-index learn` again")
    sample = np.array([i for i in sample.tolist() if i in vectors], dtype=np.int64)
    x_sample = np.stack([vectors[i] for i in sample.tolist()])
    mean, scale = model.standardiser(x_sample)
    w0 = model.distil(x_sample, np.array([active[i] for i in sample.tolist()], np.float64), mean, scale)
    ids = decisions.ids()
    z = ((np.stack([vectors[i] for i in ids]) - mean) * scale).astype(np.float32)
    z_sample = (x_sample - mean) * scale
    fidelity = model.spearman(z_sample @ w0, np.array([active[i] for i in sample.tolist()]))
    return model.Features({i: k for k, i in enumerate(ids)}, z, mean, scale, w0, fidelity)


def personal_head(fitted: model.Fitted, features: model.Features, backbone_key: str, report: dict) -> Head:
    meta = {
        "name": HEAD_NAME,
        "kind": "linear",
        "backbone": backbone_key,
        "input_space": "pooled",
        "input_dim": int(len(fitted.weight)),
        "score_scale": "your taste, in stars (0 = rejected, 1-5), learned from your decisions",
        "data": {"dataset": "your own decisions", "found": report["found"], **report["decisions"]},
        "config": {"alpha": fitted.alpha, "active_weight": fitted.beta, "prior": report["active_head"],
                   "prior_fidelity_srcc": features.distil_srcc, "pair_margin": model.PAIR_MARGIN},
        "metrics": report.get("held_out", {}),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    tensors = {"weight": fitted.weight.astype(np.float32), "bias": np.array([fitted.bias], np.float32),
               "input_mean": features.mean.astype(np.float32), "input_scale": features.scale.astype(np.float32)}
    return Head(meta, tensors)
