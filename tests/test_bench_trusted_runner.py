"""The strategy benchmark's trusted runner (benchmarks/trusted_runner.py) gives the refereed
harness's numbers: the seed and edited children trained both ways (real `prepare.py run`
subprocesses through `run_candidate`, and the runner's persistent worker processes) score the
same val_bpb and test_bpb, with the same steps and tokens; a child that raises crashes in
both with the same reason; a run over its timeout has its worker killed and replaced. The
benchmark keeps the two runners' cached results apart and refuses the trusted runner for any
operator but heuristic and merge.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TEMPLATE = REPO / "train_template"
sys.path.insert(0, str(REPO / "benchmarks"))

import bench_parallel as bench  # noqa: E402
from trusted_runner import TrustedRunner  # noqa: E402
from virtual_executor import ResultCache, run_deterministic  # noqa: E402

from evolve.config import load_config  # noqa: E402
from evolve.workers.pristine import template_hash  # noqa: E402
from evolve.workers.runner import RunRequest, run_candidate  # noqa: E402

SEED = (TEMPLATE / "train_cpu.py").read_text()


def edit(source: str, old: str, new: str) -> str:
    assert old in source, old
    return source.replace(old, new, 1)


# the seed and children the heuristic mutator's moves make (one constant, or two at once)
CHILDREN = {
    "seed": (SEED, 0),
    "depth": (edit(SEED, "DEPTH = 3 ", "DEPTH = 2 "), 0),
    "gelu-tied": (edit(edit(SEED, 'ACTIVATION = "relu2"', 'ACTIVATION = "gelu"'),
                       "TIE_EMBEDDINGS = False", "TIE_EMBEDDINGS = True"), 5),
    "lr-batch": (edit(edit(SEED, "MATRIX_LR = 0.02 ", "MATRIX_LR = 0.03 "),
                      "BATCH_SIZE = 16 ", "BATCH_SIZE = 12 "), 1001),
}
RAISES = edit(SEED, "        loss.backward()\n",
              "        loss.backward()\n        if step == 2:\n"
              "            raise RuntimeError('boom at step 2')\n")
# a model that trains like the seed's but fails when scored (eval mode only): wrong logits'
# shape, or an exception in forward()
MISSHAPEN = SEED + """
_train_forward = GPT.forward
GPT.forward = lambda self, idx: _train_forward(self, idx) if self.training else \\
    _train_forward(self, idx)[:, :-1]
"""
EVAL_RAISES = SEED + """
_train_forward = GPT.forward
def _forward(self, idx):
    if not self.training:
        raise ValueError("no scoring today")
    return _train_forward(self, idx)
GPT.forward = _forward
"""
SLEEPS = edit(SEED, "def train(ctx):\n", "def train(ctx):\n    import time\n    time.sleep(120)\n")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("evolve-cache")


@pytest.fixture(scope="module")
def runner():
    with TrustedRunner(2) as pool:
        yield pool


def request(work: Path, cache_dir: Path, name: str, source: str, seed: int,
            timeout_s: float = 300.0) -> RunRequest:
    return RunRequest(candidate_id=name, files={"train.py": source}, template_dir=str(TEMPLATE),
                      profile="cpu-micro", data="synthetic", seed=seed, timeout_s=timeout_s,
                      work_root=str(work), splits=("val", "test"), cache_dir=str(cache_dir),
                      network="allow", template_hash=template_hash(TEMPLATE))


@pytest.fixture(scope="module")
def both(tmp_path_factory, cache_dir, runner) -> dict[str, tuple]:
    """name -> (harness result, trusted result), for the children and the one that raises."""
    work = tmp_path_factory.mktemp("work")
    cases = {**CHILDREN, "raises": (RAISES, 0), "misshapen": (MISSHAPEN, 0),
             "eval-raises": (EVAL_RAISES, 0)}
    requests = {name: request(work, cache_dir, name, src, seed)
                for name, (src, seed) in cases.items()}
    run_candidate(requests["seed"])  # the data cache built once, before two runs race for it
    with ThreadPoolExecutor(2) as pool:
        harness = dict(zip(requests, pool.map(run_candidate, requests.values()), strict=True))
        trusted = dict(zip(requests, pool.map(runner, requests.values()), strict=True))
    return {name: (harness[name], trusted[name]) for name in requests}


@pytest.mark.parametrize("name", list(CHILDREN))
def test_the_trusted_runner_scores_as_the_refereed_harness(both, name):
    harness, trusted = both[name]
    assert harness.outcome == "done", harness.reason
    assert trusted.outcome == "done", trusted.reason
    h, t = harness.metrics, trusted.metrics
    assert abs(h["val_bpb"] - t["val_bpb"]) <= 1e-6, (h["val_bpb"], t["val_bpb"])
    assert abs(h["test_bpb"] - t["test_bpb"]) <= 1e-6, (h["test_bpb"], t["test_bpb"])
    for key in ("num_steps", "total_tokens_M", "num_params_M", "depth", "entropy_floor_bpb",
                "status", "budget_kind", "profile", "data", "seed", "budget_fraction"):
        assert h[key] == t[key], key
    assert h["causality_leaks"] == 0  # the harness checked causality; the trusted runner cannot


def test_the_children_differ(both):
    """The comparison means something: each child scores differently from the seed."""
    scores = {both[name][1].metrics["val_bpb"] for name in CHILDREN}
    assert len(scores) == len(CHILDREN)


def test_a_child_that_raises_crashes_in_both_alike(both):
    harness, trusted = both["raises"]
    assert harness.outcome == trusted.outcome == "crashed"
    assert trusted.reason == harness.reason == "train.py crashed: RuntimeError: boom at step 2"
    assert "Traceback" in trusted.log_tail and "boom at step 2" in trusted.log_tail
    assert trusted.metrics == {}


def test_a_model_that_fails_when_scored_is_judged_alike(both):
    harness, trusted = both["misshapen"]
    assert harness.outcome == trusted.outcome == "invalid", (harness.reason, trusted.reason)
    assert "expected logits of shape" in trusted.reason
    harness, trusted = both["eval-raises"]
    assert harness.outcome == trusted.outcome == "crashed", (harness.reason, trusted.reason)
    assert trusted.reason == "the model failed during evaluation: ValueError: no scoring today"
    assert harness.reason == trusted.reason


def test_a_run_over_its_timeout_kills_and_replaces_its_worker(tmp_path, cache_dir, runner,
                                                              both):
    before = set(runner.pids())
    late = runner(request(tmp_path, cache_dir, "sleeps", SLEEPS, 0, timeout_s=3.0))
    assert late.outcome == "timed_out" and "killed and replaced" in late.reason
    after = set(runner.pids())
    assert len(after) == 2 and len(before - after) == 1  # one worker replaced by a new one
    assert not Path(f"/proc/{(before - after).pop()}").exists()  # killed and reaped
    # both workers (the fresh one among them) still give the harness's numbers
    with ThreadPoolExecutor(2) as pool:
        again = list(pool.map(runner, [request(tmp_path, cache_dir, f"again{i}", SEED, 0)
                                       for i in range(2)]))
    for result in again:
        assert result.outcome == "done"
        assert result.metrics["val_bpb"] == both["seed"][1].metrics["val_bpb"]


def test_the_cache_keeps_the_runners_apart(tmp_path, cache_dir, runner):
    one = request(tmp_path, cache_dir, "seed", SEED, 0)
    harness, trusted = ResultCache(tmp_path, "harness"), ResultCache(tmp_path, "trusted")
    assert harness.key(one) != trusted.key(one)
    with pytest.raises(ValueError, match="cannot take 'trusted' runs"):
        run_deterministic(one, harness, runner)
    entry = run_deterministic(one, trusted, runner)
    assert entry["outcome"] == "done" and trusted.misses == 1
    assert harness.get(one) is None and trusted.get(one) == entry


def test_the_trusted_runner_is_refused_for_other_operators(tmp_path):
    llm = load_config(REPO / "configs" / "default.yaml", [
        f"output.results_dir={tmp_path}",
        "mutation.operators=[{kind: heuristic, weight: 1.0}, "
        "{kind: llm, weight: 1.0, model: claude-sonnet-5-5}]"])
    with pytest.raises(ValueError, match=r"operator\(s\) llm: use --runner harness"):
        bench.check_runner("trusted", llm)
    bench.check_runner("harness", llm)  # the refereed harness takes anything
    for strategy in bench.strategies(4):  # every pre-registered strategy is ours alone
        bench.check_runner("trusted", load_config(*bench.run_config(
            strategy, 4, 0, 8, tmp_path)))
    with pytest.raises(ValueError, match="lacks"):
        bench.check_runner("trusted", load_config(REPO / "configs" / "default.yaml", [
            f"template={REPO / 'tests' / 'fixtures' / 'sleep_template'}"]))


def test_the_workers_train_on_one_thread(runner, tmp_path, cache_dir):
    probe = edit(SEED, "def train(ctx):\n",
                 "def train(ctx):\n    print('threads', torch.get_num_threads(), "
                 "__import__('os').environ['OMP_NUM_THREADS'])\n"
                 "    raise RuntimeError('probe')\n")
    result = runner(request(tmp_path, cache_dir, "probe", probe, 0))
    assert "threads 1 1" in result.log_tail
    assert os.environ.get("OMP_NUM_THREADS") == "1"  # conftest: so the harness runs likewise
