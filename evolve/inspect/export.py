"""`evolve export`: take a candidate home as a reviewable history of edits.

Three forms: a git repository whose first commit is the template and each later commit one
step of the lineage (`git`), numbered patches that `git am` applies to the template (`patches`),
or just the candidate's runnable directory (`dir`). The run is only read, so a live run can be
exported while it goes on.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from evolve.inspect.runview import (
    RunViewError,
    find_candidate,
    load_config,
    open_run_dir,
    open_store,
    resolve_template,
)
from evolve.inspect.trust import read_trust, unsandboxed_note, with_test_scores
from population.candidate import Candidate, Status
from population.store import edits_from_seed

FORMATS = ("git", "patches", "dir")
RUN_NOTE = "RUN.md"  # written into a `dir` export: the command that reproduces the score
# Template files that are not harness: the seed scripts stand in for the candidate's own.
SEED_SCRIPTS = frozenset({"train.py", "train_cpu.py"})
_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".git", ".pytest_cache", ".ruff_cache")
_GIT_IDENTITY = ("-c", "user.name=evolve", "-c", "user.email=evolve@localhost",
                 "-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false",
                 "-c", "core.autocrlf=false", "-c", "core.hooksPath=/dev/null",
                 "-c", "init.defaultBranch=main")


class ExportError(Exception):
    """An export that cannot be done as asked; the message says why and what to do."""


@dataclass(frozen=True)
class ExportSummary:
    """What an export wrote, for the command line to print."""

    fmt: str
    path: Path
    candidate_id: str
    status: str
    val_bpb: float | None
    steps: int                      # lineage edits exported (commits after the template / patches)
    files: tuple[Path, ...] = ()    # the patch files, in order (patches)
    tags: tuple[str, ...] = ()      # tags made (git)
    note: str = ""                  # " (unsandboxed: why)" when its score was not sandboxed

    def describe(self) -> str:
        score = f"val_bpb {self.val_bpb:.6f}{self.note}" if self.val_bpb is not None else self.status
        what = {"git": f"git repository, template + {self.steps} commit(s)",
                "patches": f"{len(self.files)} patch file(s) for `git am`",
                "dir": f"runnable directory (how to run it: {RUN_NOTE})"}[self.fmt]
        tags = f", tagged {', '.join(self.tags)}" if self.tags else ""
        return f"exported {self.candidate_id} ({score}) to {self.path}: {what}{tags}"


def export_run(run_dir: Path, to: Path, *, candidate: str = "best", fmt: str = "git",
               force: bool = False) -> ExportSummary:
    """Export `candidate` (an id, a unique id prefix or `best`) of the run at `run_dir`."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    to = Path(to)
    if to.exists() and (not to.is_dir() or any(to.iterdir())):
        raise ExportError(f"{to} already exists and is not an empty directory; export to a new "
                          "directory (nothing was written)")
    if fmt != "dir" and shutil.which("git") is None:
        raise ExportError("git was not found on PATH; install git, or use --format dir")
    try:
        rd = open_run_dir(run_dir)
        config, _ = load_config(rd)
        template = resolve_template(rd, config)
        with open_store(rd) as store:
            trust = read_trust(store, ())
            lineage = with_test_scores(store.lineage(find_candidate(store, candidate).id), trust)
            target = lineage[-1]
            best = store.best()
    except RunViewError as error:
        raise ExportError(str(error)) from error
    _check_exportable(target, force)
    tmp = Path(tempfile.mkdtemp(prefix=".evolve-export-", dir=_scratch_parent(to)))
    try:
        build = tmp / "out"
        head = (fmt, to, target.id, target.status.value, target.val_bpb)
        note = unsandboxed_note(target)
        if fmt == "dir":
            _write_tree(build, _harness(template), target.files)
            (build / RUN_NOTE).write_text(run_note(target, config), encoding="utf-8")
            summary = ExportSummary(*head, 0, note=note)
        elif fmt == "git":
            steps, tags = _build_repo(build, template, lineage, best, base="harness")
            summary = ExportSummary(*head, steps, tags=tags, note=note)
        else:
            patches = _build_patches(build, tmp / "repo", template, lineage, best)
            summary = ExportSummary(*head, len(patches), files=tuple(to / p.name for p in patches),
                                    note=note)
        _move_into(build, to)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return summary


def run_note(target: Candidate, config: Mapping[str, object]) -> str:
    """RUN.md of a `dir` export: the harness command that scored the candidate, with the
    score and device it recorded (the profile, data and seed it ran under, from its result)."""
    metrics = target.metrics
    profile = str(metrics.get("profile") or config.get("profile") or "cpu-tiny")
    data = str(metrics.get("data") or config.get("data") or "synthetic")
    seed = metrics.get("seed", target.seed)
    command = (f"python prepare.py run --profile {profile} --data {data} --seed {seed} "
               "--result result.json")
    lines = [f"# Candidate {target.id}", "",
             target.description or "The run's seed training script.", "",
             "Run it from this folder (Python with torch; the harness prepares the data on "
             "first use, cached in $EVOLVE_CACHE_DIR or ~/.cache/evolve):", "",
             f"    {command}", "",
             "The score is printed and written to result.json (`val_bpb`, lower is better)."]
    if target.val_bpb is not None:
        lines += ["", "Recorded by the run:", "",
                  f"- val_bpb: {target.val_bpb:.6f}{unsandboxed_note(target)}"]
        if target.test_bpb is not None:
            lines.append(f"- test_bpb (held-out, never seen by the search): {target.test_bpb:.6f}")
        first = _metric(target, "val_bpb_first")
        if first is not None and first != target.val_bpb:
            lines.append(f"  (the credited score, a mean over confirmation re-runs; this seed "
                         f"alone gave {first:.6f})")
        lines.append(f"- device: {metrics.get('device') or 'not recorded'}")
        if metrics.get("budget_kind") == "time":
            lines.append("- the budget is wall-clock time, so the score depends on the device: "
                         "expect it only on the same kind of device")
        else:
            lines.append("- the budget is a token count; on another device expect the same "
                         "score within seed noise")
    else:
        reason = f": {target.reason}" if target.reason else ""
        lines += ["", f"The run recorded no score: the candidate {target.status.value}{reason}."]
    if data.startswith("text:"):
        lines += ["", f"`--data {data}` names a file on the machine the run used; point it at "
                  "your copy."]
    return "\n".join(lines) + "\n"


def _check_exportable(target: Candidate, force: bool) -> None:
    if target.status is Status.DONE or force:
        return
    if target.status in (Status.PROPOSED, Status.RUNNING):
        raise ExportError(f"candidate {target.id} is {target.status.value} and has no score yet; "
                          "wait for it to finish, or pass --force to export it unscored")
    reason = f" ({target.reason})" if target.reason else ""
    raise ExportError(f"candidate {target.id} {target.status.value}{reason}; its train.py never "
                      "produced a score. Pass --force to export it anyway")


def _scratch_parent(to: Path) -> Path:
    """Build beside the target, so the final move is a rename on the same file system."""
    parent = to.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    return parent


def _move_into(build: Path, to: Path) -> None:
    if to.exists():  # an empty directory: keep it (it may be a mount point), fill it
        for entry in build.iterdir():
            shutil.move(str(entry), str(to / entry.name))
    else:
        os.replace(build, to)


# ---- trees ---------------------------------------------------------------------------------


def _harness(template: Path) -> dict[str, Path]:
    """Top-level template entries that every experiment directory gets (not the seeds)."""
    return {entry.name: entry for entry in sorted(template.iterdir())
            if entry.name not in SEED_SCRIPTS and not _IGNORED(str(template), [entry.name])}


def _literal_template(template: Path) -> dict[str, Path]:
    return {entry.name: entry for entry in sorted(template.iterdir())
            if not _IGNORED(str(template), [entry.name])}


def _write_tree(root: Path, base: Mapping[str, Path], files: Mapping[str, str]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for name, entry in base.items():
        if entry.is_dir():
            shutil.copytree(entry, root / name, ignore=_IGNORED)
        else:
            shutil.copy2(entry, root / name)
    _write_files(root, {}, files)


def _write_files(root: Path, before: Mapping[str, str], after: Mapping[str, str]) -> None:
    """Lay the candidate's mutable files over the tree byte for byte (no newline mangling)."""
    for name in before:
        if name not in after and (root / name).exists():
            (root / name).unlink()
    for name, source in after.items():
        parts = PurePosixPath(name).parts
        if not parts or PurePosixPath(name).is_absolute() or ".." in parts:
            raise ExportError(f"candidate file name {name!r} is not a plain relative path")
        path = root.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(source.encode("utf-8"))


# ---- git -----------------------------------------------------------------------------------


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1"}
    done = subprocess.run(["git", *_GIT_IDENTITY, *args], cwd=repo, env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise ExportError(f"git {' '.join(args[:2])} failed in {repo}: "
                          f"{(done.stderr or done.stdout).strip()[:500]}")
    return done.stdout


def _commit(repo: Path, message: str, when: float | None) -> str:
    """Commit everything in the work tree, dated when the step happened; returns the sha."""
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1"}
    if when:
        env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = f"@{int(when)} +0000"
    _git(repo, "add", "-A")
    done = subprocess.run(["git", *_GIT_IDENTITY, "commit", "-q", "--allow-empty", "-F", "-"],
                          cwd=repo, env=env, input=message, capture_output=True, text=True)
    if done.returncode != 0:
        raise ExportError(f"git commit failed in {repo}: "
                          f"{(done.stderr or done.stdout).strip()[:500]}")
    return _git(repo, "rev-parse", "HEAD").strip()


def _build_repo(repo: Path, template: Path, lineage: list[Candidate], best: Candidate | None,
                *, base: str) -> tuple[int, tuple[str, ...]]:
    """Commit the template, then one commit per lineage edit; returns (edits, tags)."""
    root = lineage[0]
    repo.mkdir(parents=True, exist_ok=True)
    _git(repo, "init", "-q")
    steps = 0
    if base == "harness":
        _write_tree(repo, _harness(template), root.files)
        head = _commit(repo, _template_message(template, root), root.created_at)
    else:  # the literal template, then (when it differs) the seed the run started from
        _write_tree(repo, _literal_template(template), {})
        head = _commit(repo, f"Template {template.name}, as it is\n", root.created_at)
        if any(_read(repo / n) != s for n, s in root.files.items()):
            _write_files(repo, {}, root.files)
            head = _commit(repo, _seed_message(root), root.created_at)
            steps += 1
    commit_of = {root.id: head}
    previous, moves = root, []
    for upto, step in enumerate(lineage[1:], start=2):
        if dict(step.files) == dict(previous.files):  # a migration copy: no edit to commit
            moves.append(step)
        else:
            _write_files(repo, previous.files, step.files)
            generation = edits_from_seed(lineage[:upto])
            head = _commit(repo, _step_message(previous, step, moves, generation),
                           step.finished_at or step.created_at)
            steps += 1
            previous, moves = step, []
        commit_of[step.id] = head
    target = lineage[-1]
    tags = {_tag_name(target.id): (head, f"candidate {target.id}, val_bpb {_bpb(target)}"
                                         f"{unsandboxed_note(target)}")}
    if best is not None and best.id in commit_of:
        tags["best"] = (commit_of[best.id], f"best of the run: {best.id}, val_bpb {_bpb(best)}"
                                            f"{unsandboxed_note(best)}")
    for name, (sha, message) in tags.items():
        _git(repo, "tag", "-a", name, "-m", message, sha)
    return steps, tuple(sorted(tags))


def _read(path: Path) -> str | None:
    return path.read_bytes().decode("utf-8", "replace") if path.is_file() else None


def _tag_name(candidate_id: str) -> str:
    return "candidate-" + (re.sub(r"[^A-Za-z0-9._-]+", "-", candidate_id).strip(".-") or "x")


def _build_patches(out: Path, repo: Path, template: Path, lineage: list[Candidate],
                   best: Candidate | None) -> list[Path]:
    """Numbered patches onto the template as it is on disk (seed switch first when needed)."""
    _build_repo(repo, template, lineage, best, base="literal")
    out.mkdir(parents=True)
    first = _git(repo, "rev-list", "--max-parents=0", "HEAD").split()[0]
    _git(repo, "format-patch", "-q", "--no-signature", "-o", str(out), f"{first}..HEAD")
    patches = sorted(out.glob("*.patch"))
    (out / "README").write_text(
        f"Patches from an evolve run, onto the template directory {template.name}/ as it is.\n"
        f"The last one gives candidate {lineage[-1].id}. Apply them in order:\n\n"
        f"  cd {template.name} && git init -q && git add -A && git commit -qm template\n"
        "  git am <this folder>/*.patch\n\n"
        "Inside a repository that holds the template as a folder, add --directory=<folder>.\n")
    return patches


# ---- commit messages ----------------------------------------------------------------------


def _bpb(candidate: Candidate) -> str:
    return f"{candidate.val_bpb:.6f}" if candidate.val_bpb is not None else "none"


def _scored(candidate: Candidate) -> list[str]:
    """Commit-message lines on how far the score can be trusted: unsandboxed, and why."""
    if not candidate.unsandboxed:
        return []
    return textwrap.wrap(f"unsandboxed: {candidate.sandbox_problem}", 72)


def _metric(candidate: Candidate, key: str) -> float | None:
    value = candidate.metrics.get(key)
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def _template_message(template: Path, root: Candidate) -> str:
    lines = [f"Template {template.name}: the harness and the seed training script", "",
             f"Root candidate of the run: {root.id}."]
    if root.val_bpb is not None:
        lines.append(f"val_bpb: {_bpb(root)}")
        lines += _scored(root)
    if root.test_bpb is not None:
        lines.append(f"test_bpb: {root.test_bpb:.6f}")
    lines.append(f"candidate: {root.id}")
    return "\n".join(lines) + "\n"


def _seed_message(root: Candidate) -> str:
    names = ", ".join(sorted(root.files))
    return (f"Start from the run's seed {names}\n\n"
            f"The template's own copy differs from the seed the run started from (for cpu\n"
            f"profiles the seed is train_cpu.py, written as train.py).\n\n"
            f"val_bpb: {_bpb(root)}\ncandidate: {root.id}\n")


def _one_line(text: str, limit: int = 72) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _step_message(parent: Candidate, step: Candidate, moves: list[Candidate],
                  generation: int) -> str:
    """Description; rationale; before → after; id, mutator/model, cost."""
    subject = _one_line(step.description or f"Candidate {step.id}")
    lines = [subject, ""]
    if step.description and _one_line(step.description, 10_000) != subject:
        lines += textwrap.wrap(" ".join(step.description.split()), 72) + [""]
    if step.rationale.strip():
        for paragraph in step.rationale.strip().split("\n\n"):
            lines += textwrap.wrap(" ".join(paragraph.split()), 72) + [""]
    if step.val_bpb is not None and parent.val_bpb is not None:
        delta = step.val_bpb - parent.val_bpb
        lines.append(f"val_bpb: {_bpb(parent)} → {_bpb(step)} (Δ {delta:+.6f})")
    elif step.val_bpb is not None:
        lines.append(f"val_bpb: {_bpb(step)}")
    else:
        reason = f": {_one_line(step.reason, 200)}" if step.reason else ""
        lines.append(f"status: {step.status.value}{reason}")
    if step.val_bpb is not None:
        lines += _scored(step)
    before, after = parent.test_bpb, step.test_bpb
    if after is not None:
        lines.append(f"test_bpb: {before:.6f} → {after:.6f}" if before is not None
                     else f"test_bpb: {after:.6f}")
    confirm = step.metrics.get("confirm")
    if isinstance(confirm, dict) and confirm.get("reason"):  # the re-run evidence behind it
        lines += textwrap.wrap(f"evidence: {confirm['reason']}", 72)
    donor = f", donor {step.donor_id}" if step.donor_id else ""
    lines.append(f"candidate: {step.id} (parent {step.parent_id}{donor}, island {step.island}, "
                 f"generation {generation}: edits from the seed)")
    if step.donor_id:  # a merge: the second parent, whose winning edit this commit carries
        lines.append(f"merged from: {step.donor_id} (its edit over its own parent, carried "
                     "onto this line by a three-way merge)")
    for move in moves:
        lines.append(f"moved to island {move.island} via {move.id}")
    mutator = step.mutator or "unknown"
    lines.append(f"mutator: {mutator}" + (f" ({step.model})" if step.model else ""))
    usage = step.usage or {}
    tokens = ""
    if usage.get("input_tokens") or usage.get("output_tokens"):
        tokens = (f" ({usage.get('input_tokens', 0)} input / "
                  f"{usage.get('output_tokens', 0)} output tokens)")
    lines.append(f"cost: ${step.cost_usd:.4f}{tokens}")
    return "\n".join(lines) + "\n"


__all__ = ["ExportError", "ExportSummary", "FORMATS", "export_run"]
