"""When the LLM is down for good the run says so and stops, or falls back as configured.

The LLM is the real anthropic client against a local HTTP server that rejects every call
(401), the way an endpoint with a revoked key does."""

from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from evolve.controller.executor import LocalExecutor
from evolve.mutate.base import MutationContext
from evolve.mutate.heuristic import HeuristicMutator
from evolve.mutate.llm import LLMMutator
from evolve.run.app import Run
from evolve.run.outage import FallbackWhenDown
from population.candidate import Candidate, Status

REPO = Path(__file__).resolve().parent.parent
SLEEP_TEMPLATE = REPO / "tests" / "fixtures" / "sleep_template"


class _Rejecting(BaseHTTPRequestHandler):
    calls = 0

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        type(self).calls += 1
        self.rfile.read(int(self.headers.get("content-length", 0)))
        body = json.dumps({"type": "error", "error": {"type": "authentication_error",
                                                      "message": "invalid x-api-key"}}).encode()
        self.send_response(401)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def rejecting_server():
    _Rejecting.calls = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Rejecting)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _context() -> MutationContext:
    source = (SLEEP_TEMPLATE / "train.py").read_text()
    parent = Candidate(id="root", parent_id=None, island=0, generation=0,
                       files={"train.py": source}, status=Status.DONE, metrics={"val_bpb": 2.0})
    return MutationContext(parent=parent, lineage=[parent], inspirations=[], tried_on_parent=[],
                           notebook="", program_md="", mutable_files=["train.py"], seed=1)


def test_fallback_hands_proposals_to_the_heuristic_while_the_llm_is_down(rejecting_server,
                                                                          monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test-revoked")
    llm = LLMMutator(model="claude-sonnet-5-5", base_url=rejecting_server, backoff_s=0.001)
    operator = FallbackWhenDown(llm, HeuristicMutator())
    first = asyncio.run(operator.propose(_context()))
    assert first.error and "AuthenticationError" in first.error
    assert operator.is_down
    second = asyncio.run(operator.propose(_context()))
    assert not second.error and second.mutator == "heuristic"
    assert second.files["train.py"] != _context().parent.files["train.py"]
    assert "the LLM is down" in second.rationale
    assert _Rejecting.calls == 1  # a fatal error is not probed again


def _llm_config(tmp_path: Path, base_url: str, on_llm_down: str) -> Path:
    config = {
        "name": "outage",
        "template": str(SLEEP_TEMPLATE),
        "profile": "cpu-micro",
        "population": {"size": 2, "islands": 1},
        "mutation": {"operators": [{"kind": "llm", "weight": 1.0, "model": "claude-sonnet-5-5",
                                    "base_url": base_url}],
                     "lookahead": 0, "on_llm_down": on_llm_down},
        "workers": {"count": 1, "gpus_per_worker": 0},
        "budget": {"max_experiments": 4},
        "output": {"results_dir": str(tmp_path / "results")},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("on_llm_down", ["stop", "fallback"])
def test_a_run_stops_or_falls_back_when_the_llm_is_down(tmp_path, rejecting_server, monkeypatch,
                                                        on_llm_down):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test-revoked")
    run = Run.create(_llm_config(tmp_path, rejecting_server, on_llm_down))
    reason = run.execute(executor=LocalExecutor(1), install_signals=False)
    rows = (run.run_dir.tsv_path.read_text().splitlines())[1:]
    if on_llm_down == "stop":
        assert reason.startswith("the LLM is down: AuthenticationError"), reason
        assert "evolve resume" in reason
        assert [row.split("\t")[0] for row in rows] == ["root"]  # the baseline finished
    else:
        assert reason == "max_experiments reached (4)", reason
        assert len(rows) == 4  # the workers kept busy on heuristic children
    assert "sk-test-revoked" not in run.run_dir.tsv_path.read_text()
