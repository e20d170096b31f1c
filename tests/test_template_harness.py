"""The harness end to end: real subprocesses of prepare.py on cpu-micro with real torch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TEMPLATE = Path(__file__).resolve().parent.parent / "train_template"
SEED = (TEMPLATE / "train_cpu.py").read_text()


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("evolve-cache")


def experiment(tmp_path: Path, train_source: str = SEED) -> Path:
    """An experiment directory as the worker lays it out: the harness plus the candidate."""
    work = tmp_path / "exp"
    shutil.copytree(TEMPLATE, work, ignore=shutil.ignore_patterns(
        "train.py", "train_cpu.py", "program.md", "__pycache__"))
    (work / "train.py").write_text(train_source)
    return work


def harness(work: Path, cache_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "prepare.py", "run", "--profile", "cpu-micro", "--data", "synthetic",
           "--seed", "0", "--result", "result.json", "--cache-dir", str(cache_dir), *args]
    return subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=300)


def result(work: Path) -> dict:
    return json.loads((work / "result.json").read_text())


CONTRACT_KEYS = {"status", "val_bpb", "entropy_floor_bpb", "training_seconds", "total_seconds",
                 "peak_vram_mb", "mfu_percent", "total_tokens_M", "num_steps", "num_params_M",
                 "depth", "device", "profile", "data", "seed", "budget_kind", "budget_fraction"}


@pytest.fixture(scope="module")
def honest(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> tuple[dict, str]:
    """The seed on cpu-micro, scored on val and test: (result, stdout)."""
    work = experiment(tmp_path_factory.mktemp("honest"))
    proc = harness(work, cache_dir, "--splits", "val,test")
    assert proc.returncode == 0, proc.stderr
    return result(work), proc.stdout


def test_micro_trains_scores_and_is_deterministic(tmp_path: Path, cache_dir: Path, honest) -> None:
    r1, stdout = honest
    assert CONTRACT_KEYS | {"test_bpb"} <= set(r1)
    assert r1["status"] == "ok" and r1["budget_kind"] == "tokens" and r1["device"] == "cpu"
    assert r1["entropy_floor_bpb"] < r1["val_bpb"] < 8
    assert 0 < r1["test_bpb"] < 8
    assert isinstance(r1["num_steps"], int) and r1["num_steps"] > 0 and r1["depth"] == 3
    assert "---\nval_bpb:" in stdout and "num_steps:" in stdout
    work = experiment(tmp_path)
    second = harness(work, cache_dir)
    assert second.returncode == 0, second.stderr
    assert result(work)["val_bpb"] == r1["val_bpb"]
    assert "test_bpb" not in result(work)


CHEATS = '''
import prepare, profiles, sys
print("val_bpb:          0.000001")
for p in list(profiles.PROFILES.values()):
    object.__setattr__(p, "val_tokens", 64)
if "__main__" in sys.modules:  # whatever process this is, shrink every table it can reach
    main = sys.modules["__main__"]
    for p in list(getattr(main, "PROFILES", {}).values()):
        object.__setattr__(p, "val_tokens", 64)
'''


def test_printing_a_score_or_shrinking_eval_does_not_change_the_record(
        tmp_path: Path, cache_dir: Path, honest) -> None:
    cheat = experiment(tmp_path, SEED.replace("\ndef train(ctx):", CHEATS + "\n\ndef train(ctx):"))
    proc = harness(cheat, cache_dir)
    assert proc.returncode == 0, proc.stderr
    assert "val_bpb:          0.000001" in proc.stdout  # printed, and ignored
    assert result(cheat)["val_bpb"] == honest[0]["val_bpb"]


def test_text_data_works_on_a_small_file(tmp_path: Path, cache_dir: Path) -> None:
    text = tmp_path / "corpus.txt"
    text.write_text("\n\n".join(f"Paragraph {i}: the quick brown fox jumps over the lazy dog "
                                f"number {i * 7 % 13} and then rests." for i in range(400)))
    work = experiment(tmp_path)
    proc = harness(work, cache_dir, "--data", f"text:{text}")
    assert proc.returncode == 0, proc.stderr
    r = result(work)
    assert r["data"] == f"text:{text}" and "entropy_floor_bpb" not in r
    assert 0 < r["val_bpb"] < 8


def test_nan_loss_fails_fast_with_a_clear_line(tmp_path: Path, cache_dir: Path) -> None:
    work = experiment(tmp_path, SEED.replace("\nMATRIX_LR = 0.02 ", '\nMATRIX_LR = float("nan") '))
    proc = harness(work, cache_dir)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and "diverged" in last
    assert result(work)["status"] == "crash" and "diverged" in result(work)["reason"]


PEEKING = '''
import torch
class Peek(torch.nn.Module):
    def __init__(self, vocab):
        super().__init__()
        self.vocab = vocab
        self.w = torch.nn.Parameter(torch.zeros(1))
    def forward(self, idx):
        nxt = torch.roll(idx, -1, dims=1)  # the next token: a leak
        return 20.0 * torch.nn.functional.one_hot(nxt, self.vocab).float() + self.w
def train(ctx):
    for _ in ctx.batches(4):
        pass
    return Peek(ctx.vocab_size)
'''


def test_causality_probe_rejects_a_model_that_sees_the_next_token(
        tmp_path: Path, cache_dir: Path) -> None:
    work = experiment(tmp_path, PEEKING)
    proc = harness(work, cache_dir)
    assert proc.returncode == 1
    assert result(work)["status"] == "invalid"
    assert "causality check failed" in result(work)["reason"]
    assert proc.stderr.strip().splitlines()[-1].startswith("error: causality check failed")


MEMORISER = '''
import os, pathlib
import numpy as np
import torch
import corpus

class Memory(torch.nn.Module):
    """Causal, but it has read the val split: it knows each next byte of every eval row."""
    def __init__(self, table, vocab):
        super().__init__()
        self.table, self.vocab = table, vocab
        self.w = torch.nn.Parameter(torch.zeros(1))
    def forward(self, idx):
        out = torch.full((*idx.shape, self.vocab), -20.0)
        for b, row in enumerate(idx.tolist()):
            for t in range(len(row)):
                seen = self.table.get(bytes(row[: t + 1]), {})
                for nxt, count in seen.items():  # the empirical next-byte distribution
                    out[b, t, nxt] = float(np.log(count / sum(seen.values())))
        return out + self.w

def train(ctx):
    for _ in ctx.batches(4):
        pass
    root = pathlib.Path(os.environ["LEAK_CACHE"])
    val = sorted(root.glob("synthetic-*/val.bin"))[0]
    tokens = np.fromfile(val, dtype=np.uint8)
    starts = np.fromfile(val.with_name("val.starts.bin"), dtype=np.int64)
    rows, _ = corpus.eval_rows(corpus.Split(tokens, starts), ctx.seq_len, 8192)
    table = {}
    for row in rows.tolist():
        for t in range(len(row) - 1):
            seen = table.setdefault(bytes(row[: t + 1]), {})
            seen[row[t + 1]] = seen.get(row[t + 1], 0) + 1
    return Memory(table, ctx.vocab_size)
'''


def test_a_score_below_the_entropy_floor_is_rejected(tmp_path: Path, cache_dir: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # Without the jail (no bwrap: EVOLVE_BWRAP names none) the memoriser can read val from
    # the cache; the floor check is what stops it then.
    work = experiment(tmp_path, MEMORISER)
    monkeypatch.setenv("LEAK_CACHE", str(cache_dir))
    monkeypatch.setenv("EVOLVE_BWRAP", str(tmp_path / "no-bwrap"))
    proc = harness(work, cache_dir)
    assert proc.returncode == 1, proc.stderr
    assert result(work)["status"] == "invalid"
    assert "below the entropy floor" in result(work)["reason"]


def test_in_the_jail_the_data_cache_is_not_there(tmp_path: Path, cache_dir: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    sys.path.insert(0, str(TEMPLATE))
    import jail

    if jail.sandbox_problem() is not None:
        pytest.skip(f"no jail on this node: {jail.sandbox_problem()}")
    work = experiment(tmp_path, MEMORISER)
    monkeypatch.setenv("LEAK_CACHE", str(cache_dir))
    proc = harness(work, cache_dir)
    assert proc.returncode == 1, proc.stderr
    assert result(work)["status"] == "crash" and "IndexError" in result(work)["reason"]


ORACLE = '''
import functools
import torch
from synthlang import Language, LanguageSpec

@functools.cache
def language():  # built where the model runs: the model itself must pickle (torch.save)
    return Language(LanguageSpec())

class Oracle(torch.nn.Module):
    """Knows the generator: per-byte probabilities from the topic posterior."""
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
    def forward(self, idx):
        # rows start at a document boundary; a dummy last token makes one output per input
        rows = [torch.as_tensor(language().next_byte_logprobs(
                    torch.cat([r, torch.tensor([10])]).numpy())) for r in idx]
        return torch.stack(rows).float() + self.w

def train(ctx):
    for _ in ctx.batches(4):
        pass
    return Oracle()
'''


def test_an_oracle_that_knows_the_generator_scores_the_floor(tmp_path: Path, cache_dir: Path) -> None:
    work = experiment(tmp_path, ORACLE)
    proc = harness(work, cache_dir)
    assert proc.returncode == 0, proc.stderr
    r = result(work)
    assert r["val_bpb"] == pytest.approx(r["entropy_floor_bpb"], abs=1e-5)
