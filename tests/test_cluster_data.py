"""Every node scores with the controller's data and harness: fingerprints, mismatches refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from evolve.guard.datahash import DataMismatch, data_fingerprint, reference_hashes
from evolve.workers.pristine import template_hash
from evolve.workers.runner import RunRequest, TemplateError, run_candidate
from population.store import Store

REPO = Path(__file__).resolve().parent.parent
TEMPLATE = REPO / "train_template"
SLEEP_TEMPLATE = REPO / "tests" / "fixtures" / "sleep_template"


def test_the_fingerprint_names_the_data_and_a_mismatch_is_refused(tmp_path):
    first = data_fingerprint(TEMPLATE, "cpu-micro", "synthetic", str(tmp_path / "a"))
    other_node = data_fingerprint(TEMPLATE, "cpu-micro", "synthetic", str(tmp_path / "b"))
    assert len(first) == 64 and first == other_node  # the same data, prepared twice
    with pytest.raises(DataMismatch, match=r"controller's is 0000000000000000"):
        data_fingerprint(TEMPLATE, "cpu-micro", "synthetic", str(tmp_path / "a"), expected="0" * 64)


def test_a_resumed_run_refuses_other_data_than_its_results_were_scored_on(tmp_path):
    store = Store.open(tmp_path / "store.sqlite")
    try:
        _, pinned = reference_hashes(store, TEMPLATE, "cpu-micro", "synthetic", str(tmp_path / "c"))
        assert store.get_meta("data_hash") == pinned
        store.set_meta("data_hash", "f" * 64)  # as if scored on other data
        with pytest.raises(DataMismatch, match="scored on other data"):
            reference_hashes(store, TEMPLATE, "cpu-micro", "synthetic", str(tmp_path / "c"))
    finally:
        store.close()


def test_a_worker_refuses_a_template_that_is_not_the_controllers(tmp_path):
    template = tmp_path / "template"
    shutil.copytree(SLEEP_TEMPLATE, template)
    expected = template_hash(template)
    (template / "prepare.py").write_text((template / "prepare.py").read_text() + "\n# other version\n")
    request = RunRequest(candidate_id="c", files={"train.py": (template / "train_cpu.py").read_text()},
                         template_dir=str(template), profile="cpu-micro", data="synthetic", seed=0,
                         timeout_s=60, work_root=str(tmp_path / "work"), template_hash=expected)
    with pytest.raises(TemplateError, match="differs from the controller's"):
        run_candidate(request)


def test_a_ray_worker_refusing_another_template_is_a_refusal_not_a_loss(tmp_path, ray_session):
    from evolve.workers.actor import CandidateWorker, is_refusal, is_worker_lost
    from evolve.workers.network import unshare_problem

    template = tmp_path / "template"
    shutil.copytree(SLEEP_TEMPLATE, template)
    request = RunRequest(candidate_id="c", files={"train.py": (template / "train_cpu.py").read_text()},
                         template_dir=str(template), profile="cpu-micro", data="synthetic", seed=0,
                         timeout_s=60, work_root=str(tmp_path / "work"), template_hash="0" * 64)
    worker = CandidateWorker.options(num_cpus=1).remote("w9")
    try:
        info = ray_session.get(worker.describe.remote(), timeout=120)
        assert info.worker_id == "w9" and info.isolation_problem == unshare_problem()
        with pytest.raises(Exception) as caught:
            ray_session.get(worker.run.remote(request), timeout=120)
        assert is_refusal(caught.value) and not is_worker_lost(caught.value)
        assert "differs from the controller's" in str(caught.value)
    finally:
        ray_session.kill(worker)
