"""The run's budgets: when each is reached, and how that is said. The scheduler core checks
each at the moment it can change (time on every event, experiments when one finishes, the
target on a new best, dollars when a proposal is paid for); `evolve resume` asks all of them
of a stored run; the LLM mutators' spend ledger reserves calls by the dollar rules. All call
these functions, so the rules cannot drift apart."""

from __future__ import annotations

from dataclasses import dataclass


def hours_reached(elapsed_s: float, max_hours: float | None) -> bool:
    return max_hours is not None and elapsed_s >= max_hours * 3600.0


def experiments_reached(finished: int, max_experiments: int | None) -> bool:
    return max_experiments is not None and finished >= max_experiments


def target_reached(val_bpb: float | None, target_val_bpb: float | None) -> bool:
    return target_val_bpb is not None and val_bpb is not None and val_bpb <= target_val_bpb


def usd_reached(spent_usd: float, max_llm_usd: float | None) -> bool:
    """The LLM budget: no new proposals once it is spent (running experiments go on)."""
    return max_llm_usd is not None and spent_usd >= max_llm_usd


def usd_fits(spent_usd: float, more_usd: float, max_llm_usd: float | None) -> bool:
    """Whether `more_usd` (calls in flight at their worst case, and the next one) can be
    spent without passing the LLM budget (`evolve.mutate.cost.SpendLedger` reserves by it)."""
    return max_llm_usd is None or spent_usd + more_usd <= max_llm_usd


def usd_left(spent_usd: float, max_llm_usd: float | None) -> float | None:
    return None if max_llm_usd is None else max(0.0, max_llm_usd - spent_usd)


# The core's stop reasons, as the run's log and `evolve status` show them.

def hours_reason(max_hours: float) -> str:
    return f"max_hours reached ({max_hours:g} h)"


def experiments_reason(max_experiments: int) -> str:
    return f"max_experiments reached ({max_experiments})"


def target_reason(target_val_bpb: float, val_bpb: float) -> str:
    return f"target val_bpb {target_val_bpb:g} reached ({val_bpb:.6f})"


def usd_reason(spent_usd: float, max_llm_usd: float) -> str:
    return f"LLM budget spent (${spent_usd:.2f} of ${max_llm_usd:g})"


@dataclass(frozen=True)
class Budget:
    """The `budget` section's limits (None: no limit)."""

    max_experiments: int | None = None
    max_hours: float | None = None
    target_val_bpb: float | None = None
    max_llm_usd: float | None = None


def exhausted(budget: Budget, *, finished: int, elapsed_s: float, best_val_bpb: float | None,
              llm_usd: float) -> str | None:
    """The first budget a run that got this far has reached, said with what was used of it
    (`evolve resume` refuses such a run and says how to extend it); None: room left."""
    if experiments_reached(finished, budget.max_experiments):
        return f"max_experiments reached ({finished} of {budget.max_experiments})"
    if hours_reached(elapsed_s, budget.max_hours):
        return f"max_hours reached ({elapsed_s / 3600:.2f} h of {budget.max_hours:g} h)"
    if target_reached(best_val_bpb, budget.target_val_bpb):
        return f"target_val_bpb reached ({best_val_bpb:.6f} <= {budget.target_val_bpb:g})"
    if usd_reached(llm_usd, budget.max_llm_usd):
        return f"max_llm_usd reached (${llm_usd:.2f} of ${budget.max_llm_usd:g})"
    return None
