"""Capture the request a GPU run sends to Claude, built by the project's own prompt code.

A fixture store stands in for a GPU run some way in: the seed `train.py` as root (noise σ
measured), children better and worse than their parent, a crash with its traceback, a 429
that is not an experiment, a migration copy, one child training now. The real `Proposals`
builds the context and the real `LLMMutator` sends the request through the real anthropic
client to a mock transport that records it. Writes docs/llm-request-gpu.md: the request body
exactly as sent, the prompt as the model reads it, its measured size, and the cost of one
proposal at the configured model's current prices.

    python benchmarks/llm_request.py [--out docs/llm-request-gpu.md]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import anthropic
import httpx2

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from messages_standin import message_json, sse_body, validate  # noqa: E402

from evolve.config import load_config  # noqa: E402
from evolve.controller.core import Propose  # noqa: E402
from evolve.controller.proposals import Proposals  # noqa: E402
from evolve.controller.store_index import StoreIndex  # noqa: E402
from evolve.controller.wiring import run_facts  # noqa: E402
from evolve.mutate.base import INFRASTRUCTURE, unified_diff  # noqa: E402
from evolve.mutate.cost import PriceTable  # noqa: E402
from evolve.mutate.llm import LLMMutator  # noqa: E402
from population.candidate import Candidate, Status  # noqa: E402
from population.store import Store  # noqa: E402

TEMPLATE = REPO / "train_template"
SEED = (TEMPLATE / "train.py").read_text()
DEVICE = "NVIDIA H100 80GB HBM3"
TRACEBACK = """step 00120 | loss 3.9021 | lr 0.0400 | 412k tok/s
Traceback (most recent call last):
  File "train.py", line 187, in forward
    att = att.masked_fill(self.mask[:, :, :T, :T] == 0, float("-inf"))
RuntimeError: The size of tensor a (2048) must match the size of tensor b (1024) at dim 3
"""
LOSS_CURVE = "\n".join(f"step {s:05d} | loss {4.8 - 1.6 * (s / 950) ** 0.5:.4f} | "
                       f"lr {0.04 * min(1, (950 - s) / 285):.4f} | 498k tok/s"
                       for s in range(0, 951, 50))


def _edit(source: str, prefix: str, value: str) -> str:
    line = next(ln for ln in source.splitlines() if ln.startswith(prefix))
    name, _, rest = line.partition("=")
    old = rest.split("#")[0].strip()
    return source.replace(line, line.replace(f"= {old}", f"= {value}", 1), 1)


def _add(store: Store, cid: str, parent: Candidate | None, files: dict, what: str, *,
         bpb: float | None, status: Status = Status.DONE, kept: bool = False, log: str = "",
         reason: str = "", island: int = 0, t: float = 0.0) -> Candidate:
    c = Candidate(id=cid, parent_id=parent.id if parent else None, island=island,
                  generation=parent.generation + 1 if parent else 0, files=files,
                  description=what, mutator="llm" if parent else "seed",
                  model="claude-sonnet-5-5" if parent else "",
                  diff=unified_diff(parent.files, files) if parent else "", created_at=t)
    store.add(c)
    if status is Status.REJECTED:
        store.set_status(cid, status, reason=reason, now=t)
        return store.get(cid)
    store.set_status(cid, Status.RUNNING)
    attempt = store.start_attempt(cid, worker="w0", node="node-1", device=DEVICE, now=t)
    if status is Status.RUNNING:
        return store.get(cid)
    metrics = {"val_bpb": bpb, "kept": kept, "training_seconds": 300.1,
               "peak_vram_mb": 45060.2, "mfu_percent": 39.8, "num_steps": 953,
               "num_params_M": 50.3, "depth": 8} if bpb is not None else {}
    store.record_result(cid, status=status, metrics=metrics, reason=reason, log_tail=log, now=t)
    store.finish_attempt(attempt, outcome=status.value, now=t)
    return store.get(cid)


def fixture_store(path: Path) -> None:
    """A GPU run some way in (see the module docstring)."""
    with Store.open(path) as store:
        seed = {"train.py": SEED}
        root = _add(store, "root", None, seed, "", bpb=0.9979, kept=True, log=LOSS_CURVE, t=1)
        store.set_meta("noise_floor", json.dumps({"sigma": 0.0021, "mean": 0.9981, "seeds": 3}))
        a = _add(store, "c00003", root, {"train.py": _edit(SEED, "MATRIX_LR", "0.05")},
                 "raise the Muon learning rate to 0.05", bpb=0.9921, kept=True,
                 log=LOSS_CURVE, t=2)
        _add(store, "c00004", root, {"train.py": _edit(SEED, "WARMDOWN_FRAC", "0.5")},
             "longer warmdown: half of the budget", bpb=1.0012, t=3)
        _add(store, "c00005", a, {"train.py": _edit(a.files["train.py"], "DEPTH", "10")},
             "deeper model: 10 layers at the same width", bpb=None, status=Status.CRASHED,
             reason="exit code 1", log=TRACEBACK, t=4)
        _add(store, "c00006", a, a.files, "", bpb=None, status=Status.REJECTED, t=5,
             reason=INFRASTRUCTURE + "RateLimitError: Error code: 429 rate_limit_error")
        store.add_copy("c00003", 1, new_id="c00003@1", description="migration copy")
        b = _add(store, "c00008", root, {"train.py": _edit(SEED, "WARMUP_FRAC", "0.02")},
                 "2% warmup before the peak learning rate", bpb=0.9958, kept=True, island=1,
                 log=LOSS_CURVE, t=6)
        _add(store, "c00009", a, {"train.py": _edit(a.files["train.py"], "BATCH_SIZE", "48")},
             "smaller batch (48) for more optimizer steps", bpb=None, status=Status.RUNNING,
             t=7)
        assert b.val_bpb is not None


def capture(config_path: Path) -> dict:
    """The request body exactly as the client sent it."""
    config = load_config(config_path)
    seen: list[dict] = []

    async def handler(request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        refusal = validate(body, request.headers)
        if refusal is not None:
            raise SystemExit(f"the request would be refused: {refusal}")
        seen.append(body)
        text = ("DESCRIPTION: QK-norm gain of 1.2\nRATIONALE: r\n\ntrain.py\n<<<<<<< SEARCH\n"
                "import torch\n=======\nimport torch  # unchanged\n>>>>>>> REPLACE\n")
        usage = {"input_tokens": 10, "output_tokens": 10, "cache_read_input_tokens": 0,
                 "cache_creation_input_tokens": 0}
        return httpx2.Response(200, headers={"content-type": "text/event-stream"},
                               content=sse_body(message_json(body["model"], text, usage)))

    op = next(o for o in config.mutation.operators if o.kind == "llm")
    client = anthropic.AsyncAnthropic(api_key="sk-capture", http_client=anthropic.
                                      DefaultAsyncHttpxClient(transport=httpx2.MockTransport(handler)))
    mutator = LLMMutator(op.model_copy(update={"max_apply_retries": 0}), client=client)
    with tempfile.TemporaryDirectory() as tmp:
        fixture_store(Path(tmp) / "store.sqlite")
        with Store.open(Path(tmp) / "store.sqlite") as store:
            async def go() -> None:
                proposals = Proposals(store, run_facts(config), {"llm": mutator},
                                      StoreIndex(store), timeout_s=600.0,
                                      post=lambda done: None, clock=time.monotonic)
                proposals.start(Propose(10, "c00003", 0, "llm", 3))
                await asyncio.gather(*proposals.tasks)

            asyncio.run(go())
    return seen[0]


def render(body: dict, config_path: Path) -> str:
    system = body["system"][0]["text"]
    head, tail = (block["text"] for block in body["messages"][0]["content"])
    chars = {"system (cached)": len(system), "parent head (cached)": len(head),
             "per-call tail": len(tail)}
    tokens = {k: v // 4 for k, v in chars.items()}
    total = sum(tokens.values())
    prices = PriceTable()
    model = body["model"]
    price = prices.lookup(model)
    cold = (tokens["system (cached)"] + tokens["parent head (cached)"]) * price.cache_write \
        + tokens["per-call tail"] * price.input
    warm = (tokens["system (cached)"] + tokens["parent head (cached)"]) * price.cache_read \
        + tokens["per-call tail"] * price.input
    out_lo, out_hi = 2000 * price.output, 10000 * price.output
    shown = {k: v for k, v in body.items() if k not in ("system", "messages")}
    lines = [
        "# What the model is told: the request of a GPU run",
        "",
        f"Captured by `python benchmarks/llm_request.py` from `{config_path.relative_to(REPO)}`: "
        "a fixture store of a GPU run some way in, the project's own prompt code (`Proposals` "
        "-> `LLMMutator`), the real anthropic client, a mock transport that records the body "
        "and checks it against the API's rules (tests/messages_standin.py). Re-run the command "
        "after changing the prompt, the brief or the config.",
        "",
        "## Size and cost",
        "",
        "| part | characters | ≈ tokens (4 chars each) |",
        "|---|---|---|",
        *[f"| {k} | {chars[k]:,} | {tokens[k]:,} |" for k in chars],
        f"| **total** | {sum(chars.values()):,} | {total:,} |",
        "",
        f"At {model}'s prices (${price.input:g} / ${price.output:g} per million input / output "
        f"tokens, cache write ${price.cache_write:g}, cache read ${price.cache_read:g}), the "
        f"prompt costs ${cold / 1e6:.4f} on the first call for a parent (both prefixes written "
        f"to the cache) and ${warm / 1e6:.4f} on later calls for the same parent within the "
        f"cache's 5 minutes; the answer (2k-10k output tokens, adaptive thinking included) adds "
        f"${out_lo / 1e6:.3f}-{out_hi / 1e6:.3f}. One proposal: about "
        f"${(warm + out_lo) / 1e6:.2f}-{(cold + out_hi) / 1e6:.2f}; a retry after a failed "
        "edit costs about as much again.",
        "",
        "## The request body (less `system` and `messages`, shown below)",
        "",
        "```json",
        json.dumps(shown, indent=2),
        "```",
        "",
        "`system[0]` and `messages[0].content[0]` carry `cache_control: {type: ephemeral}`: the "
        "brief is shared by every call, the parent's head by every child of that parent.",
        "",
        "## system[0] (the brief, cached)",
        "",
        "`````markdown",
        system,
        "`````",
        "",
        "## messages[0].content[0] (the parent, cached)",
        "",
        "`````markdown",
        head,
        "`````",
        "",
        "## messages[0].content[1] (what changes from call to call)",
        "",
        "`````markdown",
        tail,
        "`````",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "gpu.yaml")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "llm-request-gpu.md")
    args = parser.parse_args()
    body = capture(args.config)
    args.out.write_text(render(body, args.config.resolve()))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
