"""The data cache and the harness are checked again after every run, not only before: a run
during which either changed is invalid whatever its result says, and the node's copy is
restored before the next run. Real harness subprocesses (the stand-in template, and the real
one on cpu-micro for its data cache); candidates that do the writing themselves.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from sleep_requests import REPO, SEED, TEMPLATE, request
from test_sandbox_require import no_bubblewrap

from evolve.workers.runner import run_candidate

# At import, i.e. during the run: rewrite a file that outlives the experiment.
REWRITE = """
import pathlib as _pl
_target = _pl.Path({path!r})
_target.write_bytes(_target.read_bytes() + {extra!r})
"""

CORRUPT_VAL = """
import pathlib as _pl
for _p in sorted(_pl.Path({cache!r}).rglob("val.bin")):
    _p.write_bytes(bytes(len(_p.read_bytes())))  # every token 0: an easy split to score on
"""


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_run_that_rewrote_the_template_is_invalid_and_the_next_is_laid_out_pristine(tmp_path):
    template = tmp_path / "template"
    shutil.copytree(TEMPLATE, template)
    pristine = digest(template / "prepare.py")
    cheat = SEED + REWRITE.format(path=str(template / "prepare.py"), extra=b"\n# patched\n")
    first = run_candidate(request(tmp_path, cheat, template_dir=str(template)))
    assert first.outcome == "invalid" and first.metrics == {}
    assert first.reason == (f"the template {template} changed during the run (prepare.py); later "
                            "runs are laid out from the worker's pinned copy")
    honest = run_candidate(request(tmp_path, SEED, template_dir=str(template), attempt=2,
                                   keep_workdir=True))
    assert honest.outcome == "done", honest.reason
    laid_out = Path(honest.log_path).parent / "prepare.py"
    assert digest(laid_out) == pristine != digest(template / "prepare.py")


def test_a_run_that_rewrote_its_own_harness_copy_is_invalid(tmp_path):
    cheat = SEED + REWRITE.format(path="prepare.py", extra=b"\n# patched\n")  # its cwd
    result = run_candidate(request(tmp_path, cheat))
    assert result.outcome == "invalid"
    assert result.reason == "the harness in the experiment folder changed during the run (prepare.py)"


@pytest.mark.slow
def test_a_run_that_wrote_the_data_cache_is_invalid_and_the_cache_is_rebuilt(tmp_path,
                                                                             monkeypatch):
    # A node without bubblewrap: the referee runs the roles unjailed (workers.sandbox: warn),
    # so the candidate can reach the cache, and the check after the run is what stops it.
    no_bubblewrap(tmp_path, monkeypatch)
    template = REPO / "train_template"
    cache = tmp_path / "cache"
    seed = (template / "train_cpu.py").read_text()
    common = dict(template_dir=str(template), cache_dir=str(cache), timeout_s=300.0)
    honest = run_candidate(request(tmp_path, seed, candidate_id="honest", **common))
    assert honest.outcome == "done", honest.reason + honest.log_tail
    assert honest.metrics["sandboxed"] is False  # the roles ran as plain processes
    (val,) = cache.rglob("val.bin")
    before = digest(val)

    cheat = run_candidate(request(tmp_path, CORRUPT_VAL.format(cache=str(cache)) + seed,
                                  candidate_id="cheat", **common))
    assert cheat.outcome == "invalid" and cheat.metrics == {}
    assert cheat.reason.startswith("the data cache changed during the run (val.bin")
    assert cheat.reason.endswith("it was rebuilt")
    (val,) = cache.rglob("val.bin")
    assert digest(val) == before  # rebuilt before any other run could be scored on it

    again = run_candidate(request(tmp_path, seed, candidate_id="again", **common))
    assert again.outcome == "done", again.reason
    assert again.metrics["val_bpb"] == honest.metrics["val_bpb"]
