"""The held-out test score is scored in every run and stored, but the search never sees it:
not in the LLM's prompts, the lab notebook, the live display, or any candidate's metrics.

A real run: the stand-in harness (its test score moved far from any val score, so a leak in any
rounding shows), the real LLM operator talking to a local Messages-API server on a real socket,
the real store. `evolve status --test` and export are where it appears, for the final lineage.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from rich.console import Console

from evolve.config import config_from_dict
from evolve.controller.executor import LocalExecutor
from evolve.controller.shell import Controller
from evolve.controller.wiring import operator_names
from evolve.inspect.export import export_run
from evolve.inspect.status import render_status
from evolve.mutate.notebook import build_notebook
from evolve.mutate.registry import build_mutators
from evolve.run.live import LiveDisplay
from evolve.run.rundir import RunDir
from population.candidate import Status
from population.store import Store

REPO = Path(__file__).resolve().parent.parent
# 7.00x: far from every val_bpb (1.x to 3.x), so any rounding of a test score is recognisable.
TEST_SCORE = '    result["test_bpb"] = 7.0 + val_bpb / 1000\n'
LEAK = re.compile(r"test_bpb|7\.00\d")
MATRIX = re.compile(r"MATRIX_LR = ([0-9.]+)( +# Muon, matrices)")


class LocalModel(BaseHTTPRequestHandler):
    """Answers each request with an edit of the parent's MATRIX_LR (a new value each time)."""

    bodies: list[str] = []

    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        raw = self.rfile.read(int(self.headers["content-length"])).decode()
        LocalModel.bodies.append(raw)
        body = json.loads(raw)
        found = MATRIX.search(body["messages"][0]["content"][0]["text"])
        old = f"MATRIX_LR = {found.group(1)}{found.group(2)}"
        new = f"MATRIX_LR = {0.02 + 0.002 * len(LocalModel.bodies):.3f}{found.group(2)}"
        answer = (f"DESCRIPTION: Muon LR to {new.split()[2]}\nRATIONALE: try another step size.\n\n"
                  f"train.py\n<<<<<<< SEARCH\n{old}\n=======\n{new}\n>>>>>>> REPLACE\n")
        reply = json.dumps({
            "id": f"msg_{len(LocalModel.bodies)}", "type": "message", "role": "assistant",
            "model": body["model"], "stop_reason": "end_turn", "stop_sequence": None,
            "content": [{"type": "text", "text": answer}],
            "usage": {"input_tokens": 1000, "output_tokens": 100}}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def local_model():
    LocalModel.bodies = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), LocalModel)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class Display:
    """The run directory's recorder role, played by the live display writing to a buffer."""

    def __init__(self) -> None:
        self.out = io.StringIO()
        self.live = LiveDisplay(Console(file=self.out, width=300), line_every_s=0.0)

    def on_candidate(self, c) -> None: ...

    def on_result(self, c, kept) -> None:
        self.live.on_result(c, kept)

    def on_progress(self, snapshot) -> None:
        self.live.on_progress(snapshot)


def test_the_test_score_is_stored_but_reaches_no_prompt_notebook_or_live_view(
        tmp_path, local_model, monkeypatch):
    monkeypatch.delenv("EVOLVE_TEST_NO_KEY", raising=False)
    template = tmp_path / "template"
    shutil.copytree(REPO / "tests" / "fixtures" / "sleep_template", template)
    prepare = template / "prepare.py"
    source = prepare.read_text()
    assert '    result["test_bpb"] = val_bpb + 0.01\n' in source
    prepare.write_text(source.replace('    result["test_bpb"] = val_bpb + 0.01\n', TEST_SCORE))
    train = template / "train_cpu.py"
    train.write_text(train.read_text().replace("SLEEP_S = 0.5 ", "SLEEP_S = 0.02 "))
    config = config_from_dict({
        "name": "hidden", "template": str(template), "profile": "cpu-micro", "seed": 1,
        "population": {"size": 2, "islands": 1}, "workers": {"count": 1},
        "mutation": {"operators": [{"kind": "llm", "model": "claude-sonnet-5-5",
                                    "base_url": local_model, "api_key_env": "EVOLVE_TEST_NO_KEY",
                                    "max_tokens": 2000, "timeout_s": 60}], "lookahead": 0},
        "budget": {"max_experiments": 5}})
    run_dir = RunDir.create(tmp_path / "results", "hidden")
    run_dir.config_path.write_text(config.to_yaml())
    mutators = build_mutators(config.mutation.operators, operator_names(config),
                              template_dir=config.template_dir, seed=config.seed)
    display = Display()
    with Store.open(run_dir.store_path) as store:
        controller = Controller(config, store, LocalExecutor(1), mutators, display,
                                work_root=run_dir.work_dir, tick_s=0.1)
        asyncio.run(controller.run(None, None))
        done = [c for c in store.finished_in_order() if c.status is Status.DONE]
        assert len(done) == 5
        for c in done:  # scored in the same run, stored apart from the metrics
            assert c.test_bpb == pytest.approx(7.0 + c.val_bpb / 1000)
            assert not any(key.startswith("test") for key in c.metrics)
        notebook = build_notebook(store)
    assert len(LocalModel.bodies) >= 4 and "Lab notebook" in LocalModel.bodies[-1]
    assert "Best results so far" in notebook
    for text in [*LocalModel.bodies, notebook, display.out.getvalue()]:
        assert not LEAK.search(text), LEAK.search(text)

    console = Console(record=True, width=250, file=io.StringIO())
    render_status(run_dir, console, islands=1, population_size=2)
    assert not LEAK.search(console.export_text())  # held out unless asked for
    console = Console(record=True, width=250, file=io.StringIO())
    render_status(run_dir, console, islands=1, population_size=2, show_test=True)
    text = console.export_text()
    assert "test_bpb" in text and re.search(r"7\.00\d{4}", text)
    export_run(run_dir.path, tmp_path / "repo")
    log = subprocess.run(["git", "log", "--format=%B"], cwd=tmp_path / "repo",
                         capture_output=True, text=True, check=True).stdout
    assert re.search(r"test_bpb: 7\.00\d{4}", log)
