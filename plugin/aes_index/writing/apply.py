"""The one apply loop and the one undo loop, for every rating target and every command.

`apply-ratings` (XMP or EXIF), the watcher after each batch, `digikam sync` and the
darktable plugin's "rate" all run `apply`; `ratings undo`, `digikam undo` and the
plugin's "remove our stars" all run `undo`. What differs between them is the target
(protocol.py), never the rule: the decision is ownership.may_set(), made on the very read
the write then checks (ChangedSinceRead). Culling's marks (`apply_marks`: `apply-culling`,
`digikam cull`) go through the same place loop (`_each_place`), with
culling.marks.decide_marks as the rule; and so does a person's own decision made in
`aes-index review` (`apply_decision`: one photo, every target it is in, as theirs).
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ..errors import AesIndexError
from ..index.locks import file_lock
from ..index.store.journal import NOT_WRITTEN
from .. import ownership
from ..ownership import Action
from ..index.store import Index
from ..targets.protocol import ChangedSinceRead, Marks, Place, Reading, Target, UndoAction, UndoResult, Wanted, Write

RATING_COMMANDS = (
    "apply-ratings", "digikam-sync", "darktable-rate", "darktable-cull", "attribute-tags", "apply-culling", "digikam-cull",
    *ownership.PERSONS_COMMANDS,
)  # runs that hold the ratings turn
UNSUPPORTED_TEXT = {
    "not-jpeg": "EXIF ratings go only into JPEG originals",
    "no-reject": "the target has no 'rejected' rating",
}


@dataclass
class ApplyReport:
    run_id: int | None
    dry_run: bool
    head: str
    policy: dict
    target: str
    photos: int = 0
    stars: Counter = field(default_factory=Counter)  # wanted stars per level, every photo
    written: Counter = field(default_factory=Counter)  # stars written (or that would be)
    unchanged: int = 0
    skipped_manual: int = 0
    changed_since_read: int = 0  # a person changed the place between our read and write
    unsupported: Counter = field(default_factory=Counter)  # why a target can't take a value
    errors: list[dict] = field(default_factory=list)
    manual: list[dict] = field(default_factory=list)  # which ratings a person set, kept
    extra: dict = field(default_factory=dict)  # the target's own facts (digiKam: images, backup)

    def as_dict(self) -> dict:
        data = {k: v for k, v in self.__dict__.items() if k not in ("extra", "unsupported")}
        data["stars"] = {str(k): v for k, v in sorted(self.stars.items())}
        data["written"] = {str(k): v for k, v in sorted(self.written.items())}
        data["written_total"] = sum(self.written.values())
        data["unsupported"] = dict(self.unsupported)
        data["skipped_not_jpeg"] = self.unsupported["not-jpeg"]
        data["skipped_rejected"] = self.unsupported["no-reject"]
        return {**data, **self.extra}


def apply(index: Index, target: Target, photos: Iterable, options, head_id: str, command: str) -> ApplyReport:
    """Give each photo (rate.PhotoRating) its stars in every place `target` holds it,
    where the manual-ratings-win rule allows; journal each write; one run in the index.

    Runs that write ratings take turns (a lock beside the index): two at once would each
    decide on what the other is about to change, and journal each other's writes wrongly.
    """
    record = options_record(options)
    report = ApplyReport(None, options.dry_run, head_id, record["policy"], target.name)
    with recorded_run(index, command, record, options.dry_run, report.as_dict, head_id) as run_id:
        report.run_id = run_id
        staged = Staged(index, run_id)
        with target.session(options.dry_run, before_commit=lambda: staged.record_pending(target)):
            reconcile(index, target)
            claims = _claim_places(target, _supported(target, photos, report), _rating_rank)

            def rate(photo, place: Place) -> Change | None:
                wanted = Wanted(photo.stars, photo.score, photo.percentile, head_id, options.tags)
                return _apply_place(index, target, place, wanted, options, report)

            _each_place(index, target, claims, staged, report, rate, lambda photo: photo.stars)
        staged.landed(target)
        report.extra.update(target.extra)
    return report


@dataclass
class MarkReport:
    """What a culling write did: per field, how many places changed (or would)."""

    run_id: int | None
    dry_run: bool
    target: str
    photos: int = 0
    keepers: int = 0
    flagged: int = 0
    grouped: int = 0  # photos under a keeper
    grouped_by_you: int = 0  # photos of groups a person made in the target: their grouping left alone
    written: Counter = field(default_factory=Counter)  # field -> places changed
    unchanged: int = 0
    changed_since_read: int = 0
    kept_yours: list[dict] = field(default_factory=list)  # a person's pick, reject or group, kept
    manual: list[dict] = field(default_factory=list)  # places a person changed during the run
    errors: list[dict] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        data = {k: v for k, v in self.__dict__.items() if k != "extra"}
        data["written"] = dict(sorted(self.written.items()))
        return {**data, **self.extra}


def apply_marks(
    index: Index, target: Target, plan: Callable[[Target], Sequence[Marks]], decide: Callable, options, command: str, record: dict,
) -> MarkReport:
    """Give each photo culling's marks (`plan`, called inside the target's session, so it
    reads the places a person's choices are in through the same session) in every place
    `target` holds it, where `decide` (culling.marks.decide_marks: the place's state, its
    culling tags, the marks, the target -> changes, a person's values kept) allows;
    journal each field written.

    options: dry_run, treat_as_unrated (ratings that count as none). One run in the index,
    under the ratings turn, like `apply`.
    """
    report = MarkReport(None, options.dry_run, target.name)
    with recorded_run(index, command, record, options.dry_run, report.as_dict) as run_id:
        report.run_id = run_id
        staged = Staged(index, run_id)
        with target.session(options.dry_run, before_commit=lambda: staged.record_pending(target)):
            reconcile(index, target)
            claims = _claim_places(target, _counted(plan(target), report), _mark_rank)

            def mark(marks: Marks, place: Place) -> Change | None:
                reading = target.read(place)
                state = ownership.read_state(index.journal, target.name, reading, options.treat_as_unrated)
                changes, kept = decide(state, reading.cull.tags, marks, target)
                report.kept_yours += [{"path": place.key, **item} for item in kept]
                if not changes:
                    report.unchanged += 1
                    return None
                change = _change(target, options.dry_run, lambda dry_run: target.mark(reading, changes, marks, dry_run))
                change.counted = lambda: report.written.update(changes.keys())
                return change

            _each_place(index, target, claims, staged, report, mark, lambda marks: list(marks.tags))
        staged.landed(target)
        report.extra.update(target.extra)
    return report


def _counted(marks: Iterable[Marks], report: MarkReport) -> Iterable[Marks]:
    for item in marks:
        report.photos += 1
        report.keepers += item.keeper
        report.flagged += bool(item.flags)
        report.grouped += item.leader is not None
        report.grouped_by_you += not item.group
        yield item


@dataclass
class DecisionReport:
    """What a person's decision did: per place written, its fields; places left alone."""

    run_id: int | None
    written: list[dict] = field(default_factory=list)  # {"target", "place", "fields"}
    unchanged: int = 0  # places that already showed the decision
    changed_since_read: int = 0
    manual: list[dict] = field(default_factory=list)  # places changed between our two reads
    errors: list[dict] = field(default_factory=list)  # places refused (outside the library, write-protected, ...)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def apply_decision(
    index: Index, targets: Sequence[Target], photo: str, changes_for: Callable[[Target, Reading], dict],
    shown: Callable[[list[tuple[Target, Reading]]], None], record: dict, command: str = ownership.PERSONS_COMMANDS[0],
    turn_timeout: float | None = None,
) -> DecisionReport:
    """A person's own decision for `photo` (its rating, its pick label), made in
    `aes-index review`, into every place `targets` hold it: one run (of
    ownership.PERSONS_COMMANDS, so that its values are the person's), every target's
    session held at once, each place journaled ahead like any write of ours.

    `shown(readings)` sees every place read first, with every session held, and raises to
    write nothing (the page showed another state: ChangedSinceShown); `changes_for(target,
    reading)` gives a place's changes (field -> value; empty: nothing to change). A place
    whose second read differs from the first (changed in between) is left alone and
    counted, like any place that changed between our read and write.
    turn_timeout: how long to wait for the ratings turn (None: as long as it takes).
    """
    report = DecisionReport(None)
    with recorded_run(index, command, record, False, report.as_dict, turn_timeout=turn_timeout) as run_id:
        report.run_id = run_id
        staged = {id(target): Staged(index, run_id) for target in targets}
        with contextlib.ExitStack() as sessions:
            for target in targets:
                sessions.enter_context(target.session(False, before_commit=lambda t=target: staged[id(t)].record_pending(t)))
                reconcile(index, target)
            first = {(id(t), place.key): (t, t.read(place)) for t in targets for place in t.places(photo)}
            shown(list(first.values()))
            for target in targets:
                handle = lambda item, place, target=target: _decision_place(target, place, first[(id(target), place.key)][1], changes_for, report)  # noqa: E731
                claims = {place.key: (photo, place) for place in target.places(photo)}
                _each_place(index, target, claims, staged[id(target)], report, handle, lambda item: None)
        for target in targets:
            staged[id(target)].landed(target)
    return report


def _decision_place(target: Target, place: Place, first: Reading, changes_for: Callable, report: DecisionReport) -> Change | None:
    reading = target.read(place)
    if (reading.token, reading.value, reading.cull) != (first.token, first.value, first.cull):
        raise ChangedSinceRead(f"{place.key}: changed while the decision was written (by a person?); left as it is")
    changes = changes_for(target, reading)
    if not changes:
        report.unchanged += 1
        return None
    change = _change(target, False, lambda dry_run: target.write_decision(reading, changes, dry_run))
    if not change.writes:
        report.unchanged += 1  # the bytes already were the decision's
        return None
    change.counted = lambda: report.written.append({"target": target.name, "place": place.key, "fields": sorted(changes)})
    return change


@contextlib.contextmanager
def recorded_run(index: Index, command: str, settings: dict, dry_run: bool, summary: Callable[[], dict], head_id=None,
                 turn_timeout: float | None = None):
    """The turn (`ratings_turn`) and the run's row in the index, for a run that writes
    ratings or tags: yields its id (None for a dry run, which records nothing); the row
    ends done, failed or interrupted, with `summary()` as it stands then."""
    with ratings_turn(index, dry_run, turn_timeout):
        run_id = None if dry_run else index.runs.start(command, index.roots(), settings)
        status = "failed"
        try:
            yield run_id
            status = "done"
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        finally:
            if run_id is not None:
                index.runs.finish(run_id, status, summary(), head_id)


@contextlib.contextmanager
def ratings_turn(index: Index, dry_run: bool, timeout: float | None = None):
    """Runs that write ratings or tags take turns (a lock beside the index); a dry run
    writes nothing and needs no turn (nor a lock file, in a folder that may be read-only).
    Holding the turn, runs of those commands still "running" were killed: interrupted."""
    if dry_run:
        yield
        return
    with file_lock(index.path, "ratings", timeout, what="another run that writes ratings"):
        index.runs.close_abandoned(RATING_COMMANDS)
        yield


@contextlib.contextmanager
def no_interrupt_between_write_and_journal():
    """Ctrl-C waits until a write and its journal row have both landed: a write without
    its row would make our stars look like a person's, and undo could not reach them."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda *args: caught.append(args))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def _supported(target: Target, photos: Iterable, report: ApplyReport) -> Iterable:
    """The photos whose stars the target can take, each counted in the report."""
    for photo in photos:
        report.photos += 1
        report.stars[photo.stars] += 1
        reason = target.unsupported(photo.path, photo.stars)
        if reason:
            report.unsupported[reason] += 1
            continue
        yield photo


def _claim_places(target: Target, photos: Iterable, rank: Callable) -> dict[str, tuple]:
    """Each place with the one photo that decides its value.

    Photos that share a place are one photograph: a RAW+JPEG pair with a Lightroom-style
    IMG_1.xmp, or IMG_1.jpg + IMG_1.png. They get one decision, from the member that
    ranks highest (`rank`: the policy's stars, then the score; culling: a keeper, then a
    flagged photo), then the path, so runs settle instead of flipping the shared sidecar.
    """
    claims: dict[str, tuple] = {}
    for photo in photos:
        for place in target.places(photo.path):
            held = claims.get(place.key)
            if held is None or (rank(photo), held[0].path) > (rank(held[0]), photo.path):
                claims[place.key] = (photo, place)
    return claims


def _rating_rank(photo) -> tuple:
    return (photo.stars, _finite(photo.score))


def _mark_rank(marks: Marks) -> tuple:
    return marks.rank


def _finite(score: float) -> float:
    return score if math.isfinite(score) else -math.inf


@dataclass
class Change:
    """One place's write, planned: the journal rows it makes (recorded before it lands),
    and `perform`, which makes it (raising ChangedSinceRead if the place moved since it
    was read). A transactional or deferred target has made it already (`performed`)."""

    writes: list[Write]
    perform: Callable[[], object] = lambda: None
    performed: bool = False
    counted: Callable[[], None] = lambda: None  # into the run's report, once written (or, in a dry run, planned)


def _change(target: Target, dry_run: bool, write: Callable[[bool], list[Write]]) -> Change:
    """The Change of `write(dry_run)`: for a file target, what the write would be, and a
    second call that makes it; for a database or darktable, the write made in its session
    (landing at its commit, or rolled back for a dry run; darktable: our answer, which the
    plugin applies)."""
    if target.transactional or target.deferred:
        return Change(write(dry_run), performed=True)
    return Change(write(True), perform=lambda: write(False))


def _each_place(index: Index, target: Target, claims: dict, staged: "Staged", report, handle: Callable, wanted_of: Callable) -> None:
    """Decide and write each claimed place (`handle(item, place)` -> its Change, or None).
    A file's write is journaled ahead (`write_ahead`); a transactional or deferred
    target's writes are staged, recorded pending before its commit. A place a person
    changed between our read and write, or one we refuse, is reported and the run goes on."""
    for item, place in claims.values():
        try:
            with no_interrupt_between_write_and_journal():
                change = handle(item, place)
                if change is None:
                    continue
                if staged.run_id is None:  # a dry run: what would be written
                    pass
                elif change.performed:
                    staged.writes += change.writes
                else:
                    write_ahead(index, staged.run_id, change)
                change.counted()
        except ChangedSinceRead as exc:
            report.changed_since_read += 1
            report.manual.append({"path": place.key, "rating": None, "wanted": wanted_of(item), "reason": str(exc)})
        except AesIndexError as exc:
            report.errors.append({"path": place.key, "error": str(exc)})


def write_ahead(index: Index, run_id: int, change: Change) -> None:
    """Record the intent, make the write, say it landed: a process killed at any moment
    leaves a pending row that `reconcile` settles by reading the place, never a write of
    ours the journal does not know (it would pass for a person's, and undo could not
    reach it). A write that fails or is refused did not land: its rows say so."""
    if not change.writes:
        return
    with index.transaction():
        row_ids = [index.journal.record(run_id, write, pending=True) for write in change.writes]
    try:
        change.perform()
    except BaseException:
        with index.transaction():
            index.journal.mark_undone(row_ids, NOT_WRITTEN)
        raise
    with index.transaction():
        index.journal.mark_done(row_ids)


@dataclass
class Staged:
    """A transactional or deferred target's writes of one run: recorded pending just
    before its session commits (`record_pending`, the session's before_commit), done once
    it has (`landed`). darktable's stay pending until the plugin reports them applied."""

    index: Index
    run_id: int | None
    writes: list[Write] = field(default_factory=list)
    row_ids: list[int] = field(default_factory=list)

    def record_pending(self, target: Target) -> None:
        # The session's own writes first: undo goes newest first, so the tags a run
        # created go after the photos that carried them have let them go.
        writes = [*target.session_writes(), *self.writes] if self.writes else []
        if self.run_id is None or not writes:
            return
        with self.index.transaction():
            self.row_ids = [self.index.journal.record(self.run_id, write, pending=True) for write in writes]

    def landed(self, target: Target) -> None:
        if target.deferred:
            self.record_pending(target)  # the plugin applies them, then reports: `applied` says they landed
        elif self.row_ids:
            with self.index.transaction():
                self.index.journal.mark_done(self.row_ids)


def reconcile(index: Index, target: Target) -> int:
    """Settle the pending rows of `target` a killed run left (write-ahead): read each place;
    a write that landed is done, one that never did is closed as not written. A place that
    holds neither (a person changed it since) keeps the row as written: undo then finds
    the person's value and leaves it. Returns how many rows were settled."""
    actions = index.journal.pending(target.name, getattr(target, "place_prefix", ""))
    settled = 0
    with index.transaction():
        for action in actions:
            landed = target.landed(action)
            if landed is None:
                continue  # the target cannot tell now (darktable: the image is not in this request)
            if landed:
                index.journal.mark_done(action.row_ids)
            else:
                index.journal.mark_undone(action.row_ids, NOT_WRITTEN)
            settled += 1
    return settled


def _apply_place(index: Index, target: Target, place: Place, wanted: Wanted, options, report: ApplyReport) -> Change | None:
    reading = target.read(place)
    state = ownership.read_state(index.journal, target.name, reading, options.treat_as_unrated)
    decision = ownership.may_set(state, "rating", wanted.stars, options.overwrite_manual)
    target.note(place, wanted, decision.reason, decision.write)
    if not decision.write:
        if decision.action is Action.SKIP_PERSON:
            report.skipped_manual += 1
            report.manual.append({"path": place.key, "rating": reading.value, "wanted": wanted.stars, "reason": decision.reason})
        else:
            report.unchanged += 1
        return None
    change = _change(target, options.dry_run, lambda dry_run: _listed(target.write(reading, wanted, dry_run)))
    if not change.writes:
        report.unchanged += 1  # the bytes were already what we would write
        return None
    change.counted = lambda: report.written.update([wanted.stars])
    return change


def _listed(write: Write | None) -> list[Write]:
    return [] if write is None else [write]


def options_record(options) -> dict:
    policy = options.policy
    return {
        "policy": {"kind": policy.kind, "cuts": list(policy.cuts), "reject_below": policy.reject_below},
        "target": options.target, "tags": options.tags, "overwrite_manual": options.overwrite_manual,
        "treat_as_unrated": list(options.treat_as_unrated),
    }


# --------------------------------------------------------------------------- undo


def undo(index: Index, targets: Mapping[str, Target], actions: Sequence[UndoAction], dry_run: bool = False) -> list[UndoResult]:
    """Put back what the journal's `actions` wrote, each through its target.

    A value a person changed since stays ("kept-manual"); a run whose place a later run
    wrote again waits ("superseded"). Rows dealt with are closed in the journal (unless
    dry_run): at once for file targets, so an interrupted undo resumes where it stopped;
    after the commit for a database target; when the plugin reports back for darktable.
    """
    results: list[UndoResult] = []
    with contextlib.ExitStack() as stack:
        stack.enter_context(ratings_turn(index, dry_run))
        for target in {id(t): t for t in targets.values()}.values():
            stack.enter_context(target.session(dry_run))
        for action in actions:
            target = targets[action.target]
            with no_interrupt_between_write_and_journal():
                result = _undo_one(target, action, dry_run)
                if result.done and not dry_run and not target.transactional:
                    index.journal.mark_undone(action.row_ids, result.status)
            results.append(result)
    if not dry_run:
        with index.transaction():
            for result in results:
                if result.done and targets[result.action.target].transactional:
                    index.journal.mark_undone(result.action.row_ids, result.status)
    return results


def _undo_one(target: Target, action: UndoAction, dry_run: bool) -> UndoResult:
    if action.superseded_by_run is not None:
        return UndoResult(action, "superseded", f"run {action.superseded_by_run} wrote it again; undo that first")
    if action.pending and target.landed(action) is False:  # a killed run's intent that never landed
        return UndoResult(action, NOT_WRITTEN, "never written (the run that meant to was stopped): nothing to put back")
    try:
        return target.undo(action, dry_run)
    except (AesIndexError, OSError) as err:
        return UndoResult(action, "failed", " ".join(str(err).split()))
