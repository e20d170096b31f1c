"""`evolve export`: git, patches and dir round trips with real git on a real store."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from run_builder import SEED, build_run

from evolve.inspect.export import ExportError, export_run
from evolve.inspect.report_data import read_run

GIT = ("git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false",
       "-c", "core.autocrlf=false")


def git(repo: Path, *args: str) -> str:
    return subprocess.run([*GIT, *args], cwd=repo, check=True, capture_output=True,
                          text=True).stdout


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    built, _ = build_run(tmp_path_factory.mktemp("exp"))
    return built


def test_git_export_replays_the_best_lineage(run, tmp_path):
    out = tmp_path / "best"
    summary = export_run(run.path, out)
    assert summary.candidate_id == run.ids["best"] and summary.fmt == "git"
    assert summary.steps == 4  # a, b, c, best; the migration copy is no edit
    assert set(summary.tags) == {"best", f"candidate-{run.ids['best']}"}
    assert git(out, "status", "--porcelain") == ""
    shas = git(out, "rev-list", "--reverse", "HEAD").split()
    assert len(shas) == 5
    # the first commit is the template with the run's seed as train.py; the seeds stay out
    first = set(git(out, "ls-tree", "-r", "--name-only", shas[0]).split())
    assert first == {"prepare.py", "lib/helper.py", "program.md", "train.py"}
    assert git(out, "show", f"{shas[0]}:train.py") == SEED
    # each later commit is one step, byte for byte (the last one lacks a final newline)
    for sha, role in zip(shas[1:], ["a", "b", "c", "best"], strict=True):
        shown = subprocess.run([*GIT, "show", f"{sha}:train.py"], cwd=out, check=True,
                               capture_output=True).stdout
        assert shown == run.files[role]["train.py"].encode()
        assert git(out, "diff-tree", "--no-commit-id", "--name-only", "-r", sha).split() == ["train.py"]
    assert (out / "train.py").read_bytes() == run.files["best"]["train.py"].encode()
    assert git(out, "rev-parse", "best^{commit}").strip() == shas[-1]
    message = git(out, "log", "-1", "--format=%B", shas[1])
    assert message.startswith("Deepen to 4 blocks\n")
    assert "More depth buys capacity" in message
    assert "val_bpb: 2.100000 → 1.900000 (Δ -0.200000)" in message
    assert f"candidate: {run.ids['a']} (parent {run.ids['root']}" in message
    assert "mutator: llm (claude-test)" in message and "cost: $0.0123" in message
    last = git(out, "log", "-1", "--format=%B")
    assert "test_bpb: 1.570000" in last and "val_bpb: 1.610000 → 1.550000" in last
    assert f"moved to island 1 via {run.ids['moved']}" in git(out, "log", "-1", "--format=%B", shas[3])


def test_git_export_of_a_worse_descendant_tags_the_best_only_if_on_its_path(run, tmp_path):
    # an id prefix is enough when it is unique
    summary = export_run(run.path, tmp_path / "after", candidate=run.ids["after"][:4])
    assert summary.candidate_id == run.ids["after"]
    assert summary.tags == (f"candidate-{run.ids['after']}",)
    assert summary.steps == 3
    summary = export_run(run.path, tmp_path / "root", candidate=run.ids["root"])
    assert summary.candidate_id == run.ids["root"] and summary.steps == 0


def test_patches_apply_to_the_template_with_git_am(run, tmp_path):
    out = tmp_path / "patches"
    summary = export_run(run.path, out, fmt="patches")
    names = [p.name for p in summary.files]
    # the template's own train.py is the gpu seed: the first patch switches to the cpu seed
    assert len(names) == 5 and names[0].startswith("0001-") and names[-1].startswith("0005-")
    assert "Add-a-5-warmup" in names[-1]
    work = tmp_path / "work"
    shutil.copytree(run.template, work, ignore=shutil.ignore_patterns("__pycache__"))
    git(work, "init", "-q")
    git(work, "add", "-A")
    git(work, "commit", "-qm", "template")
    git(work, "am", *[str(p) for p in summary.files])
    assert (work / "train.py").read_bytes() == run.files["best"]["train.py"].encode()
    assert (work / "train_cpu.py").read_text() == SEED  # the template is otherwise untouched
    assert git(work, "log", "-1", "--format=%s").strip() == "Add a 5% warmup"


def test_dir_export_is_the_runnable_directory(run, tmp_path):
    out = tmp_path / "d"
    out.mkdir()  # an empty directory is fine
    export_run(run.path, out, candidate=run.ids["c"], fmt="dir")
    found = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert found == {"prepare.py", "lib/helper.py", "program.md", "train.py", "RUN.md"}
    assert (out / "train.py").read_bytes() == run.files["c"]["train.py"].encode()
    note = (out / "RUN.md").read_text()
    seed = read_run(run.path).by_id[run.ids["c"]].seed  # no seed in its metrics: the candidate's
    assert (f"    python prepare.py run --profile cpu-micro --data synthetic --seed {seed} "
            "--result result.json\n") in note
    assert "val_bpb: 1.610000" in note and "device: not recorded" in note


def test_forced_dir_export_of_a_crash_says_it_has_no_score(run, tmp_path):
    export_run(run.path, tmp_path / "d", candidate=run.ids["crashed"], fmt="dir", force=True)
    note = (tmp_path / "d" / "RUN.md").read_text()
    assert "The run recorded no score: the candidate crashed: RuntimeError: shape mismatch" in note


def test_refusals_name_the_problem_and_write_nothing(run, tmp_path):
    with pytest.raises(ExportError, match="no candidate 'nope'"):
        export_run(run.path, tmp_path / "x", candidate="nope")
    with pytest.raises(ExportError, match=r"crashed \(RuntimeError: shape mismatch.*--force"):
        export_run(run.path, tmp_path / "x", candidate=run.ids["crashed"])
    with pytest.raises(ExportError, match="timed_out"):
        export_run(run.path, tmp_path / "x", candidate=run.ids["timed"])
    with pytest.raises(ExportError, match="ambiguous"):
        export_run(run.path, tmp_path / "x", candidate="c")
    with pytest.raises(ExportError, match="unknown export format"):
        export_run(run.path, tmp_path / "x", fmt="zip")
    with pytest.raises(ExportError, match="not a run directory"):
        export_run(tmp_path, tmp_path / "x")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="not an empty directory"):
        export_run(run.path, busy)
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]
    assert not (tmp_path / "x").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".evolve-export-")]


def test_forced_crashed_export_says_so_in_the_message(run, tmp_path):
    out = tmp_path / "forced"
    summary = export_run(run.path, out, candidate=run.ids["crashed"], force=True)
    assert summary.status == "crashed"
    assert (out / "train.py").read_text() == run.files["crashed"]["train.py"]
    assert "status: crashed: RuntimeError: shape mismatch" in git(out, "log", "-1", "--format=%B")


def test_export_reads_a_live_run_without_writing_to_it(tmp_path):
    built, store = build_run(tmp_path / "live", keep_writer=True)
    assert store is not None
    try:
        before = {p: p.stat().st_mtime_ns for p in built.path.rglob("*")
                  if p.is_file() and not p.name.startswith("store.sqlite")}
        summary = export_run(built.path, tmp_path / "out")
        assert summary.candidate_id == built.ids["best"]
        # the writer goes on while we read, and is not blocked by us
        store.set_meta("tick", "1")
        after = {p: p.stat().st_mtime_ns for p in built.path.rglob("*")
                 if p.is_file() and not p.name.startswith("store.sqlite")}
        assert after == before
    finally:
        store.close()
