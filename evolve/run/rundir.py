"""The run directory: the whole truth about one run, laid out for humans and for `resume`."""

from __future__ import annotations

import os
import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from population.candidate import Candidate, Status
from population.store import Store, StoreError

TSV_COLUMNS = (
    "commit", "val_bpb", "memory_gb", "status", "description",
    "parent", "island", "seed", "cost_usd", "device",
)
_FINISHED = (Status.DONE, Status.CRASHED, Status.TIMED_OUT)
LOG_NAME = "run.log"  # candidates/<id>/run.log: the tail the controller received


class RunDirError(Exception):
    """A path that is not a usable run directory; the message says what is missing."""


@dataclass(frozen=True)
class RunDir:
    """Paths inside `results/<name>-<timestamp>/` and the files written there as a run goes."""

    path: Path

    @classmethod
    def create(cls, results_dir: str | Path, name: str) -> RunDir:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        safe = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "run"
        # absolute: remote workers lay experiments out under work/ by this path, from their cwd
        base = Path(results_dir).resolve() / f"{safe}-{stamp}"
        path, n = base, 1
        while path.exists():  # two runs started in the same second
            n += 1
            path = base.with_name(f"{base.name}-{n}")
        path.mkdir(parents=True)
        run_dir = cls(path)
        run_dir.candidates_dir.mkdir()
        run_dir.work_dir.mkdir()
        run_dir.tsv_path.write_text("\t".join(TSV_COLUMNS) + "\n")
        return run_dir

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        """An existing run directory, checked without writing anything into it (readers of a
        live run, such as status, export and report, use this too)."""
        run_dir = cls(Path(path).resolve())
        if not run_dir.path.is_dir():
            raise RunDirError(f"{path}: no such run directory")
        for required in (run_dir.config_path, run_dir.store_path):
            if not required.exists():
                raise RunDirError(
                    f"{path}: not a run directory ({required.name} is missing); pass the folder "
                    "that `evolve run` made under results/")
        return run_dir

    def ensure_layout(self) -> None:
        """The scratch folders a writer needs (a resumed run may find them deleted)."""
        self.candidates_dir.mkdir(exist_ok=True)
        self.work_dir.mkdir(exist_ok=True)

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def store_path(self) -> Path:
        return self.path / "store.sqlite"

    @property
    def tsv_path(self) -> Path:
        return self.path / "results.tsv"

    @property
    def candidates_dir(self) -> Path:
        return self.path / "candidates"

    @property
    def work_dir(self) -> Path:
        return self.path / "work"

    def candidate_dir(self, candidate_id: str) -> Path:
        return self.candidates_dir / candidate_id

    # -- writing, as the run goes (the RunRecorder protocol of the controller) --

    def on_candidate(self, candidate: Candidate) -> None:
        """Write the candidate's files and its diff, so a human can read any candidate."""
        folder = self.candidate_dir(candidate.id)
        folder.mkdir(parents=True, exist_ok=True)
        for name, source in candidate.files.items():
            write_atomic(folder / name, source)
        if candidate.diff:
            write_atomic(folder / "diff.patch", candidate.diff)
        if candidate.reason and candidate.status in (Status.REJECTED, Status.CRASHED, Status.TIMED_OUT):
            write_atomic(folder / "reason.txt", candidate.reason + "\n")

    def on_result(self, candidate: Candidate, kept: bool) -> None:
        """Append one finished experiment to results.tsv (the one-agent loop's columns) and
        keep the log tail its worker sent as candidates/<id>/run.log."""
        with open(self.tsv_path, "a", newline="") as handle:
            handle.write(tsv_row(candidate, kept))
            handle.flush()
            os.fsync(handle.fileno())
        folder = self.candidate_dir(candidate.id)
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(folder / LOG_NAME, self.log_text(candidate))

    def log_text(self, candidate: Candidate) -> str:
        """The log tail under a first line that says it is a tail and where the whole log is:
        the last attempt's directory under work/, on the node that ran it (full logs stay
        there; only the tail travels to the controller)."""
        attempt, node = self._last_attempt(candidate.id)
        if attempt:
            where = self.work_dir / f"{_safe_id(candidate.id)}-a{attempt}" / LOG_NAME
            on = f" on node {node}" if node else ""
            header = (f"# the last lines of attempt {attempt}'s log, as the controller received "
                      f"them; the full log is {where}{on}")
        else:
            header = ("# the last lines of the log, as the controller received them; the full "
                      f"log is under {self.work_dir}/ on the node that ran it")
        body = candidate.log_tail if candidate.log_tail.strip() else (
            "(no log reached the controller" + (f": {candidate.reason}" if candidate.reason
                                                else "") + ")")
        return f"{header}\n{body.rstrip(chr(10))}\n"

    def _last_attempt(self, candidate_id: str) -> tuple[int, str]:
        """(attempt number, node) of the candidate's last attempt; (0, "") when unknown."""
        if not self.store_path.exists():
            return 0, ""
        try:
            with Store.open(self.store_path, readonly=True) as store:
                attempts = store.attempts(candidate_id)
        except (StoreError, OSError, sqlite3.Error):
            return 0, ""
        return (len(attempts), attempts[-1].node) if attempts else (0, "")

    def rewrite_tsv(self, rows: list[tuple[Candidate, bool]]) -> None:
        """Rebuild results.tsv from the store (on resume), so a kill between the store's commit
        and the append can neither lose nor duplicate a row."""
        text = "\t".join(TSV_COLUMNS) + "\n" + "".join(tsv_row(c, kept) for c, kept in rows)
        write_atomic(self.tsv_path, text)


def tsv_row(candidate: Candidate, kept: bool) -> str:
    """One results.tsv line. Crashes carry val_bpb 0 and memory 0, as the one-agent log does;
    `device` (the GPU model or cpu, where the harness reported it) is what the score is tied to
    under a time budget."""
    metrics = candidate.metrics
    if candidate.status is Status.DONE:
        status = "keep" if kept else "discard"
        val_bpb = f"{float(metrics.get('val_bpb', 0.0)):.6f}"
        memory_gb = f"{float(metrics.get('peak_vram_mb', 0.0)) / 1024:.1f}"
    else:
        status, val_bpb, memory_gb = "crash", "0.000000", "0.0"
    fields = [
        candidate.id, val_bpb, memory_gb, status,
        _one_line(candidate.description or candidate.reason),
        candidate.parent_id or "", str(candidate.island), str(candidate.seed),
        f"{candidate.cost_usd:.4f}", _one_line(str(metrics.get("device", ""))),
    ]
    return "\t".join(fields) + "\n"


def _safe_id(candidate_id: str) -> str:
    """The candidate's directory name under work/ (as workers/runner.py experiment_dir)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", candidate_id) or "candidate"


def _one_line(text: str) -> str:
    """Tabs and newlines would break the TSV; collapse all whitespace."""
    return " ".join(text.split())[:200]


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` at once: a reader (or a kill) never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
