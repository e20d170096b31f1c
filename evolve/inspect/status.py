"""`evolve status RUN_DIR`: the population per island and the best lineage, live or finished."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from evolve.config import Config, load_config
from evolve.controller.wiring import operator_labels, operator_names
from evolve.inspect.trust import Trust, mark, read_trust, sandbox_summary, unsandboxed_note
from evolve.mutate.operators import mix_weights, tally
from evolve.run.rundir import RunDir
from population.candidate import Candidate, Status
from population.store import Store, edits_from_seed, is_copy


def _bpb(candidate: Candidate) -> str:
    value = candidate.val_bpb
    return "—" if value is None else f"{value:.6f}{unsandboxed_note(candidate, reason=False)}"


def _delta(child: Candidate, parent: Candidate | None) -> str:
    if parent is None or child.val_bpb is None or parent.val_bpb is None:
        return ""
    return f"{child.val_bpb - parent.val_bpb:+.6f}"


def print_phrases(console: Console, phrases: list[str], indent: str = "  ") -> None:
    """Print phrases two spaces apart, breaking lines only between phrases (never inside
    one, as plain wrapping at the terminal's width would: "(waste\npre-flight ...")."""
    line = ""
    for phrase in (p for p in phrases if p):
        joined = f"{line}  {phrase}" if line else phrase
        if line and len(joined) > console.width:
            console.print(line, soft_wrap=True)
            joined = indent + phrase
        line = joined
    if line:
        console.print(line, soft_wrap=True)


def operator_table(config: Config, finished: list[Candidate]) -> Table:
    """Per operator: its children that ran, how many beat their parent, and its share of the
    next proposals (after adaptation, with `mutation.adaptive_weights`). `finished`: the run's
    finished candidates, migration copies included (they are parents too)."""
    mutation = config.mutation
    names = operator_names(config)
    labels = operator_labels(config)
    weights = {name: op.weight for name, op in zip(names, mutation.operators, strict=True)}
    stats = tally(finished)  # every child that ran, triggered ones (repairs, carries) too
    # the weights learn from drawn children only, as the run's core does
    now = mix_weights(weights, tally(finished, drawn_only=True), labels=labels,
                      adaptive=mutation.adaptive_weights, exploration=mutation.exploration)
    total = sum(now.values()) or 1.0
    title = (f"operators: adaptive weights (UCB1, exploration {mutation.exploration:g})"
             if mutation.adaptive_weights else "operators: fixed weights")
    table = Table(title=title, title_justify="left")
    table.add_column("operator", no_wrap=True)
    for column in ("weight", "trials", "improved", "rate", "weight now", "next share"):
        table.add_column(column, justify="right")
    for name in names:
        s = stats.get(labels[name])
        trials, improved = (s.trials, s.improved) if s is not None else (0, 0)
        shown = name if labels[name] == name else f"{name} ({labels[name]})"
        table.add_row(shown, f"{weights[name]:g}", str(trials), str(improved),
                      f"{improved / trials:.0%}" if trials else "—", f"{now[name]:.4g}",
                      f"{now[name] / total:.1%}")
    return table


def worker_notices(store: Store) -> list[str]:
    """Workers the run refused (another device type, a node whose harness or data differ from
    the controller's, or without the sandbox `require` asks for) and nodes where experiments
    could not be network-isolated or jailed."""
    lines = []
    refused = [line for line in (store.get_meta("refused_workers") or "").splitlines() if line]
    if refused:
        lines.append(f"refused workers ({len(refused)}):")
        lines += [f"  {escape(line)}" for line in refused]
    for key in ("network_warnings", "sandbox_warnings"):
        lines += [escape(line) for line in (store.get_meta(key) or "").splitlines() if line]
    return lines


def render_status(run_dir: RunDir, console: Console, islands: int, population_size: int,
                  *, show_test: bool = False) -> None:
    """Print counts, each island's survivors and the best lineage; opens the store read-only.
    `show_test`: the best lineage's held-out test scores too (hidden unless asked: looking at
    them while the search goes on would make them one more validation split)."""
    store = Store.open(run_dir.store_path, readonly=True)
    try:
        counts = {status: store.count(status) for status in Status}
        finished = counts[Status.DONE] + counts[Status.CRASHED] + counts[Status.TIMED_OUT]
        console.print(f"[bold]{run_dir.path}[/bold]")
        print_phrases(console, [
            f"finished {finished}", f"(done {counts[Status.DONE]}, crashed "
            f"{counts[Status.CRASHED]}, timed out {counts[Status.TIMED_OUT]})",
            f"running {counts[Status.RUNNING]}", f"proposed {counts[Status.PROPOSED]}",
            f"rejected {counts[Status.REJECTED]}"])
        spend = store.get_meta("llm_usd_total")
        if spend is not None:
            console.print(f"LLM spend ${float(spend):.2f}")
        waste = store.get_meta("early_failure_share")
        if waste is not None:
            print_phrases(console, [
                f"early failures: {100 * float(waste):.1f}% of worker time",
                "(children that failed in their first seconds:",
                "waste that pre-flight should catch)"])
        state = store.get_meta("status")
        if state is not None:
            reason = store.get_meta("stop_reason")
            console.print(f"run {state}" + (f": {reason}" if reason and state != "running" else ""))
        for line in worker_notices(store):
            console.print(line, highlight=False)
        finished_all = store.finished_in_order(include_copies=True, sources=False)  # big runs
        trust = read_trust(store, [c for c in finished_all if not is_copy(c)])
        for line in trust.lines() + sandbox_summary(finished_all):
            console.print(escape(line), highlight=False)
        console.print(operator_table(load_config(run_dir.config_path), finished_all))
        for island in range(islands):
            table = Table(title=f"island {island}", title_justify="left")
            for column in ("id", "val_bpb", "gen", "mutator", "description"):
                table.add_column(column, no_wrap=column != "description")
            for candidate in store.survivors(island, population_size):
                # gen: edits from the seed (island-seeding and migration copies add none)
                gen = edits_from_seed(store.lineage(candidate.id))
                table.add_row(candidate.id, _bpb(candidate), str(gen),
                              candidate.mutator, candidate.description[:70])
            console.print(table)
        best = store.best()
        if best is None:
            console.print("no finished experiment yet")
            return
        print_lineage(console, store, best, trust, show_test)
    finally:
        store.close()


def print_lineage(console: Console, store: Store, best: Candidate, trust: Trust,
                  show_test: bool) -> None:
    """The best lineage as a table (its held-out test scores only when asked for)."""
    title = f"best lineage → {best.id}  val_bpb {_bpb(best)}"
    table = Table(title=escape(title), title_justify="left")
    columns = ("id", "val_bpb", *(("test_bpb",) if show_test else ()), "Δ", "trust",
               "description")
    for column in columns:
        table.add_column(column)
    parent: Candidate | None = None
    for step in store.lineage(best.id):
        test = trust.test_of(step)
        shown = ("—" if test is None else f"{test:.6f}",) if show_test else ()
        table.add_row(step.id, escape(_bpb(step)), *shown, _delta(step, parent), mark(step),
                      escape(step.description[:80]) or "(seed)")
        parent = step
    console.print(table)
    if best.unsandboxed:
        console.print(escape(f"best score{unsandboxed_note(best)}"), highlight=False)
