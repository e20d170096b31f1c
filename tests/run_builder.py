"""Builds real run directories for the export and report tests: a template on disk, a
config.yaml, and a real SQLite store filled the way the controller fills it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from evolve.inspect.runview import file_diff
from evolve.run.rundir import RunDir
from population.candidate import Candidate, Status
from population.store import Store

SEED = '''"""Seed training script (cpu profiles)."""

import torch

# --- constants: the heuristic mutator edits these ---
DEPTH = 2            # transformer blocks
MODEL_DIM = 64       # residual width
HEAD_DIM = 16        # attention head size
MLP_RATIO = 4        # MLP hidden = ratio x MODEL_DIM
BATCH_SIZE = 8       # sequences per step
MATRIX_LR = 0.02     # Muon learning rate
EMBED_LR = 0.3       # AdamW learning rate for embeddings
WARMUP_FRAC = 0.0    # of the budget
ACTIVATION = "relu2"


def train(ctx):
    torch.manual_seed(ctx.seed)
    model = torch.nn.Embedding(ctx.vocab_size, ctx.vocab_size)
    for x, _y in ctx.batches(BATCH_SIZE):
        model(x)
    return model
'''

FLOOR = 1.25


def set_constant(source: str, name: str, value: str) -> str:
    """The heuristic mutator's kind of edit: one constant changed."""
    new, count = re.subn(rf"^{name} = [^ #\n]+", f"{name} = {value}", source, flags=re.M)
    assert count == 1, name
    return new


@dataclass
class BuiltRun:
    path: Path
    template: Path
    ids: dict[str, str] = field(default_factory=dict)     # role -> candidate id
    files: dict[str, dict[str, str]] = field(default_factory=dict)


class _Writer:
    """Adds candidates the way the controller does (proposed -> running -> result)."""

    def __init__(self, store: Store, run_dir: RunDir) -> None:
        self.store, self.run_dir, self.clock, self.seq = store, run_dir, 1_700_000_000.0, 0

    def child(self, parent: Candidate | None, files: dict[str, str], *, island: int,
              description: str, status: Status, val_bpb: float | None = None,
              rationale: str = "", kept: bool = False, extra: dict | None = None,
              mutator: str = "heuristic", model: str = "", cost: float = 0.0,
              reason: str = "") -> Candidate:
        self.seq += 1
        self.clock += 60.0
        cid = f"c{self.seq:03d}{'abcdef'[self.seq % 6]}{island}"
        candidate = Candidate(
            id=cid, parent_id=parent.id if parent else None, island=island,
            generation=parent.generation + 1 if parent else 0, files=files,
            description=description, rationale=rationale, mutator=mutator, model=model,
            diff=file_diff(parent.files if parent else None, files) if parent else "",
            usage={"input_tokens": 1200, "output_tokens": 300} if model else {},
            cost_usd=cost, seed=self.seq, created_at=self.clock - 50,
            status=Status.REJECTED if status is Status.REJECTED else Status.PROPOSED,
            reason=reason if status is Status.REJECTED else "",
            finished_at=self.clock if status is Status.REJECTED else None)
        self.store.add(candidate)
        if status is not Status.REJECTED:
            self.store.set_status(cid, Status.RUNNING)
            metrics = {} if val_bpb is None else {
                "status": "ok", "val_bpb": val_bpb, "entropy_floor_bpb": FLOOR,
                "training_seconds": 20.0, "peak_vram_mb": 0.0, "num_params_M": 0.1,
                **(extra or {})}
            self.store.record_result(cid, status=status, metrics=metrics, reason=reason,
                                     now=self.clock)
        final = self.store.get(cid)
        self.run_dir.on_candidate(final)
        if status is not Status.REJECTED:
            self.run_dir.on_result(final, kept)
        return final


def build_run(base: Path, *, keep_writer: bool = False) -> tuple[BuiltRun, Store | None]:
    """A run over two islands: a four-step best lineage, a migration, a crash, a rejection."""
    template = base / "train_template"
    (template / "lib").mkdir(parents=True)
    (template / "__pycache__").mkdir()
    (template / "__pycache__" / "prepare.cpython-311.pyc").write_bytes(b"\0junk")
    (template / "prepare.py").write_text("# the harness entry point\nprint('harness')\n")
    (template / "lib" / "helper.py").write_text("HELP = 1\n")
    (template / "program.md").write_text("# Research brief\nLower val_bpb.\n")
    (template / "train.py").write_text("# gpu seed\nDEPTH = 8\n")
    (template / "train_cpu.py").write_text(SEED)
    run_dir = RunDir.create(base / "results", "demo")
    config = {"name": "demo", "template": "train_template", "profile": "cpu-micro",
              "data": "synthetic", "mutable_files": ["train.py"],
              "population": {"size": 2, "islands": 2, "migration_interval": 4},
              "selection": {"strategy": "tournament", "tournament_size": 2}, "seed": 0}
    run_dir.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    store = Store.open(run_dir.store_path)
    w = _Writer(store, run_dir)
    built = BuiltRun(run_dir.path, template)

    root = w.child(None, {"train.py": SEED}, island=0, description="seed", status=Status.DONE,
                   val_bpb=2.10, kept=True)
    root1 = store.add_copy(root.id, 1, now=w.clock + 1)
    s1 = set_constant(SEED, "DEPTH", "4")
    a = w.child(root, {"train.py": s1}, island=0, description="Deepen to 4 blocks",
                rationale="More depth buys capacity at this width.\n\nCheap on CPU.",
                status=Status.DONE, val_bpb=1.90, kept=True, mutator="llm",
                model="claude-test", cost=0.0123)
    worse = w.child(root1, {"train.py": set_constant(SEED, "MATRIX_LR", "0.2")}, island=1,
                    description="Raise the matrix LR <x10> & see", status=Status.DONE, val_bpb=2.40)
    crashed = w.child(a, {"train.py": set_constant(s1, "HEAD_DIM", "13")}, island=0,
                      description="Odd head size", status=Status.CRASHED,
                      reason="RuntimeError: shape mismatch in attention")
    rejected = w.child(a, {"train.py": s1 + "import os\n"}, island=0,
                       description="Import os", status=Status.REJECTED,
                       reason="pre-flight: duplicate of its parent after normalising")
    s2 = set_constant(s1, "MATRIX_LR", "0.03")
    b = w.child(a, {"train.py": s2}, island=0, description="Raise the Muon LR to 0.03",
                rationale="Deeper nets tolerate a larger LR.", status=Status.DONE,
                val_bpb=1.72, kept=True)
    side = w.child(root1, {"train.py": set_constant(SEED, "MLP_RATIO", "3")}, island=1,
                   description="Narrower MLP", status=Status.DONE, val_bpb=2.05, kept=True)
    moved = store.add_copy(b.id, 1, now=w.clock + 1)
    s3 = set_constant(s2, "ACTIVATION", '"swiglu"').replace('"""Seed', '"""Seed — Δ')
    s3 = s3.rstrip("\n")  # no newline at the end: export must keep that byte for byte
    c = w.child(moved, {"train.py": s3}, island=1, description="Switch the MLP to SwiGLU",
                status=Status.DONE, val_bpb=1.61, kept=True, mutator="llm", model="claude-test",
                cost=0.02)
    timed = w.child(c, {"train.py": set_constant(s3, "BATCH_SIZE", "512")}, island=1,
                    description="Huge batch", status=Status.TIMED_OUT,
                    reason="timed out after 60 s")
    s4 = set_constant(s3, "WARMUP_FRAC", "0.05")
    best = w.child(c, {"train.py": s4}, island=1, description="Add a 5% warmup",
                   rationale="Warmup steadies the first Muon steps.", status=Status.DONE,
                   val_bpb=1.55, kept=True, extra={"test_bpb": 1.57})
    after = w.child(b, {"train.py": set_constant(s2, "EMBED_LR", "0.5")}, island=0,
                    description="Raise the embedding LR", status=Status.DONE, val_bpb=1.75)
    built.ids = {"root": root.id, "root_copy": root1.id, "a": a.id, "worse": worse.id,
                 "crashed": crashed.id, "rejected": rejected.id, "b": b.id, "side": side.id,
                 "moved": moved.id, "c": c.id, "timed": timed.id, "best": best.id,
                 "after": after.id}
    built.files = {role: dict(store.get(cid).files) for role, cid in built.ids.items()}
    if keep_writer:
        return built, store
    store.close()
    return built, None
