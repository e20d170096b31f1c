"""Mutation operators: building them from the config, and the statistics that adapt their mix.

The controller core picks the operator for each proposal by weight (`mix_weights`). In adaptive
mode each configured weight is scaled by an upper confidence bound on that operator's rate of
children that beat their parent (UCB1), so a productive operator is used more while the others
still get tried. The statistics are a function of the store (`tally`), so a resumed run picks up
exactly where it stopped and the choice for each proposal replays under the run's seed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evolve.mutate.base import Mutator
from evolve.mutate.cost import PriceTable, SpendLedger
from evolve.mutate.ratelimit import RateLimiter
from population.candidate import Candidate, Status
from population.store import MIGRATION, RAN


def label_of(mutator: str, model: str = "") -> str:
    """The key an operator's children are credited under: the mutator kind, plus the model for
    LLM operators (so LLM operators on different models are told apart in the store)."""
    return f"{mutator}:{model}" if mutator == "llm" and model else mutator


@dataclass(frozen=True)
class OperatorStats:
    """Finished children of one operator, and how many of them beat their parent."""

    trials: int = 0
    improved: int = 0

    def add(self, improved: bool) -> OperatorStats:
        return OperatorStats(self.trials + 1, self.improved + int(improved))


# ---------------------------------------------------------------- learning


def credit(child: Candidate, parent_val_bpb: float | None) -> tuple[str, bool] | None:
    """(label, beat its parent) for a child that ran to the end (done, crashed, timed out);
    None for anything that is not an operator's experiment (the root, migration copies,
    children still running, rejected). A crash is a trial that did not improve."""
    if child.parent_id is None or child.mutator == MIGRATION or child.status not in RAN:
        return None
    mine = child.val_bpb
    improved = (child.status is Status.DONE and mine is not None and parent_val_bpb is not None
                and mine < parent_val_bpb)
    return label_of(child.mutator, child.model), improved


def tally(candidates: Iterable[Candidate]) -> dict[str, OperatorStats]:
    """The statistics of every label from a run's finished candidates (migration copies
    included: they are parents too) — what the live run learned, rebuilt from the store."""
    finished = list(candidates)
    scores = {c.id: c.val_bpb for c in finished if c.status is Status.DONE}
    stats: dict[str, OperatorStats] = {}
    for child in finished:
        judged = credit(child, scores.get(child.parent_id or ""))
        if judged is not None:
            label, improved = judged
            stats[label] = stats.get(label, OperatorStats()).add(improved)
    return stats


# ---------------------------------------------------------------- choosing


def ucb_score(stats: OperatorStats, total_trials: int, exploration: float) -> float:
    """UCB1 on the rate of improving on the parent: the rate (with a prior of one success in
    two, so an untried operator starts at 1/2) plus an exploration bonus that shrinks as the
    operator is tried and grows slowly with all trials."""
    rate = (stats.improved + 1) / (stats.trials + 2)
    bonus = exploration * math.sqrt(math.log(total_trials + 1) / (stats.trials + 1))
    return rate + bonus


def mix_weights(weights: Mapping[str, float], stats: Mapping[str, OperatorStats], *,
                labels: Mapping[str, str] | None = None, adaptive: bool = False,
                exploration: float = 1.0) -> dict[str, float]:
    """The weight each operator (by name) is chosen by now. Fixed mode: the configured
    weights. Adaptive: each configured weight times the UCB1 score of its label's stats
    (`labels`: operator name -> label; operators sharing a label share its stats). A weight
    of 0 stays 0: that operator is never chosen."""
    if not adaptive:
        return dict(weights)
    labels = labels or {}
    used = {labels.get(name, name) for name, weight in weights.items() if weight > 0}
    total = sum(stats.get(label, OperatorStats()).trials for label in used)
    return {name: weight * ucb_score(stats.get(labels.get(name, name), OperatorStats()), total,
                                     exploration) if weight > 0 else 0.0
            for name, weight in weights.items()}


# ---------------------------------------------------------------- from the config

def build_mutators(operators: Sequence[Any], names: Sequence[str], *,
                   template_dir: str | Path | None = None, ledger: SpendLedger | None = None,
                   max_in_flight: int = 8, proposal_timeout_s: float | None = None,
                   seed: int = 0) -> dict[str, Mutator]:
    """The mutators for `mutation.operators`, keyed by `names` (the controller's operator
    names). LLM operators share the run's spend ledger; each has its own rate limiter
    (calls in flight, tokens per minute); crossover reuses the first LLM operator's client,
    budget and health (or a default LLM mutator when the config has none)."""
    from evolve.mutate.command import CommandMutator
    from evolve.mutate.crossover import CrossoverMutator
    from evolve.mutate.heuristic import HeuristicMutator
    from evolve.mutate.llm import LLMMutator

    built: dict[str, Mutator] = {}
    llms: list[LLMMutator] = []

    def make_llm(op: Any) -> LLMMutator:
        model = getattr(op, "model", "claude-sonnet-5-5")
        prices = PriceTable()
        if getattr(op, "input_usd_per_mtok", None) is not None:
            entry = {"input": op.input_usd_per_mtok,
                     "output": op.output_usd_per_mtok if op.output_usd_per_mtok is not None
                     else prices.lookup(model).output}
            prices = PriceTable.from_config({model: entry})
        temperature = getattr(op, "temperature", None)
        return LLMMutator(
            model=model, base_url=getattr(op, "base_url", None),
            api_key_env=getattr(op, "api_key_env", "ANTHROPIC_API_KEY"),
            # 1.0 is the API's default; sending nothing keeps models without sampling
            # parameters happy
            temperature=None if temperature in (None, 1.0) else temperature,
            max_tokens=getattr(op, "max_tokens", 16000), timeout_s=getattr(op, "timeout_s", 300.0),
            max_apply_retries=getattr(op, "max_apply_retries", 2), prices=prices, ledger=ledger,
            limiter=RateLimiter(max_in_flight, getattr(op, "tokens_per_minute", None)),
            proposal_timeout_s=proposal_timeout_s, seed=seed)

    for op, name in zip(operators, names, strict=True):
        if op.kind == "llm":
            mutator = make_llm(op)
            llms.append(mutator)
            built[name] = mutator
    for op, name in zip(operators, names, strict=True):
        if op.kind == "heuristic":
            built[name] = HeuristicMutator(max_tries=getattr(op, "max_tries", 32))
        elif op.kind == "command":
            built[name] = CommandMutator(list(op.argv), template_dir=template_dir,
                                         timeout_s=getattr(op, "timeout_s", 600.0),
                                         secrets=getattr(op, "secrets", ()),
                                         readonly=getattr(op, "readonly", ()),
                                         sandbox=getattr(op, "sandbox", "warn"))
        elif op.kind == "crossover":
            base = llms[0] if llms else make_llm(op)
            built[name] = CrossoverMutator(base)
        elif op.kind != "llm":
            raise ValueError(f"unknown operator kind {op.kind!r}")
    return {name: built[name] for name in names}
