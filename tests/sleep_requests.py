"""Shared by the runner and worker tests: run requests on the stand-in (sleep) template, and a
process-liveness check that does not rely on the code under test."""

from __future__ import annotations

import os
from pathlib import Path

from evolve.workers.runner import RunRequest

REPO = Path(__file__).resolve().parent.parent
TEMPLATE = REPO / "tests" / "fixtures" / "sleep_template"
SEED = (TEMPLATE / "train.py").read_text().replace("SLEEP_S = 0.5 ", "SLEEP_S = 0.05")


def request(tmp_path: Path, source: str = SEED, **overrides) -> RunRequest:
    fields = dict(
        candidate_id="c1", files={"train.py": source}, template_dir=str(TEMPLATE),
        profile="cpu-micro", data="synthetic", seed=0, timeout_s=60.0,
        work_root=str(tmp_path / "work"),
    )
    fields.update(overrides)
    return RunRequest(**fields)


def alive(pid: int) -> bool:
    """Exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] != "Z"
