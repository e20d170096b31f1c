"""End to end on CPU: a run whose LLM is a local Messages-API server answering with real edits.

The server listens on a real socket and the mutator reaches it through `base_url`, as a user's
local model server would be reached; the harness really trains every child (cpu-micro).
"""

from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from evolve.config import config_from_dict
from evolve.controller.executor import LocalExecutor
from evolve.controller.shell import Controller
from evolve.controller.wiring import operator_names
from evolve.mutate.cost import SpendLedger
from evolve.mutate.registry import build_mutators
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


class FakeClaude(BaseHTTPRequestHandler):
    requests: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        FakeClaude.requests.append(body)
        parent = body["messages"][0]["content"][0]["text"]
        answer = next(text for need, text in EDITS if need in parent)
        reply = json.dumps({
            "id": f"msg_{len(FakeClaude.requests)}", "type": "message", "role": "assistant",
            "model": body["model"], "stop_reason": "end_turn", "stop_sequence": None,
            "content": [{"type": "thinking", "thinking": "Fewer steps hurt.", "signature": "s"},
                        {"type": "text", "text": answer}],
            "usage": {"input_tokens": 3000, "output_tokens": 200,
                      "cache_read_input_tokens": 0, "cache_creation_input_tokens": 2500}}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args: object) -> None:
        pass


class Recorder:
    def on_candidate(self, c) -> None: ...
    def on_result(self, c, kept) -> None: ...
    def on_progress(self, snapshot) -> None: ...


@pytest.fixture
def fake_claude():
    FakeClaude.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeClaude)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
def test_llm_run_improves_on_the_baseline_and_prompts_carry_the_notebook(tmp_path, fake_claude,
                                                                        monkeypatch):
    monkeypatch.delenv("EVOLVE_TEST_NO_KEY", raising=False)
    config = config_from_dict({
        "name": "llm-e2e", "template": str(REPO / "train_template"), "profile": "cpu-micro",
        "seed": 0, "population": {"size": 2, "islands": 1},
        "workers": {"count": 1},
        "mutation": {"operators": [{"kind": "llm", "model": "claude-sonnet-5-5",
                                    "base_url": fake_claude, "api_key_env": "EVOLVE_TEST_NO_KEY",
                                    "max_tokens": 2000, "timeout_s": 60}],
                     "lookahead": 0},
        "budget": {"max_experiments": 3, "max_llm_usd": 5.0},
    })
    ledger = SpendLedger(config.budget.max_llm_usd)
    mutators = build_mutators(config.mutation.operators, operator_names(config),
                              template_dir=config.template_dir, ledger=ledger, seed=config.seed)
    with Store.open(tmp_path / "store.sqlite") as store:
        controller = Controller(config, store, LocalExecutor(1), mutators, Recorder(),
                                work_root=tmp_path / "work", cache_dir=str(tmp_path / "cache"),
                                tick_s=0.2)
        asyncio.run(controller.run(None, None))
        root, best = store.get("root"), store.best()
        assert best is not None and root.val_bpb is not None
        assert best.val_bpb < root.val_bpb
        assert best.mutator == "llm" and best.model == "claude-sonnet-5-5"
        steps = [c.description for c in store.lineage(best.id)]
        assert any(d.startswith("quarter the batch size") for d in steps)
        assert "BATCH_SIZE = 4 " in best.files["train.py"]
        assert best.rationale and best.raw_answer.startswith("DESCRIPTION:")
        assert best.cost_usd == pytest.approx((3000 * 3 + 200 * 15 + 2500 * 3.75) / 1e6)
        assert dict(best.usage)["cache_creation_input_tokens"] == 2500
    assert ledger.calls == len(FakeClaude.requests) >= 2
    later = [json.dumps(r) for r in FakeClaude.requests[1:]]
    assert any("Lab notebook" in r and "Best results so far" in r for r in later)
    assert all(r["system"][0]["cache_control"] == {"type": "ephemeral"}
               for r in FakeClaude.requests)
