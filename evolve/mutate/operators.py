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
from typing import Any

from evolve.mutate.base import MutationContext, Mutator, Proposal


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
