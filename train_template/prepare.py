"""The fixed harness and entry point of every experiment: the referee, which owns the data,
the clock, the token count and the score.

    python prepare.py run --profile cpu-micro --data synthetic --seed 0 --result result.json
                          [--result-fd N] [--cache-dir DIR] [--splits val|val,test]
                          [--budget-fraction 1.0] [--train train.py]
    python prepare.py prepare --profile P --data D [--cache-dir DIR]   # data only, idempotent

`run` (harness.py) never runs candidate code itself: it starts a trainer process that
imports the candidate's train.py (beside this file unless --train; in the pristine template
pass `--train train_cpu.py` for cpu profiles), seeds every RNG and calls train(ctx) with
batches the referee serves over a channel, then hands back the model as a file; evaluator
processes load it and return logits for val (and test), from which the referee computes the
score, and a fresh one is probed for causality. The result JSON goes to --result-fd (the
runner's pipe) and/or --result PATH, written only after every candidate process is dead.
Exit codes: 0 ok, 1 the harness judged the candidate (the result says "crash" or "invalid"),
2 bad input (no result). Failures end with one `error: ...` line on stderr.

Data sources (DATA_SOURCES below): `synthetic`, `text:<path>`, `climbmix`. A source is a
function (cache_dir: Path, profile: Profile, arg: str) -> corpus.Corpus, where a Corpus has
`vocab_size`, `token_bytes` (UTF-8 bytes per token id, 0 for special tokens, which are
then not scored), `load_split(name) -> Split(tokens, starts)` (lazy: val and test are read
only after training) and optionally `floor_bpb(rows, score_from)`. A split's `starts` are
the positions of document-boundary tokens (an end mark or a BOS), where rows may begin.
`climbmix` is served by a module climbmix.py beside this file, which must define

    load_climbmix(cache_dir: pathlib.Path, seq_len: int) -> corpus.Corpus

idempotent and safe when several workers call it at once (it takes its own file lock).
Without that module, `--data climbmix` is a one-line error.
"""

from __future__ import annotations

import os  # noqa: I001 (already loaded by the interpreter's start-up: found without sys.path)
import sys
import time

HARNESS_START = time.time()
HERE_DIR = os.path.dirname(os.path.realpath(__file__))
# The referee imports nothing from this folder but the harness's own modules: in a worker's
# experiment folder the candidate's files sit beside prepare.py, and a `json.py` or `numpy.py`
# of theirs must never load here. So the folder leaves sys.path, and a finder serves only
# these names from it.
HARNESS_MODULES = frozenset({
    "allowance",
    "candidate", "causality", "channel", "climbmix", "context", "corpus", "harness", "jail",
    "jail_cgroup", "jail_limits",
    "mfu", "profiles", "referee", "roles", "scoring", "sources", "synthlang"})
sys.path[:] = [p for p in sys.path if os.path.realpath(p or os.curdir) != HERE_DIR]


class _HarnessFinder:
    """Finds the harness's modules in HERE_DIR (and only them)."""

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name not in HARNESS_MODULES:
            return None
        from importlib.machinery import PathFinder

        return PathFinder.find_spec(name, [HERE_DIR])


sys.meta_path.insert(0, _HarnessFinder)

import argparse  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

from corpus import Corpus, DataError, JudgedFailure, UsageError, atomic_write_bytes  # noqa: E402
from profiles import PROFILES, Profile, get_profile  # noqa: E402
from sources import load_synthetic, load_text  # noqa: E402

HERE = Path(__file__).resolve().parent


# ---- data sources ----------------------------------------------------------------------

def _synthetic(cache_dir: Path, profile: Profile, arg: str) -> Corpus:
    if arg:
        raise UsageError(f"data source 'synthetic' takes no argument, got 'synthetic:{arg}'")
    return load_synthetic(cache_dir, train_tokens=profile.synthetic_train_tokens,
                          val_tokens=profile.val_tokens, seq_len=profile.seq_len)


def _text(cache_dir: Path, profile: Profile, arg: str) -> Corpus:
    if not arg:
        raise UsageError("data source 'text' needs a path: --data text:<file or directory>")
    return load_text(cache_dir, arg, seq_len=profile.seq_len)


def _climbmix(cache_dir: Path, profile: Profile, arg: str) -> Corpus:
    if not (HERE / "climbmix.py").exists():
        raise DataError(f"data source 'climbmix' needs {HERE / 'climbmix.py'} (the GPU data "
                        f"module), which is not there; use --data synthetic or text:<path>")
    module = importlib.import_module("climbmix")
    return module.load_climbmix(cache_dir, profile.seq_len)


DATA_SOURCES: dict[str, Callable[[Path, Profile, str], Corpus]] = {
    "synthetic": _synthetic,
    "text": _text,
    "climbmix": _climbmix,
}


def load_corpus(data: str, profile: Profile, cache_dir: Path) -> Corpus:
    name, _, arg = data.partition(":")
    if name not in DATA_SOURCES:
        raise UsageError(f"unknown data source {data!r} (known: synthetic, text:<path>, climbmix)")
    return DATA_SOURCES[name](cache_dir, profile, arg)


SUMMARY_KEYS = ["val_bpb", "test_bpb", "entropy_floor_bpb", "training_seconds", "total_seconds",
                "peak_vram_mb", "mfu_percent", "total_tokens_M", "num_steps", "num_params_M", "depth"]


def print_summary(result: dict) -> None:
    print("---")
    for key in SUMMARY_KEYS:
        if key not in result:
            continue
        value = result[key]
        width = max(18, len(key) + 2)
        if isinstance(value, int):
            print(f"{key + ':':<{width}}{value}")
        elif key.endswith("_bpb"):
            print(f"{key + ':':<{width}}{value:.6f}")
        else:
            digits = 2 if key == "mfu_percent" else 3 if key.endswith("_M") and value < 10 else 1
            print(f"{key + ':':<{width}}{value:.{digits}f}")
    sys.stdout.flush()


def write_result(args: argparse.Namespace, result: dict) -> None:
    """To the runner's pipe (--result-fd) and/or a file (--result): only the referee writes
    either, after every candidate process is dead."""
    data = (json.dumps(result, indent=1) + "\n").encode()
    if getattr(args, "result", None) is not None:
        atomic_write_bytes(args.result, data)
    fd = getattr(args, "result_fd", None)
    if fd is not None:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)


# ---- command line ----------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one `error:` line, not argparse's usage dump
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _fraction(text: str) -> float:
    value = float(text)
    if not (0 < value <= 100) or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"--budget-fraction must be in (0, 100], got {text}")
    return value


def _splits(text: str) -> tuple[str, ...]:
    if text not in ("val", "val,test"):
        raise argparse.ArgumentTypeError(f"--splits must be 'val' or 'val,test', got {text!r}")
    return tuple(text.split(","))


def _result_fd(text: str) -> int:
    fd = int(text)
    try:
        os.fstat(fd)
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"--result-fd {fd} is not an open file descriptor") from exc
    os.set_inheritable(fd, False)  # no role ever inherits it
    return fd


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="prepare.py", description="The evolve experiment harness.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    default_cache = os.environ.get("EVOLVE_CACHE_DIR") or str(Path.home() / ".cache" / "evolve")
    for name in ("run", "prepare"):
        cmd = sub.add_parser(name)
        cmd.add_argument("--profile", required=True, help=f"one of {', '.join(PROFILES)}")
        cmd.add_argument("--data", default=None, help="synthetic | text:<path> | climbmix")
        cmd.add_argument("--cache-dir", type=Path, default=Path(default_cache))
        if name == "run":
            cmd.add_argument("--seed", type=int, default=0)
            cmd.add_argument("--result", type=Path, default=None, help="result JSON path")
            cmd.add_argument("--result-fd", type=_result_fd, default=None,
                             help="an open file descriptor (a pipe) to write the result JSON to")
            cmd.add_argument("--splits", type=_splits, default=("val",))
            cmd.add_argument("--budget-fraction", type=_fraction, default=1.0)
            cmd.add_argument("--train", type=Path, default=HERE / "train.py",
                             help="the training script (default: train.py beside prepare.py)")
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # bad flags (already reported in one line) or --help
        return int(exc.code or 0)
    meta: dict = {}
    try:
        profile = get_profile(args.profile)
        args.data = args.data or profile.default_data
        args.cache_dir = args.cache_dir.expanduser()
        if args.command == "prepare":
            corpus = load_corpus(args.data, profile, args.cache_dir)
            sizes = {s: len(corpus.load_split(s).tokens) for s in ("train", "val", "test")}
            print(f"data ready: {args.data} for {profile.name} under {args.cache_dir} "
                  f"(vocab {corpus.vocab_size}, tokens {sizes})")
            return 0
        args.train = args.train.resolve()
        if not args.train.is_file():
            raise UsageError(f"train script {args.train} not found")
        from roles import become_referee

        become_referee()
        meta = {"profile": profile.name, "data": args.data, "seed": args.seed,
                "budget_fraction": args.budget_fraction}
        from harness import run  # torch is imported only by `run`, not by `prepare`

        result = run(args, lambda: load_corpus(args.data, profile, args.cache_dir),
                     start=HARNESS_START)
    except (UsageError, DataError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except JudgedFailure as failure:
        write_result(args, {"status": failure.status, "reason": failure.reason, **meta})
        print(f"error: {failure.reason}", file=sys.stderr)
        return 1
    result.update(meta)
    write_result(args, result)
    print_summary(result)
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # The result is written and every role is dead: skip the interpreter's teardown, which
    # with torch loaded costs ~0.4 s of CPU on every run.
    os._exit(code)
