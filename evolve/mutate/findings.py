"""What the population has found so far, read from the store for one prompt (bounded reads).

- `recent_results`: a compact table of the last experiments to finish, children worse than
  their parent included (negative results are the cheapest knowledge a lab has);
- `in_flight`: what is being tried right now, so parallel proposals do not all try it;
- `pick_inspirations`: other lines' ideas, deduplicated by source, migration copies resolved
  to the experiment they copy, sampled top / diverse / random;
- `run_facts`: the measurement the brief must name (budget, device, noise σ).

Infrastructure failures (the LLM unreachable, a 429) are not experiments and never show.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import random
import sys
from collections.abc import Sequence
from pathlib import Path

from evolve.mutate.base import INFRASTRUCTURE, BriefFacts
from population.candidate import Candidate, Status
from population.store import MIGRATION, Store

RECENT_ROWS = 12
IN_FLIGHT_ROWS = 12


def is_infrastructure(candidate: Candidate) -> bool:
    return candidate.status is Status.REJECTED and candidate.reason.startswith(INFRASTRUCTURE)


def original_of(store: Store, candidate: Candidate) -> Candidate:
    """A migration copy stands for the experiment it copies (whose description and diff say
    what it tried)."""
    seen = 0
    while candidate.mutator == MIGRATION and candidate.parent_id and seen < 64:
        try:
            candidate = store.get(candidate.parent_id)
        except KeyError:
            break
        seen += 1
    return candidate


def _cell(text: str, width: int) -> str:
    text = " ".join(text.replace("|", "/").split())
    return text if len(text) <= width else text[:width - 1] + "…"


def _outcome(child: Candidate, parent_bpb: float | None) -> tuple[str, str]:
    """(Δ vs parent, outcome) for one row."""
    if child.status is Status.DONE and child.val_bpb is not None:
        if parent_bpb is None:
            return "", "kept" if child.metrics.get("kept") else "not kept"
        delta = child.val_bpb - parent_bpb
        verdict = "better" if delta < 0 else "worse than parent"
        kept = "kept" if child.metrics.get("kept") else "discarded"
        return f"{delta:+.4f}", f"{verdict}, {kept}"
    why = child.reason.strip().splitlines()[0] if child.reason.strip() else ""
    return "", _cell(f"{child.status.value}: {why}" if why else child.status.value, 60)


def recent_results(store: Store, rows: int = RECENT_ROWS, scan: int = 4) -> str:
    """The table of the latest finished experiments (reads at most `rows * scan` rows)."""
    lines = []
    parents: dict[str, float | None] = {}
    for child in store.recent_finished(rows * scan):
        if is_infrastructure(child) or child.parent_id is None:
            continue
        if child.parent_id not in parents:
            try:
                parents[child.parent_id] = store.get(child.parent_id).val_bpb
            except KeyError:
                parents[child.parent_id] = None
        delta, outcome = _outcome(child, parents[child.parent_id])
        bpb = f"{child.val_bpb:.4f}" if child.val_bpb is not None else "-"
        lines.append(f"| {child.id} | {child.parent_id} | {bpb} | {delta or '-'} | {outcome} | "
                     f"{_cell(child.description or '(no description)', 90)} |")
        if len(lines) >= rows:
            break
    if not lines:
        return ""
    head = ("| id | parent | val_bpb | Δ vs parent | outcome | what it tried |\n"
            "|---|---|---|---|---|---|")
    return head + "\n" + "\n".join(lines)


def in_flight(store: Store, limit: int = IN_FLIGHT_ROWS) -> list[str]:
    """Descriptions of the children queued or training now (newest last; one light query)."""
    return [f"{_cell(description, 140)} (child of {parent}, "
            f"{'training' if status == Status.RUNNING.value else 'queued'})"
            for _, parent, status, description in store.in_flight(limit)]


def pick_inspirations(store: Store, parent: Candidate, islands: int, rng: random.Random,
                      count: int = 3, pool_per_island: int = 8) -> list[Candidate]:
    """Up to `count` ideas from elsewhere: the best, the best of another island (diverse), and
    one at random from the survivors; never the parent's own source, never two copies of one
    experiment, each resolved to the experiment that made it (its diff is its own idea)."""
    pools: dict[int, list[Candidate]] = {}
    for island in range(islands):
        pools[island] = [c for c in store.survivors(island, pool_per_island)
                         if c.val_bpb is not None]
    ranked = sorted((c for pool in pools.values() for c in pool), key=lambda c: c.val_bpb)
    chosen: list[Candidate] = []
    seen = {parent.source_hash}
    own_line = {parent.id, parent.parent_id}

    def take(candidate: Candidate | None) -> None:
        if candidate is None or len(chosen) >= count:
            return
        original = original_of(store, candidate)
        if (candidate.source_hash in seen or original.id in own_line
                or original.parent_id is None):  # the seed has no idea to show
            return
        seen.add(candidate.source_hash)
        chosen.append(original)

    for c in ranked:  # top
        take(c)
        if chosen:
            break
    others = [i for i in pools if i != parent.island] or list(pools)
    rng.shuffle(others)
    for island in others:  # diverse: another island's best
        before = len(chosen)
        for c in pools[island]:
            take(c)
            if len(chosen) > before:
                break
        if len(chosen) >= 2:
            break
    rest = [c for c in ranked if c.source_hash not in seen]
    rng.shuffle(rest)
    for c in rest:  # random
        take(c)
    return chosen


@functools.lru_cache(maxsize=16)
def _profile_budget(template: Path, profile: str) -> tuple[str, str]:
    """(budget text, device kind) from the template's own profiles.py (the trusted harness)."""
    path = template / "profiles.py"
    if not path.exists():
        return "", ""
    name = f"_evolve_template_profiles_{abs(hash(str(path)))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        return "", ""
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while it loads
    try:
        spec.loader.exec_module(module)
        found = module.get_profile(profile)
    except Exception:  # noqa: BLE001 - an unreadable template leaves the facts out
        return "", ""
    finally:
        sys.modules.pop(name, None)
    if found.budget_kind == "time":
        return f"{found.budget:g} s of training (start-up and compilation not counted)", found.device
    return f"{found.budget / 1e6:g}M training tokens", found.device


def brief_facts(store: Store, template: Path, profile: str, parent: Candidate) -> BriefFacts:
    """The facts of this run the brief names: budget, device, memory, measured noise."""
    budget, kind = _profile_budget(template, profile)
    device = ""
    for attempt in reversed(store.attempts(parent.id)):
        if attempt.device:
            device = attempt.device
            break
    sigma = None
    try:
        floor = json.loads(store.get_meta("noise_floor", "") or "{}")
        sigma = float(floor["sigma"]) if "sigma" in floor else None
    except (ValueError, TypeError):
        sigma = None
    peak = parent.metrics.get("peak_vram_mb")
    memory = float(peak) / 1024 if isinstance(peak, (int, float)) and kind == "cuda" else None
    return BriefFacts(profile=profile, budget=budget, device=device or kind, peak_memory_gb=memory,
                    noise_sigma=sigma)


def shown_lines(items: Sequence[str], limit: int) -> list[str]:
    kept = list(items)[-limit:]
    more = len(items) - len(kept)
    return ([f"({more} older ones not shown)"] if more else []) + [f"- {i}" for i in kept]
