"""Seed noise: how much val_bpb moves when only the seed changes, and whether a child's gain
is larger than that.

The root is trained under K seeds at the start of a run (the noise floor, σ). A child that
would become the new best, or that enters the population by a margin under m·σ, is run
again under n other seeds, and so is its incumbent on the same seeds; the decision compares
the paired means over those fresh seeds only (the first run was selected for being lucky, so
it would bias the test) and asks for a gain above z·σ·sqrt(2/n), the spread of a difference
of two n-run means: a change that only moves the seed is not credited as an improvement.
Pure: no store, no clock.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

Trigger = Literal["new best", "narrow margin"]
SEED_STRIDE = 1_000_003


def paired_seeds(run_seed: int, count: int) -> list[int]:
    """The run seed and `count - 1` others: the same list for every candidate of a run, so
    re-runs of a child and of its incumbent are paired seed for seed."""
    return [(run_seed + SEED_STRIDE * i) % 2**31 for i in range(count)]


@dataclass(frozen=True)
class NoiseFloor:
    """The root's val_bpb under several seeds: its mean and sample standard deviation."""

    values: tuple[float, ...]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def sigma(self) -> float:
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0

    def describe(self) -> str:
        return f"σ {self.sigma:.5f} over {len(self.values)} seeds (mean {self.mean:.6f})"


def noise_floor(values: Iterable[float]) -> NoiseFloor:
    """The noise floor of the finite values given (at least one)."""
    finite = tuple(float(v) for v in values if v is not None and math.isfinite(v))
    if not finite:
        raise ValueError("the noise floor needs at least one finished run of the root")
    return NoiseFloor(finite)


def needs_confirmation(child_bpb: float, *, best_bpb: float | None,
                       displaced_bpb: float | None, sigma: float,
                       margin_sigma: float) -> Trigger | None:
    """Why a fresh result must be re-run before it counts, or None.

    `best_bpb` is the run's current best; `displaced_bpb` the survivor the child would push
    out (None when the population has room, or when the child is not kept)."""
    if best_bpb is not None and child_bpb < best_bpb:
        return "new best"
    if displaced_bpb is not None and child_bpb < displaced_bpb \
            and displaced_bpb - child_bpb < margin_sigma * sigma:
        return "narrow margin"
    return None


def missing_seeds(seeds: Iterable[int], have: Mapping[int, float]) -> list[int]:
    """The paired seeds a candidate still needs a run on."""
    return [s for s in seeds if s not in have]


def reseeds_itself(runs: Mapping[int, float], sigma: float) -> bool:
    """Identical scores under different seeds while the root's vary: the candidate ignores the
    harness's seed (it reseeds itself), so its re-runs prove nothing."""
    values = list(runs.values())
    return sigma > 0 and len(values) > 1 and max(values) == min(values)


@dataclass(frozen=True)
class Confirmation:
    """A paired mean-vs-mean decision on a challenger and its evidence."""

    candidate_id: str
    incumbent_id: str
    trigger: str
    seeds: tuple[int, ...]
    candidate_runs: tuple[float, ...]
    incumbent_runs: tuple[float, ...]
    candidate_mean: float
    incumbent_mean: float
    gain: float          # incumbent mean - candidate mean (> 0: the candidate is better)
    threshold: float     # the gain needed: z·σ·sqrt(2/n)
    accepted: bool
    untrusted: bool
    reason: str

    def to_metrics(self) -> dict[str, Any]:
        return {"incumbent": self.incumbent_id, "trigger": self.trigger,
                "seeds": list(self.seeds), "runs": list(self.candidate_runs),
                "incumbent_runs": list(self.incumbent_runs),
                "mean": self.candidate_mean, "incumbent_mean": self.incumbent_mean,
                "gain": self.gain, "threshold": self.threshold, "accepted": self.accepted,
                "untrusted": self.untrusted, "reason": self.reason}


def credit(accepted: bool, candidate_mean: float, incumbent_scores: Iterable[float]) -> float:
    """The val_bpb a confirmed candidate is ranked by: its mean when accepted; never better
    than its incumbent's scores when not (it showed no gain beyond seed noise)."""
    if accepted:
        return candidate_mean
    return max(candidate_mean, *incumbent_scores)


def decide(candidate_id: str, incumbent_id: str, trigger: str,
           candidate_runs: Mapping[int, float], incumbent_runs: Mapping[int, float], *,
           sigma: float, z: float) -> Confirmation:
    """Compare the paired means over the seeds both have run on."""
    seeds = tuple(s for s in candidate_runs if s in incumbent_runs)
    if not seeds:
        raise ValueError(f"{candidate_id} and {incumbent_id} share no seed to compare on")
    mine = tuple(float(candidate_runs[s]) for s in seeds)
    theirs = tuple(float(incumbent_runs[s]) for s in seeds)
    mean, incumbent_mean = statistics.fmean(mine), statistics.fmean(theirs)
    gain = incumbent_mean - mean
    threshold = z * sigma * math.sqrt(2.0 / len(seeds))
    untrusted = reseeds_itself(dict(zip(seeds, mine, strict=True)), sigma)
    if untrusted:
        accepted = False
        reason = (f"untrusted: identical val_bpb {mine[0]:.6f} under {len(seeds)} different "
                  "seeds while the root's varies (train.py reseeds itself)")
    elif gain > threshold:
        accepted = True
        reason = (f"confirmed: mean {mean:.6f} vs {incumbent_mean:.6f} over {len(seeds)} paired "
                  f"seeds, gain {gain:.6f} > {threshold:.6f} ({z:g}σ·√(2/n))")
    else:
        accepted = False
        reason = (f"not confirmed: mean {mean:.6f} vs {incumbent_mean:.6f} over {len(seeds)} "
                  f"paired seeds, gain {gain:.6f} ≤ {threshold:.6f} ({z:g}σ·√(2/n)); "
                  "within seed noise")
    return Confirmation(candidate_id, incumbent_id, trigger, seeds, mine, theirs, mean,
                        incumbent_mean, gain, threshold, accepted, untrusted, reason)
