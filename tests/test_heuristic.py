"""The heuristic mutator, the constants editor and the unified diff helper."""

from __future__ import annotations

import ast
import asyncio
import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from evolve.guard.preflight import preflight
from evolve.mutate.base import MutationContext, Mutator, Proposal, unified_diff
from evolve.mutate.constants import find_constants, replace_constant
from evolve.mutate.heuristic import HeuristicMutator
from evolve.mutate.moves import CHOICES, LEARNING_RATES, MOVES, NotApplicable
from population.candidate import Candidate

REPO = Path(__file__).resolve().parent.parent

FIXTURE = textwrap.dedent(
    '''\
    """A small seed with the contract's constants block."""
    import torch

    # ---- model ----
    DEPTH = 4            # transformer blocks
    MODEL_DIM = 128      # residual width — a multiple of HEAD_DIM
    HEAD_DIM = 32
    MLP_RATIO = 4
    ACTIVATION = "relu2"  # relu2 | gelu | silu | swiglu
    NORM_PLACEMENT = 'pre'
    INIT_SCHEME = "scaled"
    TIE_EMBEDDINGS: bool = False
    LOGIT_SOFTCAP = 15.0
    QK_NORM = True
    ROPE_BASE = 10000
    # ---- optimisation ----
    BATCH_SIZE = 16
    EMBED_LR = 0.6
    UNEMBED_LR = 0.004
    MATRIX_LR = 0.02     # Muon
    SCALAR_LR = 0.04
    WEIGHT_DECAY = 0.0
    ADAM_BETA1 = 0.8
    ADAM_BETA2 = 0.95
    MUON_MOMENTUM = 0.95
    WARMUP_FRAC = 0.0
    WARMDOWN_FRAC = 0.4
    FINAL_LR_FRAC = 0.0
    GRAD_CLIP = 1.0


    def train(ctx):
        return torch.nn.Linear(1, 1)
    '''
)
SEEDS = [p for p in (REPO / "train_template/train_cpu.py", REPO / "train_template/train.py")]


def context(source: str, *, seed: int = 0, tried: tuple[str, ...] = ()) -> MutationContext:
    parent = Candidate(id="p", parent_id=None, island=0, generation=0, files={"train.py": source})
    return MutationContext(
        parent=parent,
        lineage=[parent],
        inspirations=[],
        tried_on_parent=tried,
        notebook="",
        program_md="",
        mutable_files=["train.py"],
        seed=seed,
    )


def propose(source: str, **kwargs: object) -> Proposal:
    return HeuristicMutator().propose_now(context(source, **kwargs))  # type: ignore[arg-type]


def changed_lines(old: str, new: str) -> list[tuple[str, str]]:
    old_lines, new_lines = old.split("\n"), new.split("\n")
    assert len(old_lines) == len(new_lines)
    return [(a, b) for a, b in zip(old_lines, new_lines, strict=True) if a != b]


# ---- the catalogue --------------------------------------------------------------------------


def test_catalogue_has_the_research_moves_the_issue_lists() -> None:
    kinds = {move.kind for move in MOVES}
    assert len(kinds) >= 12
    for kind in (
        "learning_rate",
        "depth",
        "width",
        "mlp_ratio",
        "batch_size",
        "warmup",
        "warmdown",
        "final_lr_frac",
        "weight_decay",
        "adam_betas",
        "muon_momentum",
        "grad_clip",
        "activation",
        "norm_placement",
        "init_scheme",
        "tie_embeddings",
        "logit_softcap",
        "qk_norm",
        "rope_base",
    ):
        assert kind in kinds


@pytest.mark.parametrize("move", MOVES, ids=lambda m: m.kind)
def test_every_edit_of_every_move_is_a_clean_in_place_edit(move) -> None:
    constants = find_constants(FIXTURE)
    edits = move.edits(constants)
    assert edits, move.kind
    for edit in edits:
        source = FIXTURE
        for name, value in sorted(edit.changes, key=lambda c: -constants[c[0]].lineno):
            source = replace_constant(source, constants[name], value)
        ast.parse(source)
        after = find_constants(source)
        for name, value in edit.changes:
            assert after[name].value == value and after[name].value != constants[name].value
        diff = changed_lines(FIXTURE, source)
        assert len(diff) == len(edit.changes)
        for old_line, new_line in diff:  # only the literal changed: name and comment kept
            assert old_line.split("=")[0] == new_line.split("=")[0]
            assert old_line.partition("#")[2] == new_line.partition("#")[2]
        assert " -> " in edit.description and "\n" not in edit.description
        assert edit.rationale


def test_description_reads_like_a_research_step() -> None:
    descriptions = [e.description for e in MOVES[0].edits(find_constants(FIXTURE))]
    assert "MATRIX_LR 0.02 -> 0.03 (x1.5)" in descriptions
    assert "MATRIX_LR 0.02 -> 0.01 (x0.5)" in descriptions


def test_string_edits_keep_the_quote_style() -> None:
    constants = find_constants(FIXTURE)
    source = replace_constant(FIXTURE, constants["NORM_PLACEMENT"], "post")
    assert "NORM_PLACEMENT = 'post'\n" in source
    source = replace_constant(FIXTURE, constants["ACTIVATION"], "gelu")
    assert 'ACTIVATION = "gelu"  # relu2 | gelu | silu | swiglu\n' in source


def test_offsets_are_characters_not_bytes() -> None:
    source = 'NOTE = "é—ü"; MATRIX_LR = 0.02  # ünïcode\n'
    constants = find_constants(source)
    assert constants["MATRIX_LR"].source_text == "0.02"
    assert replace_constant(source, constants["MATRIX_LR"], 0.03) == (
        'NOTE = "é—ü"; MATRIX_LR = 0.03  # ünïcode\n'
    )


def test_negative_and_non_literal_constants() -> None:
    constants = find_constants("A = -2\nB = 2 * 3\nC: float = 1e-3\n")
    assert constants["A"].value == -2 and constants["C"].value == 0.001
    assert constants["B"].value is None and constants["B"].source_text == "2 * 3"


# ---- the mutator ----------------------------------------------------------------------------


def test_proposal_is_a_real_edit_that_parses_and_keeps_comments() -> None:
    proposal = propose(FIXTURE)
    assert not proposal.error and proposal.mutator == "heuristic"
    new = proposal.files["train.py"]
    ast.parse(new)
    assert new != FIXTURE
    comments = [line.partition("#")[2] for line in FIXTURE.split("\n")]
    assert comments == [line.partition("#")[2] for line in new.split("\n")]
    assert proposal.description and proposal.rationale
    assert proposal.applied_edit.startswith("train.py:")


def test_deterministic_under_the_seed() -> None:
    first = [propose(FIXTURE, seed=s) for s in range(20)]
    again = [propose(FIXTURE, seed=s) for s in range(20)]
    assert first == again
    assert len({p.description for p in first}) >= 10  # and the seeds spread over the catalogue


def test_propose_is_async_and_the_mutator_fits_the_protocol() -> None:
    mutator = HeuristicMutator()
    assert isinstance(mutator, Mutator) and mutator.name == "heuristic"
    proposal = asyncio.run(mutator.propose(context(FIXTURE, seed=3)))
    assert proposal == mutator.propose_now(context(FIXTURE, seed=3))


def test_values_stay_in_their_valid_ranges_over_a_long_walk() -> None:
    source = FIXTURE
    for seed in range(400):
        proposal = propose(source, seed=seed)
        assert not proposal.error, proposal.error
        source = proposal.files["train.py"]
        c = {name: const.value for name, const in find_constants(source).items()}
        assert c["DEPTH"] >= 1 and c["BATCH_SIZE"] >= 1 and c["MLP_RATIO"] >= 1
        assert c["HEAD_DIM"] >= 8 and c["HEAD_DIM"] % 2 == 0
        assert c["MODEL_DIM"] >= c["HEAD_DIM"] and c["MODEL_DIM"] % c["HEAD_DIM"] == 0
        assert all(c[name] > 0 for name in LEARNING_RATES)
        assert 0 < c["ADAM_BETA1"] < 1 and 0 < c["ADAM_BETA2"] < 1 and 0 < c["MUON_MOMENTUM"] < 1
        assert 0 <= c["WARMUP_FRAC"] and 0 <= c["WARMDOWN_FRAC"]
        assert c["WARMUP_FRAC"] + c["WARMDOWN_FRAC"] <= 1 and 0 <= c["FINAL_LR_FRAC"] <= 1
        assert c["WEIGHT_DECAY"] >= 0 and c["GRAD_CLIP"] >= 0 and c["LOGIT_SOFTCAP"] >= 0
        assert c["ROPE_BASE"] > 0
        assert isinstance(c["DEPTH"], int) and isinstance(c["MATRIX_LR"], float)
        for name, allowed in CHOICES.items():
            assert c[name] in allowed
        assert isinstance(c["TIE_EMBEDDINGS"], bool) and isinstance(c["QK_NORM"], bool)


def test_integer_written_values_scale_without_collapsing_to_zero() -> None:
    source = "EMBED_LR = 1\nGRAD_CLIP = 1\nROPE_BASE = 10000\nLOGIT_SOFTCAP = 15\nBATCH_SIZE = 3\n"
    constants = find_constants(source)
    descriptions = {e.description for m in MOVES for e in _edits_or_none(m, constants)}
    assert "EMBED_LR 1 -> 0.5 (x0.5)" in descriptions
    assert "GRAD_CLIP 1 -> 0.5 (x0.5)" in descriptions
    assert "ROPE_BASE 10000 -> 5000" in descriptions
    assert "LOGIT_SOFTCAP 15 -> 7.5 (x0.5)" in descriptions
    assert "BATCH_SIZE 3 -> 1" in descriptions and "BATCH_SIZE 3 -> 6" in descriptions


def _edits_or_none(move, constants):
    try:
        return move.edits(constants)
    except NotApplicable:
        return []


def test_missing_and_odd_constants_are_skipped_with_a_reason() -> None:
    source = (
        'DEPTH = compute_depth()\nMATRIX_LR = "fast"\nBATCH_SIZE = 8\n\ndef train(ctx):\n    pass\n'
    )
    seen = {propose(source, seed=s).description for s in range(30)}
    assert seen == {"BATCH_SIZE 8 -> 16", "BATCH_SIZE 8 -> 4"}
    failed = propose(source, tried=("BATCH_SIZE 8 -> 16", "BATCH_SIZE 8 -> 4"))
    assert failed.error.startswith("heuristic: no move applies to train.py")
    assert "DEPTH is `compute_depth()`, not a literal" in failed.error
    assert "MATRIX_LR is 'fast' (str), expected int or float" in failed.error
    assert "ACTIVATION is not defined" in failed.error
    assert "batch_size: all 2 variants already tried on this parent" in failed.error
    assert failed.files == {"train.py": source}


def test_wrong_kind_of_bool_and_str_constants() -> None:
    failed = propose("QK_NORM = 1\nACTIVATION = 3\n")
    assert "QK_NORM is 1 (int), expected bool" in failed.error
    assert "ACTIVATION is 3 (int), expected str" in failed.error


def test_already_tried_edits_are_avoided() -> None:
    source = "DEPTH = 4\n"
    first = propose(source, seed=1)
    assert first.description in {"DEPTH 4 -> 5 (+1 block)", "DEPTH 4 -> 3 (-1 block)"}
    for seed in range(10):
        other = propose(source, seed=seed, tried=(first.description,))
        assert other.description not in ("", first.description)


def test_the_bound_on_tries_is_kept() -> None:
    mutator = HeuristicMutator(max_tries=2)
    failed = mutator.propose_now(context("X = 1\n"))
    assert failed.error and failed.error.count(";") == 1  # two moves tried, two reasons


def test_parent_that_does_not_parse_is_an_error_not_a_crash() -> None:
    failed = propose("DEPTH = (\n")
    assert failed.error.startswith("heuristic: train.py does not parse (line 1)")


@pytest.mark.parametrize("seed_path", SEEDS, ids=lambda p: p.name)
def test_the_real_seed_script_every_move_applies_and_passes_preflight(seed_path: Path) -> None:
    source = seed_path.read_text()
    constants = find_constants(source)
    for move in MOVES:
        assert move.edits(constants), move.kind
    children = [propose(source, seed=s) for s in range(20)]
    for child in children:
        assert not child.error
        reason = preflight({"train.py": source}, child.files, mutable_files=["train.py"])
        assert reason is None, reason


# ---- unified diff -------------------------------------------------------------------------


def git_apply(tmp_path: Path, old: dict[str, str], new: dict[str, str]) -> dict[str, str]:
    """Apply unified_diff(old, new) with real git to a checkout of `old`; return the files."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for name, text in old.items():
        (repo / name).write_bytes(text.encode())
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    patch = tmp_path / "change.patch"
    patch.write_bytes(unified_diff(old, new).encode())
    subprocess.run(["git", "apply", "--check", str(patch)], cwd=repo, check=True)
    subprocess.run(["git", "apply", str(patch)], cwd=repo, check=True)
    return {p.name: p.read_bytes().decode() for p in repo.iterdir() if p.is_file()}


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ({"train.py": "a\nb\nc\n"}, {"train.py": "a\nB\nc\n"}),
        ({"train.py": "a\nb\nc"}, {"train.py": "a\nb\nc\n"}),  # newline added at the end
        ({"train.py": "a\nb\nc\n"}, {"train.py": "a\nb\nC"}),  # newline removed at the end
        ({"train.py": "x = 1  \r\n\fy = 2\n"}, {"train.py": "x = 1  \r\n\fy = 3\n"}),
        ({"train.py": "a\n"}, {"train.py": "a\n", "model.py": "new\nfile"}),  # an added file
        ({"train.py": "a\n", "old.py": "gone\n"}, {"train.py": "b\n"}),  # a deleted file
    ],
)
def test_unified_diff_applies_with_git(
    tmp_path: Path, old: dict[str, str], new: dict[str, str]
) -> None:
    assert git_apply(tmp_path, old, new) == new


def test_unified_diff_shape() -> None:
    diff = unified_diff({"train.py": "a\nb"}, {"train.py": "a\nc"})
    assert diff.startswith("diff --git a/train.py b/train.py\n--- a/train.py\n+++ b/train.py\n")
    assert diff.endswith("-b\n\\ No newline at end of file\n+c\n\\ No newline at end of file\n")
    assert unified_diff({"train.py": "same\n"}, {"train.py": "same\n"}) == ""


# ---- the moves' values are ones the seed really trains with -----------------------------------

STRUCTURAL_COMBOS = [  # every structural value the catalogue can pick, in two short runs
    {
        "ACTIVATION": "swiglu",
        "NORM_PLACEMENT": "sandwich",
        "INIT_SCHEME": "normal",
        "QK_NORM": False,
        "LOGIT_SOFTCAP": 0.0,
        "GRAD_CLIP": 1.0,
        "WARMUP_FRAC": 0.05,
        "FINAL_LR_FRAC": 0.1,
        "HEAD_DIM": 16,
    },
    {
        "ACTIVATION": "gelu",
        "NORM_PLACEMENT": "post",
        "INIT_SCHEME": "scaled",
        "TIE_EMBEDDINGS": True,
        "MLP_RATIO": 3,
        "WEIGHT_DECAY": 0.1,
        "ROPE_BASE": 500.0,
    },
]


@pytest.mark.slow
@pytest.mark.parametrize("combo", STRUCTURAL_COMBOS, ids=lambda c: c["ACTIVATION"])
def test_structural_values_train_on_the_cpu_seed(
    combo: dict[str, object], tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Every value the catalogue can pick is one the CPU seed runs with (real harness)."""
    seed = (REPO / "train_template/train_cpu.py").read_text()
    source = seed
    for name, value in combo.items():
        source = replace_constant(source, find_constants(source)[name], value)
    run_dir = tmp_path / "run"
    shutil.copytree(REPO / "train_template", run_dir, ignore=shutil.ignore_patterns("__pycache__"))
    (run_dir / "train.py").write_text(source)
    cache = tmp_path_factory.getbasetemp() / "heuristic-cache"
    env = {**os.environ, "EVOLVE_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "prepare.py",
        "run",
        "--profile",
        "cpu-micro",
        "--data",
        "synthetic",
        "--seed",
        "0",
        "--result",
        "result.json",
    ]
    done = subprocess.run(
        command, cwd=run_dir, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "ok" and math.isfinite(result["val_bpb"])
