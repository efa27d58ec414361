"""`index.runs`: every rebuild, rescore, apply-ratings... (table runs): what it did, with
which settings, head and backbone."""

from __future__ import annotations

import json
from typing import Sequence

import sqlite_utils

from .schema import utcnow

SCORING_COMMANDS = ("rebuild", "rescore", "watch", "score")  # the runs that score: the latest one names the active head and backbone


class Runs:
    """`index.runs`: reads and writes of table runs."""

    def __init__(self, db: sqlite_utils.Database):
        self.db = db

    def start(self, command: str, roots: Sequence[str] = (), settings: dict | None = None) -> int:
        return self.db["runs"].insert(
            {"command": command, "started": utcnow(), "status": "running", "roots": json.dumps(list(roots)),
             "settings": json.dumps(settings or {}, default=str)}
        ).last_pk

    def finish(self, run_id: int, status: str, summary: dict, head_id: str | None = None, backbone: str | None = None) -> None:
        self.db["runs"].update(
            run_id,
            {"finished": utcnow(), "status": status, "summary": json.dumps(summary, default=str),
             "head_id": head_id, "backbone": backbone},
        )

    def close_abandoned(self, commands: Sequence[str]) -> int:
        """Runs of `commands` still "running" though their lock is free (the caller holds it
        now): their process was killed (kill -9, power cut). They become "interrupted"."""
        marks = ",".join("?" * len(commands))
        cursor = self.db.execute(
            f"UPDATE runs SET status = 'interrupted', finished = ? WHERE status = 'running' "
            f"AND command IN ({marks})",
            [utcnow(), *commands],
        )
        return cursor.rowcount

    def note_head(self, run_id: int, head_id: str, backbone: str) -> None:
        """A long-running run (the watcher) says early which head it scores with."""
        self.db["runs"].update(run_id, {"head_id": head_id, "backbone": backbone})

    def command(self, run_id: int) -> str | None:
        """The command of run `run_id` (None: there is no such run)."""
        row = self.db.execute("SELECT command FROM runs WHERE id = ?", [run_id]).fetchone()
        return None if row is None else row[0]

    def last(self, command: str | None = None, status: str = "done") -> dict | None:
        where, params = "status = ?", [status]
        if command:
            where += " AND command = ?"
            params.append(command)
        rows = list(self.db["runs"].rows_where(where, params, order_by="id DESC", limit=1))
        return rows[0] if rows else None

    def active_head_id(self) -> str | None:
        """The head of the latest finished run that scored: what `top` shows by default."""
        return self._latest_scoring_run("head_id")

    def active_backbone(self) -> str | None:
        """The backbone of the same run as active_head_id: which of a library's backbones
        (one per preset it was indexed with) commands use when none is named."""
        return self._latest_scoring_run("backbone")

    def _latest_scoring_run(self, column: str) -> str | None:
        # Runs that only read scores (apply-ratings, culling's writes) record the head they
        # read, but they neither score nor pick a backbone: they never change what is active.
        marks = ",".join("?" * len(SCORING_COMMANDS))
        row = self.db.execute(
            f"SELECT {column} FROM runs WHERE status IN ('done', 'running', 'stopped') AND head_id IS NOT NULL "
            f"AND command IN ({marks}) ORDER BY id DESC LIMIT 1",
            list(SCORING_COMMANDS),
        ).fetchone()
        return row[0] if row else None
