"""End to end on CPU: a run whose LLM is a local Messages-API stand-in answering with real edits.

The stand-in (tests/messages_standin.py) listens on a real socket, streams SSE and refuses
what the real API refuses; the mutator reaches it through `base_url`, as a user's local model
server would be reached; the harness really trains every child (cpu-micro).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from messages_standin import StandinServer

from evolve.controller.executor import LocalExecutor
from evolve.mutate.cost import PriceTable
from evolve.run.app import Run
from population.store import Store

REPO = Path(__file__).resolve().parent.parent

EDITS = [  # (what the parent must contain, the answer) -- the first that applies is used
    ("BATCH_SIZE = 16 ", "DESCRIPTION: quarter the batch size for 4x more optimizer steps\n"
     "RATIONALE: the token budget allows only 8 steps at batch 16; more steps learn more.\n\n"
     "train.py\n<<<<<<< SEARCH\nBATCH_SIZE = 16           # sequences per step\n=======\n"
     "BATCH_SIZE = 4            # sequences per step\n>>>>>>> REPLACE\n"),
    ("MATRIX_LR = 0.02 ", "DESCRIPTION: raise the Muon learning rate to 0.03\n"
     "RATIONALE: short runs favour a higher LR.\n\ntrain.py\n<<<<<<< SEARCH\n"
     "MATRIX_LR = 0.02\n=======\nMATRIX_LR = 0.03\n>>>>>>> REPLACE\n"),
    ("", "DESCRIPTION: longer warmdown\nRATIONALE: smoother end.\n\ntrain.py\n"
     "<<<<<<< SEARCH\nWARMDOWN_FRAC = 0.3\n=======\nWARMDOWN_FRAC = 0.5\n>>>>>>> REPLACE\n"),
]


def answer(body) -> str:
    parent = body["messages"][0]["content"][0]["text"]
    return next(text for need, text in EDITS if need in parent)


@pytest.mark.slow
def test_evolve_run_against_a_strict_messages_api_stand_in(tmp_path, monkeypatch):
    """`evolve run`'s own path (Run.create / execute) with the llm operator at a local server
    that keeps the real API's rules: every request it got was one the API accepts."""
    monkeypatch.setenv("EVOLVE_TEST_KEY", "sk-test-e2e")
    with StandinServer(answer) as api:
        config = {
            "name": "llm-e2e", "template": str(REPO / "train_template"), "profile": "cpu-micro",
            "seed": 0, "population": {"size": 2, "islands": 1}, "workers": {"count": 1},
            "mutation": {"operators": [{"kind": "llm", "model": "claude-sonnet-5-5",
                                        "base_url": api.base_url, "effort": "medium",
                                        "api_key_env": "EVOLVE_TEST_KEY", "max_tokens": 2000}],
                         "lookahead": 0},
            "budget": {"max_experiments": 3, "max_llm_usd": 5.0},
            "output": {"results_dir": str(tmp_path / "results")},
        }
        path = tmp_path / "run.yaml"
        path.write_text(yaml.safe_dump(config))
        run = Run.create(path)
        reason = run.execute(executor=LocalExecutor(1), install_signals=False)
    assert reason == "max_experiments reached (3)", reason
    assert api.refused == [] and len(api.requests) >= 2
    assert all(r["stream"] is True and r["thinking"] == {"type": "adaptive"}
               and r["output_config"] == {"effort": "medium"} for r in api.requests)
    with Store.open(run.run_dir.store_path, readonly=True) as store:
        root, best = store.get("root"), store.best()
        assert best is not None and root.val_bpb is not None
        assert best.val_bpb < root.val_bpb
        assert best.mutator == "llm" and best.model == "claude-sonnet-5-5"
        steps = [c.description for c in store.lineage(best.id)]
        assert any(d.startswith("quarter the batch size") for d in steps)
        assert "BATCH_SIZE = 4 " in best.files["train.py"]
        assert best.rationale and best.raw_answer.startswith("DESCRIPTION:")
        usage = dict(best.usage)
        assert usage["output_tokens"] > 0 and best.cost_usd == pytest.approx(
            PriceTable().cost("claude-sonnet-5-5", usage))
        llm_children = [c for c in store.finished_in_order(include_rejected=True)
                        if c.mutator == "llm"]
        # the second proposal reads the system prompt from the cache the first one wrote
        assert sum(c.usage.get("cache_read_input_tokens", 0) for c in llm_children) > 0
    later = [json.dumps(r) for r in api.requests[1:]]
    assert any("Lab notebook" in r and "Best results so far" in r for r in later)
    assert all(r["system"][0]["cache_control"] == {"type": "ephemeral"} for r in api.requests)
    assert "sk-test-e2e" not in run.run_dir.tsv_path.read_text()
