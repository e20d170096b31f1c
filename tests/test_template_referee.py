"""The referee: real prepare.py subprocesses (cpu-micro, synthetic data) with candidates that
attack the channel, the budget and the score, and an in-process reference for honest scores."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from test_template_harness import SEED, TEMPLATE, experiment, harness, result

sys.path.insert(0, str(TEMPLATE))

import allowance  # noqa: E402
import harness as harness_module  # noqa: E402
import roles  # noqa: E402
from context import BatchServer, TrainContext  # noqa: E402
from corpus import JudgedFailure, Split, eval_rows  # noqa: E402
from profiles import get_profile  # noqa: E402
from referee import Evaluator, serve_trainer  # noqa: E402
from scoring import below_floor, evaluate_bpb  # noqa: E402
from sources import load_synthetic  # noqa: E402


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("evolve-cache")


@pytest.fixture(scope="module")
def honest(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> dict:
    work = experiment(tmp_path_factory.mktemp("honest"))
    proc = harness(work, cache_dir, "--splits", "val,test")
    assert proc.returncode == 0, proc.stderr
    return result(work)


def reference_scores(cache_dir: Path) -> dict[str, float]:
    """The seed trained and scored in this process, as the harness did before the referee:
    same data, same order, same seeds, same maths (no roles, no channel, no artefact)."""
    profile = get_profile("cpu-micro")
    corpus = load_synthetic(cache_dir, train_tokens=profile.synthetic_train_tokens,
                            val_tokens=profile.val_tokens, seq_len=profile.seq_len)
    spec = importlib.util.spec_from_file_location("reference_seed", TEMPLATE / "train_cpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        random.seed(0)
        np.random.seed(0)
        torch.manual_seed(0)
        cpu = torch.device("cpu")
        ctx = TrainContext.local(profile, cpu, corpus.load_split("train"), corpus.vocab_size, 0, 1.0)
        model = module.train(ctx).eval()
        out = {}
        for split in ("val", "test"):
            rows, first = eval_rows(corpus.load_split(split), profile.seq_len, profile.val_tokens)
            out[split] = evaluate_bpb(model, rows, first, corpus.token_bytes, cpu,
                                      profile.eval_batch_rows)
        return out
    finally:
        torch.set_num_threads(threads)


def test_honest_scores_equal_the_in_process_reference(cache_dir: Path, honest: dict) -> None:
    reference = reference_scores(cache_dir)
    assert abs(honest["val_bpb"] - reference["val"]) <= 1e-6
    assert abs(honest["test_bpb"] - reference["test"]) <= 1e-6
    assert honest["total_tokens_M"] * 1e6 == 8192 and honest["num_steps"] == 8
    # the seed is deterministic on CPU: the fresh evaluator reproduces every probed log-prob
    assert honest["causality_leaks"] == 0 and honest["causality_mean_nats"] == 0.0
    assert honest["causality_cuts"] >= 900 and honest["causality_replayed"] > 0
    assert honest["sandboxed"] in (True, False) and honest["causality_seconds"] > 0


_REFEREE_ALONE = """
import json, sys
sys.path.insert(0, ".")
import prepare
code = prepare.main(["run", "--profile", "cpu-micro", "--data", "synthetic", "--seed", "0",
                     "--result", "result.json", "--cache-dir", sys.argv[1]])
print(json.dumps({"code": code, "torch": sorted(m for m in sys.modules if m.split(".")[0] == "torch")}))
"""


def test_the_referee_of_a_cpu_profile_never_imports_torch(tmp_path: Path, cache_dir: Path,
                                                          honest: dict) -> None:
    """Every run's trainer, scorer and prober import torch (~1.5 CPU-s each); the referee's
    maths on a CPU profile is numpy, so a fourth import is not paid. Its score is the same."""
    work = experiment(tmp_path)
    proc = subprocess.run([sys.executable, "-c", _REFEREE_ALONE, str(cache_dir)], cwd=work,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                          text=True, timeout=300)
    said = json.loads(proc.stdout.strip().splitlines()[-1])
    assert said == {"code": 0, "torch": []}, proc.stderr[-2000:]
    assert result(work)["val_bpb"] == honest["val_bpb"]


def candidate(body: str) -> str:
    """A train.py: the seed's model (so it scores like the seed) with `body` as train()."""
    return SEED.replace("\ndef train(ctx):", "\ndef _seed_train(ctx):") + "\n" + body


RAW_CHANNEL = '''
import socket, struct, sys, json
def channel():
    fd = int(sys.argv[sys.argv.index("--channel-fd") + 1])  # the trainer's own argv
    return socket.socket(fileno=fd)
def send(sock, header, payload=b""):
    data = json.dumps(header).encode()
    sock.sendall(struct.pack(">I", len(data)) + data + payload)
'''

PROTOCOL_BREAKERS = {
    "oversized header": "channel().sendall(struct.pack('>I', 1 << 30) + b'{' * 4096)",
    "huge batch": "send(channel(), {'type': 'batch', 'rows': 10**9})",
    "forged type": "send(channel(), {'type': 'score', 'val_bpb': 0.0})",
    "payload on a request": "send(channel(), {'type': 'batch', 'rows': 4, 'nbytes': 8}, b'x' * 8)",
    "bool rows": "send(channel(), {'type': 'batch', 'rows': True})",
}


@pytest.mark.parametrize("attack", PROTOCOL_BREAKERS, ids=list(PROTOCOL_BREAKERS))
def test_the_channel_rejects_what_the_protocol_does_not_allow(tmp_path: Path, cache_dir: Path,
                                                              attack: str) -> None:
    body = RAW_CHANNEL + f"def train(ctx):\n    {PROTOCOL_BREAKERS[attack]}\n    import time\n" \
        "    time.sleep(30)\n    return _seed_train(ctx)\n"
    work = experiment(tmp_path, candidate(body))
    started = time.monotonic()
    proc = harness(work, cache_dir)
    assert proc.returncode == 1, proc.stderr
    got = result(work)
    assert got["status"] == "invalid" and "val_bpb" not in got
    assert "protocol" in got["reason"] or "contract" in got["reason"]
    assert time.monotonic() - started < 30  # judged at once, not after the trainer's sleep


LIAR = '''
def train(ctx):
    received = 0
    for x, _ in ctx.batches(16):
        received += x.shape[0]
        # rewrite everything the ctx knows: the referee's count does not live here
        ctx._state = {"tokens_used": 0, "steps": 0, "counted_seconds": 0.0, "progress": 0.0}
    for _ in range(20):  # and keep asking the referee directly
        rows, _ = ctx._source.next(16)
        received += 0 if rows is None else rows.shape[0]
    print(f"ROWS_RECEIVED {received}", flush=True)
    return GPT(ctx.vocab_size, ctx.seq_len)
'''


def test_the_budget_is_the_referees_count_whatever_the_trainer_does(
        tmp_path: Path, cache_dir: Path) -> None:
    work = experiment(tmp_path, candidate(LIAR))
    proc = harness(work, cache_dir)
    assert proc.returncode == 0, proc.stderr
    got = result(work)
    assert "ROWS_RECEIVED 128\n" in proc.stdout  # 8 batches of 16 rows x 64 tokens = 8192
    assert got["total_tokens_M"] * 1e6 == 8192 and got["num_steps"] == 8


CHEATING_MODELS = '''
import torch
class Cheat(torch.nn.Module):
    """Uniform logits plus a cheat; `kind` picks which (the model pickles with it)."""
    def __init__(self, vocab, kind):
        super().__init__()
        self.vocab, self.kind = vocab, kind
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.cache, self.counts = {}, torch.zeros(vocab, vocab)
    def peeked(self, idx, bonus, where=None):
        nxt = torch.nn.functional.one_hot(torch.roll(idx, -1, dims=1), self.vocab).float()
        nxt[:, -1] = 0
        if where is not None:
            nxt = nxt * where[..., None]
        return torch.zeros(*idx.shape, self.vocab) + bonus * nxt + self.w
    def forward(self, idx):
        B, T = idx.shape
        if self.kind == "sparse":  # peeks on 0.5% of positions, picked by token and place
            h = (idx * 7919 + torch.arange(T) * 104729) % 1000
            return self.peeked(idx, 20.0, (h < 5).float())
        if self.kind == "bonus":  # a small bonus to the true next token, everywhere
            return self.peeked(idx, 0.05)
        if self.kind == "cache":  # peeks, and answers any prefix it has seen from a cache
            out = self.peeked(idx, 20.0)
            for b in range(B):
                for t in range(T):
                    key = tuple(idx[b, : t + 1].tolist())
                    out[b, t] = self.cache.setdefault(key, out[b, t])
            return out
        if self.kind == "learn":  # bigram counts of every row scored so far
            out = torch.log(self.counts[idx] + 0.1) + self.w
            self.counts.index_put_((idx[:, :-1].reshape(-1), idx[:, 1:].reshape(-1)),
                                   torch.ones(B * (T - 1)), accumulate=True)
            return out
        return torch.zeros(B, T, self.vocab) + self.w  # honest uniform
'''


@pytest.mark.parametrize("kind", ["sparse", "bonus", "cache", "learn"])
def test_the_causality_check_catches_evaluators_that_cheat(tmp_path: Path, cache_dir: Path,
                                                           kind: str) -> None:
    body = CHEATING_MODELS + f'''
def train(ctx):
    for _ in ctx.batches(16):
        pass
    return Cheat(ctx.vocab_size, {kind!r})
'''
    work = experiment(tmp_path, body)
    proc = harness(work, cache_dir)
    assert proc.returncode == 1, proc.stderr + proc.stdout[-2000:]
    got = result(work)
    assert got["status"] == "invalid" and got["reason"].startswith("causality check failed")


def test_an_honest_uniform_model_passes_the_same_check(tmp_path: Path, cache_dir: Path) -> None:
    body = CHEATING_MODELS + '''
def train(ctx):
    for _ in ctx.batches(16):
        pass
    return Cheat(ctx.vocab_size, "none")
'''
    work = experiment(tmp_path, body)
    proc = harness(work, cache_dir)
    assert proc.returncode == 0, proc.stderr
    assert result(work)["val_bpb"] == pytest.approx(8.0, abs=1e-3)  # uniform over 256 bytes


@pytest.mark.parametrize("value", ["float('nan')", "float('inf')"])
def test_a_non_finite_score_is_invalid(tmp_path: Path, cache_dir: Path, value: str) -> None:
    body = f'''
import torch
class Broken(torch.nn.Module):
    def __init__(self, vocab):
        super().__init__()
        self.vocab = vocab
        self.w = torch.nn.Parameter(torch.zeros(1))
    def forward(self, idx):
        out = torch.zeros(*idx.shape, self.vocab) + self.w
        out[0, 0, 0] = {value}
        return out
def train(ctx):
    for _ in ctx.batches(16):
        pass
    return Broken(ctx.vocab_size)
'''
    work = experiment(tmp_path, body)
    proc = harness(work, cache_dir)
    assert proc.returncode == 1, proc.stderr
    assert result(work)["status"] == "invalid" and "non-finite" in result(work)["reason"]


def test_the_floor_check_is_nan_safe() -> None:
    assert below_floor(float("nan"), 1.0) is not None
    assert "not finite" in below_floor(2.0, float("nan"))
    assert "not finite" in below_floor(2.0, float("inf"))
    assert below_floor(0.5, 1.0) is not None and below_floor(1.0, 1.0) is None
    assert below_floor(2.0, None) is None


def test_the_result_goes_down_the_pipe_and_to_the_file(tmp_path: Path, cache_dir: Path) -> None:
    work = experiment(tmp_path)
    read_end, write_end = os.pipe()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "prepare.py", "run", "--profile", "cpu-micro", "--data", "synthetic",
           "--seed", "0", "--result", "result.json", "--result-fd", str(write_end),
           "--cache-dir", str(cache_dir)]
    proc = subprocess.Popen(cmd, cwd=work, env=env, pass_fds=(write_end,),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        piped = pipe.read()  # EOF only once the referee closed it: no role holds a copy
    assert proc.wait(timeout=300) == 0, proc.stderr.read()
    assert json.loads(piped) == result(work) and result(work)["status"] == "ok"
    assert not (work / "roles").exists()  # the roles' folders go with the roles


def fake_trainer(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "fake_trainer.py"
    script.write_text(f'''
import sys, time
sys.path.insert(0, {str(TEMPLATE)!r})
from channel import Channel
ch = Channel.from_fd(int(sys.argv[sys.argv.index("--channel-fd") + 1]))
def batch(rows):
    ch.send({{"type": "batch", "rows": rows}})
    return ch.receive(("batch", "end"), max_payload=1 << 24)[0]["type"]
{body}
''')
    return script


def time_server(**changes) -> tuple[BatchServer, object]:
    profile = dataclasses.replace(get_profile("cpu-micro"), budget_kind="time", **changes)
    tokens = np.arange(5000, dtype=np.int64) % 256
    split = Split(tokens, np.arange(0, 4000, 50, dtype=np.int64))
    return BatchServer(profile, split, 0, 1.0, clock=time.monotonic), profile


def test_a_trainer_that_keeps_its_model_past_the_budget_is_killed_and_invalid(tmp_path) -> None:
    server, profile = time_server(budget=0.5, handback_s=1.0, clock_skip_steps=0)
    script = fake_trainer(tmp_path, '''
while batch(4) == "batch":
    time.sleep(0.01)
time.sleep(60)  # "training" on batches it kept, instead of handing back
ch.send({"type": "done"})
''')
    role = roles.spawn("trainer", script, [], workdir=tmp_path / "t", readonly=[], hidden=[],
                       env=dict(os.environ), sandboxed=False)
    started = time.monotonic()
    try:
        with pytest.raises(JudgedFailure, match="training past the budget") as caught:
            serve_trainer(role, server, profile.handback_s)
    finally:
        roles.end(role)
    assert caught.value.status == "invalid"
    assert time.monotonic() - started < 0.5 + 1.0 + 5.0


def test_warm_up_is_bounded_in_batch_size(tmp_path) -> None:
    server, profile = time_server(budget=0.3, handback_s=5.0, clock_skip_steps=3, warmup_max_s=30.0)
    script = fake_trainer(tmp_path, '''
batch(2); batch(2); time.sleep(0.4)  # two small warm-up batches, slow, then
while batch(64) == "batch":       # training uses batches of another size
    pass
ch.send({"type": "done"})
''')
    role = roles.spawn("trainer", script, [], workdir=tmp_path / "t", readonly=[], hidden=[],
                       env=dict(os.environ), sandboxed=False)
    try:
        serve_trainer(role, server, profile.handback_s)
    finally:
        roles.end(role)
    # the warm-up was not of the size training used: its seconds count, so the 0.4 s pause
    # alone spent the 0.3 s budget before a single batch of 64 was served
    assert server.origin == server.warmup_started
    assert server.batches_served == 2


def test_a_warm_up_that_never_ends_is_bounded(tmp_path) -> None:
    server, profile = time_server(budget=0.3, handback_s=0.5, clock_skip_steps=5, warmup_max_s=0.5)
    script = fake_trainer(tmp_path, '''
batch(2)
time.sleep(60)  # one warm-up batch, then unclocked "compilation" for ever
ch.send({"type": "done"})
''')
    role = roles.spawn("trainer", script, [], workdir=tmp_path / "t", readonly=[], hidden=[],
                       env=dict(os.environ), sandboxed=False)
    started = time.monotonic()
    try:
        with pytest.raises(JudgedFailure, match="training past the budget"):
            serve_trainer(role, server, profile.handback_s)
    finally:
        roles.end(role)
    assert time.monotonic() - started < 0.5 + 0.3 + 0.5 + 5.0


def serve_and_judge_handback(tmp_path: Path, body: str, **changes) -> Path:
    """A fake trainer under a time budget, served, then judged as the harness does once it
    has handed back; the artefact it wrote."""
    tmp_path.mkdir(exist_ok=True)
    server, profile = time_server(**changes)
    work = tmp_path / "t"
    script = fake_trainer(tmp_path, body)
    role = roles.spawn("trainer", script, [], workdir=work, readonly=[], hidden=[],
                       env=dict(os.environ), sandboxed=False)
    try:
        handback = serve_trainer(role, server, profile.handback_s)
    finally:
        roles.end(role)
    artefact = work / "model.pt"
    harness_module.allowance_after_handback(profile, server, handback, artefact)
    return artefact


KEEPS_TRAINING = '''
while batch(4) == "batch":
    time.sleep(0.01)
time.sleep({extra})  # "a short cool-down" on batches it kept, well inside the hard deadline
with open("model.pt", "wb") as out:
    {write}
ch.send({{"type": "done"}})
'''


def test_a_trainer_that_trains_during_the_hand_back_is_invalid(tmp_path: Path) -> None:
    # a hard deadline of 10 s, but a 1 MB model needs 0.3 s + 1 MB at the assumed write rate
    body = KEEPS_TRAINING.format(extra=1.5, write="out.write(b'w' * (1 << 20))")
    with pytest.raises(JudgedFailure, match="training past the budget") as caught:
        serve_and_judge_handback(tmp_path, body, budget=0.5, handback_s=10.0, handback_base_s=0.3)
    assert caught.value.status == "invalid" and "1.0 MB model" in caught.value.reason


def test_the_hand_back_allowance_grows_with_what_was_written(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(allowance, "HANDBACK_BYTES_PER_S", 10e6)  # a slow disk: 10 MB/s
    # 16 MB: 1.6 s to save at that rate, so a hand-back 0.5 s after the budget is plain saving
    written = KEEPS_TRAINING.format(extra=0.5, write="out.write(b'w' * (16 << 20))")
    serve_and_judge_handback(tmp_path / "written", written, budget=0.5, handback_s=10.0,
                             handback_base_s=0.3)
    # ...but a 16 MB hole costs nothing to write and buys nothing
    sparse = KEEPS_TRAINING.format(extra=0.5, write="out.truncate(16 << 20)")
    with pytest.raises(JudgedFailure, match="0.0 MB model"):
        serve_and_judge_handback(tmp_path / "sparse", sparse, budget=0.5, handback_s=10.0,
                                 handback_base_s=0.3)


FAKE_EVALUATOR = '''
import sys, time
import numpy as np
sys.path.insert(0, {template!r})
from channel import Channel
ch = Channel.from_fd(int(sys.argv[sys.argv.index("--channel-fd") + 1]))
ch.send({{"type": "hello"}})
ch.receive(("load",))
time.sleep({load_s})
ch.send({{"type": "ready", "info": {{}}}})
served = 0
while True:
    header, payload = ch.receive(("rows", "bye"), max_payload=1 << 24)
    if header["type"] == "bye":
        break
    b, t = header["shape"]
    time.sleep({first_s} if served == 0 else {each_s})  # "training" on batches it kept
    served += 1
    ch.send({{"type": "logits", "shape": [b, t, 16]}}, np.zeros((b, t, 16), np.float32).tobytes())
'''


def run_evaluator(tmp_path: Path, batches: int = 10, load_s: float = 0.0, first_s: float = 0.0,
                  each_s: float = 0.0) -> Evaluator:
    """A fake evaluator with 1 s + 100 us per token (each batch: 4 x 64 tokens, 25.6 ms)."""
    script = tmp_path / "fake_evaluator.py"
    script.write_text(FAKE_EVALUATOR.format(template=str(TEMPLATE), load_s=load_s,
                                            first_s=first_s, each_s=each_s))
    role = roles.spawn("evaluator", script, [], workdir=tmp_path / "e", readonly=[], hidden=[],
                       env=dict(os.environ), sandboxed=False)
    evaluator = Evaluator(role, 16, torch.device("cpu"),
                          allowance.EvalAllowance(floor_s=1.0, seconds_per_token=1e-4))
    try:
        evaluator.load("model.pt", "train.py", False)
        for _ in range(batches):
            assert evaluator.logits(torch.zeros(4, 64, dtype=torch.long)).shape == (4, 64, 16)
        evaluator.bye()
    finally:
        roles.end(role)
    return evaluator


def test_an_honest_evaluator_stays_inside_its_allowance(tmp_path: Path) -> None:
    evaluator = run_evaluator(tmp_path, batches=10)
    assert evaluator.tokens == 10 * 256 and 0 < evaluator.most_used < 1


@pytest.mark.parametrize("where", ["load_s", "first_s"])
def test_an_evaluator_that_trains_before_scoring_is_stopped_at_its_allowance(
        tmp_path: Path, where: str) -> None:
    started = time.monotonic()
    with pytest.raises(JudgedFailure, match="training past the budget") as caught:
        run_evaluator(tmp_path, **{where: 30.0})
    assert caught.value.status == "invalid" and "needed more than its 1.0 s" in caught.value.reason
    assert time.monotonic() - started < 1.1 + 5.0  # stopped at the deadline, not after 30 s


def test_an_evaluator_that_trains_a_little_in_every_forward_is_caught(tmp_path: Path) -> None:
    # 0.3 s a batch against 1 s + 25.6 ms a batch: over by the fourth, long before the tenth
    with pytest.raises(JudgedFailure, match="training past the budget") as caught:
        run_evaluator(tmp_path, batches=10, each_s=0.3, first_s=0.3)
    assert "score 1,024 tokens" in caught.value.reason or "score 768 tokens" in caught.value.reason


SLOW_FIRST_FORWARD = '''
_first = [True]


class Lazy(GPT):
    """The seed's model, which "finishes its warmdown" in its first forward pass in eval mode."""

    def forward(self, idx):
        if not self.training and _first[0]:
            _first[0] = False
            import time
            time.sleep(60)
        return super().forward(idx)


def train(ctx):
    model = _seed_train(ctx)
    model.__class__ = Lazy
    return model
'''


TIME_PROFILE = '''
import dataclasses as _dataclasses  # noqa: E402

PROFILES["cpu-micro-time"] = _dataclasses.replace(PROFILES["cpu-micro"], name="cpu-micro-time",
                                                  budget_kind="time", budget=2.0)
'''


def test_the_harness_bounds_what_an_evaluator_computes(tmp_path: Path, cache_dir: Path) -> None:
    work = experiment(tmp_path, candidate(SLOW_FIRST_FORWARD))
    (work / "profiles.py").write_text((work / "profiles.py").read_text() + TIME_PROFILE)
    started = time.monotonic()
    proc = harness(work, cache_dir, "--profile", "cpu-micro-time")
    assert proc.returncode == 1, proc.stderr
    got = result(work)
    assert got["status"] == "invalid" and "training past the budget" in got["reason"]
    assert "the evaluator needed more than" in got["reason"]
    assert time.monotonic() - started < 60  # judged at its allowance, not after the sleep
