"""One experiment, refereed: train in one untrusted process, score in another, check causality
in a third, and keep the data, the clock, the counts and the loss in this one.

prepare.py parses the command line and loads the data source; run() here is the referee.
It never imports or unpickles candidate code. The untrusted roles (trainer_role.py,
evaluator_role.py) start jailed (jail.py) where the node allows it, each in a folder of its
own under ./roles; every one of their processes is dead before the result exists.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import sysconfig
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import jail
import roles
from context import BatchServer
from corpus import Corpus, JudgedFailure, UsageError, eval_rows
from profiles import Profile, get_profile

HERE = Path(__file__).resolve().parent
ROLES_DIR = "roles"
ARTEFACT = "model.pt"
_SKIP = {ROLES_DIR, "__pycache__", ".git", "result.json", "run.log"}
_started = [time.time()]  # time.time() at the harness's start (run() sets it)


@dataclass
class Cast:
    """The roles of one run and where each works."""

    root: Path
    trainer: roles.Role
    scorer: roles.Role
    prober: roles.Role
    sandboxed: bool

    @property
    def train_dir(self) -> Path:
        return self.root / "trainer"

    def all(self) -> list[roles.Role]:
        return [self.trainer, self.scorer, self.prober]


def _candidate_copy(train: Path, into: Path) -> Path:
    """Copy the train script's folder (the candidate's files) into the trainer's folder."""
    for entry in train.parent.iterdir():
        if entry.name in _SKIP or entry.is_symlink():
            continue
        if entry.is_dir():
            shutil.copytree(entry, into / entry.name, symlinks=False,
                            ignore=shutil.ignore_patterns("__pycache__", ROLES_DIR))
        elif entry.is_file():
            shutil.copy2(entry, into / entry.name)
    return into / train.name


def _python_paths() -> list[Path]:
    """The interpreter and its libraries: read-only inside the jail."""
    found = {Path(sys.prefix), Path(sys.base_prefix), Path(sys.executable).resolve().parent}
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        if value := sysconfig.get_path(key):
            found.add(Path(value))
    return sorted(p for p in found if p.exists())


def cast(args: argparse.Namespace, profile: Profile, vocab_size: int,
         problem: str | None) -> Cast:
    """Lay out ./roles and start the trainer and both evaluators, jailed unless `problem` says
    why the jail does not work here. All three start at once: the evaluators' interpreters
    load torch during the trainer's start-up, which is not clocked, rather than during its
    clocked training, whose CPU they would take."""
    root = Path.cwd() / ROLES_DIR
    if root.exists():
        shutil.rmtree(root)
    train_dir = root / "trainer"
    train_dir.mkdir(parents=True)
    train = _candidate_copy(args.train, train_dir)
    if problem:
        print(f"referee: NOT sandboxed ({problem}); the roles run as plain processes", flush=True)
    env = roles.role_env(os.environ, args.seed)
    readonly = [HERE, *_python_paths()]
    hidden = [args.cache_dir]
    common = dict(env=env, sandboxed=problem is None)
    # No role sees another's folder (the experiment folder is bound read-only into each):
    # what the scorer writes must never reach the probe that checks it.
    scorer_dir, prober_dir = root / "scorer", root / "prober"
    scorer_dir.mkdir()
    prober_dir.mkdir()
    trainer = roles.spawn(
        "trainer", HERE / "trainer_role.py",
        ["--profile", profile.name, "--seed", str(args.seed), "--budget-fraction",
         repr(float(args.budget_fraction)), "--vocab-size", str(vocab_size), "--train", str(train),
         "--artefact", str(train_dir / ARTEFACT)],
        workdir=train_dir, readonly=readonly, hidden=[*hidden, scorer_dir, prober_dir], **common)
    evaluator = ["--profile", profile.name, "--vocab-size", str(vocab_size)]
    # CUDA: logits travel as IPC handles, which do not open across PID namespaces
    ipc = dict(common, share_pid_namespace=profile.device == "cuda")
    scorer = roles.spawn("evaluator", HERE / "evaluator_role.py", evaluator, workdir=scorer_dir,
                         readonly=[*readonly, train_dir], hidden=[*hidden, prober_dir], **ipc)
    prober = roles.spawn("probe evaluator", HERE / "evaluator_role.py", evaluator,
                         workdir=prober_dir, readonly=[*readonly, train_dir],
                         hidden=[*hidden, scorer_dir], **ipc)
    return Cast(root, trainer, scorer, prober, problem is None)


def referee_device(profile: Profile):
    """Where the referee's maths runs: the GPU's torch device, or None for a CPU profile
    (numpy on the host: the referee then never imports torch, which would cost every run a
    CPU-second and a half beside the three imports its roles need)."""
    if profile.device != "cuda":
        return None
    import torch

    if not torch.cuda.is_available():
        raise UsageError(f"profile {profile.name} needs a CUDA GPU and none is visible")
    return torch.device("cuda", torch.cuda.current_device())


def handed_back_model(cast_: Cast) -> Path:
    """The artefact, once no trainer process is left to change it."""
    artefact = cast_.train_dir / ARTEFACT
    if artefact.is_symlink() or not artefact.is_file():
        raise JudgedFailure("crash", "the trainer handed back no model file")
    return artefact


def run(args: argparse.Namespace, load_corpus: Callable[[], Corpus], start: float) -> dict:
    """Referee one experiment; the result dict. Raises UsageError/DataError/JudgedFailure."""
    _started[0] = start
    profile = get_profile(args.profile)
    with ThreadPoolExecutor(1) as pool:  # the jail's probe (a subprocess) while the data loads
        probing = pool.submit(jail.sandbox_problem)
        corpus = load_corpus()
        server = BatchServer(profile, corpus.load_split("train"), args.seed, args.budget_fraction,
                             clock=time.monotonic)
        problem = probing.result()
    cast_ = cast(args, profile, corpus.vocab_size, problem)
    _note("roles started")
    try:
        result = _referee(args, profile, corpus, server, cast_)
    finally:
        for role in cast_.all():
            roles.end(role)
        roles.sweep()
        shutil.rmtree(cast_.root, ignore_errors=True)
    result["total_seconds"] = time.time() - start
    return result


def _referee(args, profile: Profile, corpus: Corpus, server: BatchServer, cast_: Cast) -> dict:
    from referee import Evaluator, serve_trainer

    device = referee_device(profile)
    handback = serve_trainer(cast_.trainer, server, profile.handback_s)
    _note(f"model handed back ({server.batches_served} batches, {server.tokens_served} tokens)")
    roles.end(cast_.trainer)
    roles.sweep(keep=[cast_.scorer, cast_.prober])  # what the trainer left running dies here
    artefact = handed_back_model(cast_)
    allowance = allowance_after_handback(profile, server, handback, artefact)
    scorer = Evaluator(cast_.scorer, corpus.vocab_size, device, allowance)
    ipc = device is not None  # CUDA
    info = scorer.load(str(artefact), str(cast_.train_dir / args.train.name), ipc)
    result: dict = {"status": "ok", "sandboxed": cast_.sandboxed}
    result.update(_score(args, profile, corpus, scorer, cast_, device, artefact, server.tokens))
    result.update(eval_seconds=scorer.busy_s, eval_allowance_used=scorer.most_used)
    seconds = server.training_seconds()
    tokens = server.tokens_served
    result.update({
        "training_seconds": seconds,
        "peak_vram_mb": handback.peak_mb,
        "mfu_percent": _mfu(info, tokens, seconds, device),
        "total_tokens_M": tokens / 1e6,
        "num_steps": server.batches_served,
        "num_params_M": float(info.get("num_params", 0)) / 1e6,
        "depth": int(info.get("depth", 0)),
        "device": _device_name(device),
        "budget_kind": profile.budget_kind,
        "handback_seconds": handback.waited_s,
        "logits_via": "cuda_ipc" if scorer.ipc else "host",
    })
    return result


def allowance_after_handback(profile: Profile, server: BatchServer, handback, artefact: Path):
    """The hand-back judged against what saving the model needs (time budgets), and the
    evaluators' allowance from the trainer's measured seconds per token (allowance.py)."""
    from allowance import EvalAllowance, handback_problem, written_bytes

    if profile.budget_kind == "time":
        problem = handback_problem(handback.waited_s, written_bytes(artefact),
                                   profile.handback_base_s)
        if problem:
            raise JudgedFailure("invalid", problem)
    first = 3 * profile.eval_batch_rows * profile.seq_len  # the first forward's set-up
    return EvalAllowance.measured(profile.eval_floor_s, first, handback.trainer_seconds,
                                  server.tokens_served, enforced=profile.budget_kind == "time")


def _score(args, profile: Profile, corpus: Corpus, scorer, cast_: Cast, device, artefact: Path,
           train_tokens) -> dict:
    """Score the splits with the scorer, then check causality on val with the fresh prober."""
    from causality import check
    from referee import Evaluator
    from scoring import InvalidModel, below_floor, score_rows

    out: dict = {}
    scored = {}
    try:
        for split in args.splits:
            rows, first = eval_rows(corpus.load_split(split), profile.seq_len, profile.val_tokens)
            scored[split] = (rows, first, score_rows(scorer.logits, rows, first, corpus.token_bytes,
                                                     device, profile.eval_batch_rows))
            out[f"{split}_bpb"] = scored[split][2].bpb
            _note(f"{split} scored")
        scorer.bye()
        roles.end(cast_.scorer)
        roles.sweep(keep=[cast_.prober])
        t0 = time.monotonic()
        prober = Evaluator(cast_.prober, corpus.vocab_size, device, scorer.allowance)
        prober.load(str(artefact), str(cast_.train_dir / args.train.name), device is not None)
        rows, first, val = scored["val"]
        problem, stats = check(prober.logits, val, rows, train_tokens,
                               profile.eval_batch_rows, profile.probe_rows, args.seed, device)
        prober.bye()
        out.update(stats, causality_seconds=time.monotonic() - t0,
                   probe_eval_seconds=prober.busy_s, probe_allowance_used=prober.most_used)
        _note(f"causality checked ({stats['causality_cuts']} cuts)")
        if problem:
            raise JudgedFailure("invalid", problem)
        if corpus.floor_bpb is not None:
            out["entropy_floor_bpb"] = float(corpus.floor_bpb(rows, first))
    except InvalidModel as exc:
        raise JudgedFailure("invalid", str(exc)) from exc
    if (problem := below_floor(out["val_bpb"], out.get("entropy_floor_bpb"))) is not None:
        raise JudgedFailure("invalid", problem)
    for split in args.splits:
        if not math.isfinite(out[f"{split}_bpb"]):
            raise JudgedFailure("invalid", f"{split}_bpb is not finite")
    return out


def _note(message: str) -> None:
    """A line of the run's log, with the seconds since the harness started: where a run's
    time outside its budget goes (start-up, hand-back, each split, the causality pass)."""
    print(f"referee: {message} (at {time.time() - _started[0]:.2f} s)", flush=True)


def _mfu(info: dict, tokens: int, seconds: float, device) -> float:
    from mfu import mfu_of

    flops = info.get("flops_per_token", 0.0)
    return mfu_of(float(flops), tokens, seconds, _device_name(device))


def _device_name(device) -> str:
    if device is None or device.type == "cpu":
        return "cpu"
    import torch

    return torch.cuda.get_device_name(device)
