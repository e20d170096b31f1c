"""Mixing mutation operators by weight, optionally adapting to which ones improve children.

The choice for a proposal depends only on its seed and the recorded outcomes, so a run
replays the same choices. Adaptive mode scales each weight by an upper confidence bound
on that operator's rate of improving on its parent (UCB1), so a productive operator is
used more while the others still get tried.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evolve.mutate.base import MutationContext, Mutator, Proposal
from evolve.mutate.cost import PriceTable, SpendLedger
from evolve.mutate.ratelimit import RateLimiter


def label_of(mutator: str, model: str = "") -> str:
    """The name an operator goes by in stats: its kind, plus the model for LLM operators."""
    return f"{mutator}:{model}" if model else mutator


@dataclass
class Operator:
    mutator: Mutator
    weight: float
    label: str = ""

    def __post_init__(self) -> None:
        if self.weight < 0 or not math.isfinite(self.weight):
            raise ValueError(f"operator weight must be finite and >= 0, got {self.weight}")
        if not self.label:
            self.label = label_of(self.mutator.name, getattr(self.mutator, "model", ""))

    @property
    def unavailable(self) -> str:
        """Why this operator cannot be used now ('' when it can)."""
        if getattr(self.mutator, "budget_exhausted", False):
            return f"{self.label}: LLM budget spent"
        if getattr(self.mutator, "is_down", False):
            return f"{self.label}: {getattr(self.mutator, 'down_reason', '') or 'down'}"
        return ""


@dataclass
class Stats:
    trials: int = 0
    improved: int = 0


@dataclass
class OperatorMix:
    """A Mutator that delegates each proposal to one operator, chosen by weight."""

    operators: Sequence[Operator]
    adaptive: bool = False
    exploration: float = 1.0
    fallback: Mutator | None = None  # used when every weighted operator is down or spent
    stats: dict[str, Stats] = field(default_factory=dict)
    name: str = "mix"

    def __post_init__(self) -> None:
        labels = [op.label for op in self.operators]
        if len(set(labels)) != len(labels):
            raise ValueError(f"operator labels must differ, got {labels}")
        if not any(op.weight > 0 for op in self.operators):
            raise ValueError("every operator has weight 0; give at least one a weight > 0")
        for label in labels:
            self.stats.setdefault(label, Stats())

    # ---------------------------------------------------------------- choosing

    def weights(self) -> dict[str, float]:
        """The current selection weights (after adaptation), by label."""
        total = sum(s.trials for s in self.stats.values())
        out = {}
        for op in self.operators:
            if not self.adaptive or op.weight == 0:
                out[op.label] = op.weight
                continue
            s = self.stats[op.label]
            rate = (s.improved + 1) / (s.trials + 2)  # a prior of one success in two
            bonus = self.exploration * math.sqrt(math.log(total + 1) / (s.trials + 1))
            out[op.label] = op.weight * (rate + bonus)
        return out

    def choose(self, seed: int) -> Operator | None:
        """The operator for the proposal with this seed, skipping unavailable ones."""
        weights = self.weights()
        usable = [op for op in self.operators if weights[op.label] > 0 and not op.unavailable]
        if not usable:
            return None
        rng = random.Random(seed)
        return rng.choices(usable, weights=[weights[op.label] for op in usable])[0]

    @property
    def is_down(self) -> bool:
        return self.fallback is None and all(
            op.weight == 0 or op.unavailable for op in self.operators)

    @property
    def down_reason(self) -> str:
        reasons = [op.unavailable for op in self.operators if op.weight > 0 and op.unavailable]
        return "; ".join(reasons)

    async def propose(self, context: MutationContext) -> Proposal:
        chosen = self.choose(context.seed)
        if chosen is not None:
            return await chosen.mutator.propose(context)
        if self.fallback is not None:
            return await self.fallback.propose(context)
        return Proposal(files={}, description="", rationale="", mutator=self.name,
                        error=f"no mutation operator is usable: {self.down_reason}")

    # ---------------------------------------------------------------- learning

    def record(self, label: str, improved: bool) -> None:
        """One finished child of this operator: did it beat its parent?"""
        stats = self.stats.setdefault(label, Stats())
        stats.trials += 1
        stats.improved += int(bool(improved))

    def record_proposal(self, proposal: Proposal, improved: bool) -> None:
        self.record(label_of(proposal.mutator, proposal.model), improved)

    def state(self) -> dict[str, Any]:
        """JSON-ready stats, for `store.set_meta("operator_stats", json.dumps(...))`."""
        return {label: {"trials": s.trials, "improved": s.improved,
                        "weight": self.weights().get(label, 0.0)}
                for label, s in self.stats.items()}

    def load_state(self, state: Mapping[str, Mapping[str, Any]]) -> None:
        """Restore stats saved by `state()` (a resumed run keeps what it learned)."""
        for label, entry in state.items():
            self.stats[label] = Stats(int(entry.get("trials", 0)), int(entry.get("improved", 0)))


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
                                         timeout_s=getattr(op, "timeout_s", 600.0))
        elif op.kind == "crossover":
            base = llms[0] if llms else make_llm(op)
            built[name] = CrossoverMutator(base)
        elif op.kind != "llm":
            raise ValueError(f"unknown operator kind {op.kind!r}")
    return {name: built[name] for name in names}
