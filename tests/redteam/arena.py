"""A run-like place for one adversarial candidate, and what must not change around it.

The layout mirrors a real checkout mid-run: the template beside `results/`, a run directory
holding a store with a finished candidate, results.tsv and another experiment's folder, and
the node's data cache, and a home and temp folder of its own (HOME, TMPDIR and
EVOLVE_CACHE_DIR point into the arena while a candidate runs, so an attack that looks in
~/.cache or /tmp finds the arena's, never this machine's). A candidate runs through the real runner (evolve.workers.runner, the
way the engine runs it: fresh experiment folder, pristine harness, subprocess, hard timeout);
every tree outside its own experiment folder is hashed before and after.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

from evolve.workers.runner import RunRequest, RunResult, experiment_dir, run_candidate
from population.candidate import Candidate
from population.store import Store

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "train_template"
HONEST = (TEMPLATE / "train_cpu.py").read_text()

TOKEN_PROFILE = "cpu-micro"
# A time budget on CPU, for the attacks on the clock and on training after train() returns
# (under a token budget, extra compute on served tokens is allowed, so only time shows them).
TIME_PROFILE = "cpu-micro-time"
TIME_BUDGET_S = 2.0
_TIME_PROFILE_SOURCE = f"""

# red-team suite: a CPU profile with a time budget (added to the test's template copy only)
import dataclasses as _dataclasses  # noqa: E402

PROFILES[{TIME_PROFILE!r}] = _dataclasses.replace(
    PROFILES["cpu-micro"], name={TIME_PROFILE!r}, budget_kind="time", budget={TIME_BUDGET_S!r},
    description="cpu-micro under a {TIME_BUDGET_S:g} s training-time budget (red-team tests)")
"""
RUN_TIMEOUT_S = 180.0
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc")


def make_template(destination: Path) -> Path:
    """A copy of the template with the time profile added; the copy the runner pins."""
    shutil.copytree(TEMPLATE, destination, ignore=IGNORED)
    profiles = destination / "profiles.py"
    profiles.write_text(profiles.read_text() + _TIME_PROFILE_SOURCE)
    return destination


def prepare_cache(template: Path, cache: Path) -> None:
    """Build the synthetic data once (the harness's own `prepare` step)."""
    done = subprocess.run(
        [sys.executable, "prepare.py", "prepare", "--profile", TOKEN_PROFILE, "--data",
         "synthetic", "--cache-dir", str(cache)], cwd=template, capture_output=True, text=True,
        timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr


@dataclasses.dataclass(frozen=True)
class Arena:
    root: Path
    template: Path
    cache: Path
    run_dir: Path

    @property
    def work_root(self) -> Path:
        return self.run_dir / "work"

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @classmethod
    def build(cls, root: Path, cache_source: Path) -> Arena:
        """A checkout (template beside results/), a run directory with a store, a data cache."""
        repo = root / "repo"
        arena = cls(root, make_template(repo / "train_template"), root / "cache",
                    repo / "results" / "redteam-run")
        shutil.copytree(cache_source, arena.cache)
        (arena.home / ".cache").mkdir(parents=True)
        (arena.home / ".cache" / "evolve").symlink_to(arena.cache)
        arena.tmp.mkdir()
        arena.work_root.mkdir(parents=True)
        (arena.run_dir / "candidates" / "seed").mkdir(parents=True)
        (arena.run_dir / "candidates" / "seed" / "train.py").write_text(HONEST)
        (arena.run_dir / "config.yaml").write_text(f"name: redteam-run\nprofile: {TOKEN_PROFILE}\n")
        (arena.run_dir / "results.tsv").write_text("commit\tval_bpb\tmemory_gb\tstatus\tdescription\n"
                                                   "seed\t4.900000\t0.4\tkeep\tthe seed\n")
        other = arena.work_root / "seed-a1"
        other.mkdir()
        (other / "run.log").write_text("---\nval_bpb:          4.900000\n")
        (other / "result.json").write_text(json.dumps({"status": "ok", "val_bpb": 4.9}))
        with Store.open(arena.run_dir / "store.sqlite") as store:
            store.add(Candidate(id="seed", parent_id=None, island=0, generation=0,
                                files={"train.py": HONEST}, description="the seed"))
            store.set_status("seed", "running")
            store.record_result("seed", status="done", metrics={"val_bpb": 4.9})
        return arena

    def request(self, candidate_id: str, source: str, profile: str,
                budget_fraction: float = 1.0) -> RunRequest:
        return RunRequest(candidate_id=candidate_id, files={"train.py": source},
                          template_dir=str(self.template), profile=profile, data="synthetic",
                          seed=0, timeout_s=RUN_TIMEOUT_S, work_root=str(self.work_root),
                          cache_dir=str(self.cache), budget_fraction=budget_fraction)

    def run(self, candidate_id: str, source: str, profile: str,
            budget_fraction: float = 1.0) -> RunResult:
        with self._environment():
            return run_candidate(self.request(candidate_id, source, profile, budget_fraction))

    @contextlib.contextmanager
    def _environment(self) -> Iterator[None]:
        """HOME, TMPDIR and the cache variable inside the arena (the runner passes its
        environment on to the experiment, less secrets)."""
        names = {"HOME": str(self.home), "TMPDIR": str(self.tmp), "EVOLVE_CACHE_DIR": str(self.cache)}
        saved = {name: os.environ.get(name) for name in names}
        os.environ.update(names)
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

    def snapshot(self, own: str) -> dict[str, dict[str, str]]:
        """Digest of every tree the candidate `own` must leave alone (its folder excluded)."""
        own_dir = experiment_dir(self.request(own, "", TOKEN_PROFILE))
        return {"template": tree_digest(self.template), "data cache": tree_digest(self.cache),
                "run directory (store, results, other experiments)":
                    tree_digest(self.root / "repo" / "results", skip=own_dir),
                "home and temp folder": {**{f"~/{k}": v for k, v in tree_digest(self.home).items()},
                                         **{f"tmp/{k}": v for k, v in tree_digest(self.tmp).items()}},
                "site-packages": site_packages_digest()}


def tree_digest(root: Path, skip: Path | None = None) -> dict[str, str]:
    """Relative path -> sha256 of every file under root (a symlink by its target)."""
    digest = {}
    for path in sorted(root.rglob("*")):
        if skip is not None and (path == skip or skip in path.parents):
            continue
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            digest[rel] = "link:" + os.readlink(path)
        elif path.is_file():
            digest[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digest


def site_dirs() -> list[Path]:
    """Where the interpreter looks for start-up hooks (.pth, sitecustomize)."""
    dirs = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"],
            *site.getsitepackages(), site.getusersitepackages()]
    return [Path(d) for d in dict.fromkeys(dirs) if Path(d).is_dir()]


def site_packages_digest() -> dict[str, str]:
    """Top-level entries of site-packages, with the content of every start-up hook."""
    digest = {}
    for directory in site_dirs():
        for entry in directory.iterdir():
            key = f"{directory}/{entry.name}"
            hook = entry.suffix == ".pth" or entry.stem in ("sitecustomize", "usercustomize")
            digest[key] = hashlib.sha256(entry.read_bytes()).hexdigest() if hook and entry.is_file() else "-"
    return digest


def remove_new_hooks(before: dict[str, str]) -> list[str]:
    """Undo a planted start-up hook (new top-level .pth / *customize files) after a test."""
    removed = []
    for key in site_packages_digest():
        path = Path(key)
        if key not in before and (path.suffix == ".pth" or path.stem.endswith("customize")):
            path.unlink(missing_ok=True)
            removed.append(key)
    return removed


def changes(before: dict[str, dict[str, str]], after: dict[str, dict[str, str]]) -> list[str]:
    """What differs, one line per tree: added, removed and changed paths."""
    lines = []
    for tree, old in before.items():
        new = after[tree]
        added = sorted(set(new) - set(old))
        removed = sorted(set(old) - set(new))
        changed = sorted(k for k in set(old) & set(new) if old[k] != new[k])
        if added or removed or changed:
            lines.append(f"{tree}: added {added[:5]}, removed {removed[:5]}, changed {changed[:5]}")
    return lines
