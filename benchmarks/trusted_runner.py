"""A trusted, in-process runner for the strategy benchmarks only: the same numbers as the
refereed harness, several times faster, for candidates that are our own code.

The refereed harness (`evolve.workers.runner.run_candidate` -> `prepare.py run`) starts a
referee, a jailed trainer, a scorer and a causality prober for every run: about 7 s of wall
time per cpu-bench run, of which under 2 s is training. A benchmark of the offline
`heuristic` and `merge` mutators needs thousands of runs, and their candidates are edits of
our own seed's constants block, not code from an LLM. So this runner trains them in a pool
of `cores` persistent worker processes (spawned; each imports torch once, one thread, and
keeps each corpus it has loaded), with the harness's own modules from the template:

- the candidate's train.py imported as a fresh module from its files (candidate.import_train),
  every RNG seeded as the trainer role seeds it (candidate.seed_everything), and train(ctx)
  fed by the referee's own BatchServer in the same process (TrainContext.local): the same
  batches in the same order, the same token budget and count;
- val and test scored with the referee's maths on the host (scoring.score_rows with numpy,
  the path the referee takes on CPU profiles) from the model's logits, the entropy floor and
  the non-finite checks as the harness judges them.

What it does NOT do, by design: no jail, no separate trainer/evaluator processes, no
hand-back or evaluator allowances, and **no causality pass** (a model that peeks at later
tokens is not caught). That is acceptable only because these candidates are our own code;
never use this runner for anything an LLM or a user wrote. `bench_parallel.py --runner
trusted` refuses strategies with any other operator than heuristic and merge. The refereed
machinery itself is untouched: this module lives under benchmarks/ and nothing imports it.

Also different from a harness run, and measured not to matter for these candidates
(tests/test_bench_trusted_runner.py: equal val_bpb, test_bpb, steps and tokens): the worker
is not a fresh interpreter (PYTHONHASHSEED is the worker's, not the run seed; module-level
torch state persists between runs), and the metrics hold no causality counts or timings.
A crash is "crashed" with the traceback's tail; a non-finite or impossible score "invalid";
a run over its request's timeout has its worker killed and replaced, "timed_out".
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import multiprocessing
import os
import queue
import shutil
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path, PurePosixPath
from typing import Any

from evolve.workers.pristine import harness_files, template_hash
from evolve.workers.runner import TAIL_LINES, TAIL_MAX_CHARS, RunRequest, RunResult

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                    "NUMEXPR_NUM_THREADS")
# the refereed harness's modules this runner uses: a template without them cannot be run here
NEEDED = ("prepare.py", "candidate.py", "context.py", "corpus.py", "profiles.py", "scoring.py")
START_TIMEOUT_S = 300.0  # a worker's interpreter and torch import, on a loaded machine


def check_template(template_dir: str | Path) -> None:
    """Raise ValueError unless `template_dir` holds the refereed harness this runner reuses."""
    missing = [name for name in NEEDED if not (Path(template_dir) / name).is_file()]
    if missing:
        raise ValueError(f"the trusted runner needs the refereed harness's modules; template "
                         f"{template_dir} lacks {', '.join(missing)} (use --runner harness)")


# ------------------------------------------------------------------ the worker process


class _Judged(Exception):
    """The run ended judged: outcome crashed or invalid, with the harness's reason."""

    def __init__(self, outcome: str, reason: str) -> None:
        super().__init__(reason)
        self.outcome, self.reason = outcome, reason


@dataclass
class _Data:
    corpus: Any
    train: Any
    evals: dict[str, tuple[Any, Any]]  # split -> (rows, score_from)
    floor: float | None


class _Worker:
    """The state of one worker process: the harness's modules and the corpora it loaded."""

    def __init__(self) -> None:
        self.template: str | None = None
        self.h: dict[str, Any] = {}
        self.data: dict[tuple[str, str, str], _Data] = {}

    def harness(self, template: str) -> dict[str, Any]:
        """The template's harness modules, imported the way prepare.py serves them."""
        if self.template is None:
            spec = importlib.util.spec_from_file_location("prepare", Path(template) / "prepare.py")
            prepare = importlib.util.module_from_spec(spec)
            sys.modules["prepare"] = prepare
            spec.loader.exec_module(prepare)  # its finder now serves the harness's modules
            self.h = {"prepare": prepare, **{name: importlib.import_module(name) for name in (
                "candidate", "context", "corpus", "profiles", "scoring")}}
            self.template = template
        elif template != self.template:
            raise ValueError(f"this worker serves template {self.template}, not {template}")
        return self.h

    def load(self, profile: Any, data: str, cache_dir: str) -> _Data:
        key = (profile.name, data, cache_dir)
        if key not in self.data:
            corpus = self.h["prepare"].load_corpus(data, profile, Path(cache_dir))
            evals = {s: self.h["corpus"].eval_rows(corpus.load_split(s), profile.seq_len,
                                                   profile.val_tokens) for s in ("val", "test")}
            floor = (float(corpus.floor_bpb(*evals["val"])) if corpus.floor_bpb is not None
                     else None)
            self.data[key] = _Data(corpus, corpus.load_split("train"), evals, floor)
        return self.data[key]

    def run(self, req: dict[str, Any]) -> dict[str, Any]:
        """One request: outcome, metrics, reason and the captured output's tail."""
        log = io.StringIO()
        metrics: dict[str, Any] = {}
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            try:
                metrics = self.train_and_score(req)
                outcome, reason = "done", ""
            except _Judged as judged:
                outcome, reason = judged.outcome, judged.reason
                print(f"error: {reason}")
        tail = "\n".join(log.getvalue().splitlines()[-TAIL_LINES:])[-TAIL_MAX_CHARS:]
        return {"outcome": outcome, "metrics": metrics, "reason": " ".join(reason.split())[:500],
                "log_tail": tail}

    def train_and_score(self, req: dict[str, Any]) -> dict[str, Any]:
        h = self.harness(req["template_dir"])
        profile = h["profiles"].get_profile(req["profile"])
        if profile.device != "cpu" or profile.budget_kind != "tokens":
            raise ValueError(f"the trusted runner serves CPU token-budget profiles, not "
                             f"{profile.name}")
        data = self.load(profile, req["data"], req["cache_dir"])
        folder = Path(tempfile.mkdtemp(prefix="evolve-trusted-"))
        try:
            for name, source in req["files"].items():
                (folder / name).parent.mkdir(parents=True, exist_ok=True)
                (folder / name).write_text(source)
            model, server, module = self.train(h, profile, data, req, folder)
            return self.score(h, profile, data, req, model, server, module)
        finally:
            sys.modules.pop("train", None)
            with contextlib.suppress(ValueError):
                sys.path.remove(str(folder))
            shutil.rmtree(folder, ignore_errors=True)

    def train(self, h: dict, profile: Any, data: _Data, req: dict, folder: Path):
        """trainer_role.train_and_save, with the referee's BatchServer in this process."""
        import torch

        candidate = h["candidate"]
        try:
            module = candidate.import_train(folder / "train.py")
        except candidate.RoleFailure as failure:
            raise _Judged(_OUTCOME[failure.status], failure.reason) from None
        if not callable(getattr(module, "train", None)):
            raise _Judged("crashed", "train.py defines no train(ctx) function")
        candidate.seed_everything(req["seed"])
        ctx = h["context"].TrainContext.local(profile, torch.device("cpu"), data.train,
                                              data.corpus.vocab_size, req["seed"],
                                              req["budget_fraction"])
        try:
            model = module.train(ctx)
        except (Exception, SystemExit) as exc:
            traceback.print_exc()
            raise _Judged("crashed", f"train.py crashed: {type(exc).__name__}: {exc}") from None
        if not isinstance(model, torch.nn.Module):
            raise _Judged("invalid", f"train(ctx) returned {type(model).__name__}, not a "
                          "torch.nn.Module")
        return model, ctx._source.server, module

    def score(self, h: dict, profile: Any, data: _Data, req: dict, model, server,
              module) -> dict[str, Any]:
        """The referee's _score on the host, from the logits the evaluator role would send."""
        scoring = h["scoring"]
        model.eval()
        out: dict[str, Any] = {"status": "ok"}
        try:
            for split in req["splits"]:
                rows, first = data.evals[split]
                out[f"{split}_bpb"] = scoring.score_rows(
                    _logits_fn(model, data.corpus.vocab_size, scoring), rows, first,
                    data.corpus.token_bytes, None, profile.eval_batch_rows).bpb
        except scoring.InvalidModel as exc:
            raise _Judged("invalid", str(exc)) from None
        if data.floor is not None:
            out["entropy_floor_bpb"] = data.floor
        if (problem := scoring.below_floor(out["val_bpb"], data.floor)) is not None:
            raise _Judged("invalid", problem)
        depth = getattr(module, "DEPTH", 0)
        out.update({
            "total_tokens_M": server.tokens_served / 1e6, "num_steps": server.batches_served,
            "num_params_M": float(sum(p.numel() for p in model.parameters())) / 1e6,
            "depth": depth if isinstance(depth, int) else 0, "device": "cpu",
            "budget_kind": profile.budget_kind, "logits_via": "host",
            "profile": profile.name, "data": req["data"], "seed": req["seed"],
            "budget_fraction": float(req["budget_fraction"]),
            "training_seconds": server.training_seconds()})
        return out


_OUTCOME = {"crash": "crashed", "invalid": "invalid"}


def _logits_fn(model, vocab_size: int, scoring):
    """What evaluator_role.serve sends for input rows: float32 logits, shape-checked by the
    harness's own in-process LogitsFn (scoring.model_logits), on the host's numpy rows."""
    import numpy as np
    import torch

    forward = scoring.model_logits(model, vocab_size)

    def logits(x):
        rows = torch.from_numpy(np.ascontiguousarray(x, dtype=np.int64))
        try:
            out = forward(rows)
        except scoring.InvalidModel:
            raise  # a wrong shape: invalid, as the referee judges a `badoutput`
        except Exception as exc:
            traceback.print_exc()
            raise _Judged("crashed", f"the model failed during evaluation: "
                          f"{type(exc).__name__}: {exc}") from None
        return out.contiguous().cpu().numpy()
    return logits


def _serve(conn: Connection) -> None:
    """The worker's loop: one thread, torch imported once, requests until None or EOF (the
    benchmark ended or died: no parent-death signal, which would follow the thread that
    spawned the worker, and replacements are spawned from short-lived threads)."""
    for name in THREAD_VARIABLES:
        os.environ[name] = "1"
    import torch

    torch.set_num_threads(1)
    worker = _Worker()
    conn.send(("ready", os.getpid()))
    while True:
        try:
            req = conn.recv()
        except (EOFError, OSError):
            return
        if req is None:
            return
        try:
            answer = worker.run(req)
        except Exception as exc:  # this runner's own fault (bad profile, data): not judged
            answer = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()}
        conn.send(answer)


# ------------------------------------------------------------------ the parent's pool


@dataclass
class _Process:
    process: multiprocessing.process.BaseProcess
    conn: Connection
    ready: bool = False


class TrustedRunner:
    """`cores` worker processes; call it with a RunRequest from up to `cores` threads."""

    name = "trusted"

    def __init__(self, cores: int) -> None:
        if cores < 1:
            raise ValueError(f"need at least one core, not {cores}")
        self._context = multiprocessing.get_context("spawn")
        self._idle: queue.Queue[_Process] = queue.Queue()
        self._lock = threading.Lock()
        self._all: list[_Process] = []
        self._hashes: dict[str, str] = {}
        self._closed = False
        for _ in range(cores):
            self._idle.put(self._spawn())

    def _spawn(self) -> _Process:
        ours, theirs = self._context.Pipe()
        process = self._context.Process(target=_serve, args=(theirs,), daemon=True,
                                        name="evolve-trusted-worker")
        process.start()
        theirs.close()
        worker = _Process(process, ours)
        with self._lock:
            self._all.append(worker)
        return worker

    def _retire(self, worker: _Process) -> None:
        """Kill a worker (a timeout, a death) and put a fresh one in its place."""
        worker.process.kill()
        worker.process.join(10)
        worker.conn.close()
        with self._lock:
            self._all.remove(worker)
        if not self._closed:
            self._idle.put(self._spawn())

    def _ready(self, worker: _Process) -> None:
        """Wait for a fresh worker's hello; one that does not start is the runner's fault
        (raised, so the benchmark does not cache it as the candidate's crash)."""
        if worker.ready:
            return
        try:
            if not worker.conn.poll(START_TIMEOUT_S):
                raise RuntimeError(f"did not start within {START_TIMEOUT_S:g} s")
            message = worker.conn.recv()
            if not (isinstance(message, tuple) and message[0] == "ready"):
                raise RuntimeError(f"began with {message!r}")
        except (EOFError, OSError, RuntimeError) as exc:
            self._retire(worker)
            raise RuntimeError(f"a trusted worker failed to start: {exc or 'it died'}") from exc
        worker.ready = True

    def _checks(self, request: RunRequest) -> str:
        """The runner's own checks of a request: the harness pinned, the file names plain
        (a problem with the candidate's files is returned, as materialise does)."""
        check_template(request.template_dir)
        if request.template_hash:
            found = self._hashes.setdefault(request.template_dir,
                                            template_hash(request.template_dir))
            if found != request.template_hash:
                raise ValueError(f"template {request.template_dir} is not the harness the run "
                                 f"pinned ({found[:12]} != {request.template_hash[:12]})")
        harness = {PurePosixPath(name).parts[0] for name in harness_files(request.template_dir)}
        for name in request.files:
            path = PurePosixPath(name)
            if path.is_absolute() or ".." in path.parts or not path.parts or "\\" in name:
                return f"candidate file name {name!r} is not a plain relative path"
            if path.parts[0] in harness:
                return (f"candidate file {name!r} would overwrite the harness; only mutable "
                        "files may change")
        return ""

    def __call__(self, request: RunRequest) -> RunResult:
        started = time.time()
        problem = self._checks(request)
        if problem:
            return _result(request, "invalid", {}, problem, "", 1, started)
        worker = self._idle.get()
        self._ready(worker)
        try:
            worker.conn.send(_payload(request))
            if not worker.conn.poll(max(0.0, request.timeout_s)):
                self._retire(worker)
                return _result(request, "timed_out", {}, (
                    f"timed out after {request.timeout_s:g} s (wall-clock limit); the trusted "
                    "worker was killed and replaced"), "", None, started)
            answer = worker.conn.recv()
        except (EOFError, OSError):  # it died under the candidate (a segfault, os._exit)
            worker.process.join(2)
            code = worker.process.exitcode
            self._retire(worker)
            return _result(request, "crashed", {}, f"the trusted worker process died under "
                           f"the candidate (exit code {code})", "", code, started)
        self._idle.put(worker)
        if "error" in answer:
            raise RuntimeError(f"the trusted runner failed: {answer['error']}\n{answer['trace']}")
        return _result(request, answer["outcome"], answer["metrics"], answer["reason"],
                       answer["log_tail"], 0 if answer["outcome"] == "done" else 1, started)

    def close(self) -> None:
        """Stop every worker (idle ones asked, the rest killed)."""
        self._closed = True
        with self._lock:
            workers = list(self._all)
        for worker in workers:
            with contextlib.suppress(OSError, ValueError):
                worker.conn.send(None)
        for worker in workers:
            worker.process.join(5)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(5)
            worker.conn.close()

    def __enter__(self) -> TrustedRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def pids(self) -> list[int]:
        """The live workers' process ids (tests)."""
        with self._lock:
            return [w.process.pid for w in self._all if w.process.pid is not None]


def _payload(request: RunRequest) -> dict[str, Any]:
    cache_dir = request.cache_dir or os.environ.get("EVOLVE_CACHE_DIR") \
        or str(Path.home() / ".cache" / "evolve")
    return {"template_dir": str(request.template_dir), "files": dict(request.files),
            "profile": request.profile, "data": request.data, "seed": request.seed,
            "budget_fraction": request.budget_fraction, "splits": tuple(request.splits),
            "cache_dir": str(Path(cache_dir).expanduser())}


def _result(request: RunRequest, outcome: str, metrics: dict, reason: str, log_tail: str,
            exit_code: int | None, started: float) -> RunResult:
    return RunResult(candidate_id=request.candidate_id, outcome=outcome, metrics=dict(metrics),
                     reason=reason, log_tail=log_tail, log_path="", exit_code=exit_code,
                     started_at=started, ended_at=time.time(), device="cpu")

